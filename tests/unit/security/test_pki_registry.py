"""The registry of issued certificates and the revocation list a running backend re-reads."""

import json
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from workfleet.security import cert_registry
from workfleet.security.cert_registry import (
    ClientRoles,
    RegistryError,
    RevocationList,
    read_issued,
    read_revoked,
    revoke,
)
from workfleet.security.identity import Identity
from workfleet.security.pki import CertificateAuthority, init_ca, issue_certificate

AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path)


def test_every_issued_certificate_is_one_json_line_with_a_decimal_serial(
    ca: CertificateAuthority,
) -> None:
    issued = [
        issue_certificate(ca, Identity("backend")).record,
        issue_certificate(ca, Identity("client", "alice"), role="operator").record,
    ]
    lines = ca.layout.registry.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[1])
    assert first["serial"] == str(issued[1].serial)
    assert first["identity"] == "spiffe://workfleet.local/client/alice"
    assert (first["kind"], first["name"], first["role"]) == ("client", "alice", "operator")
    assert set(first) == {
        "serial",
        "identity",
        "kind",
        "name",
        "role",
        "not_before",
        "not_after",
        "spki_sha256",
    }
    assert read_issued(ca.layout.registry) == issued
    assert oct(ca.layout.registry.stat().st_mode & 0o777) == "0o600"


def test_revoking_writes_the_documented_shape_once(ca: CertificateAuthority) -> None:
    record = issue_certificate(ca, Identity("worker", "w1")).record
    assert revoke(ca.layout.revoked, [record], at=AT) == [record]
    assert revoke(ca.layout.revoked, [record], at=AT) == []  # already on the list
    assert json.loads(ca.layout.revoked.read_text()) == {
        "serials": {
            str(record.serial): {
                "identity": "spiffe://workfleet.local/worker/w1",
                "revoked_at": AT.isoformat(),
            }
        }
    }


def test_revoking_every_certificate_of_an_identity(ca: CertificateAuthority) -> None:
    old, new = (issue_certificate(ca, Identity("worker", "w1")).record for _ in range(2))
    other = issue_certificate(ca, Identity("worker", "w2")).record
    of_w1 = [c for c in read_issued(ca.layout.registry) if c.identity == old.identity]
    revoke(ca.layout.revoked, of_w1, at=AT)
    assert set(read_revoked(ca.layout.revoked)) == {str(old.serial), str(new.serial)}
    assert not RevocationList(ca.layout.revoked).is_revoked(other.serial)


def test_a_running_reader_sees_a_revocation_without_a_new_object(
    ca: CertificateAuthority,
) -> None:
    first, second = (issue_certificate(ca, Identity("worker", f"w{i}")).record for i in (1, 2))
    deny = RevocationList(ca.layout.revoked)
    assert not deny.is_revoked(first.serial)  # no file yet: nothing revoked
    revoke(ca.layout.revoked, [first], at=AT)
    assert deny.is_revoked(first.serial)
    assert not deny.is_revoked(second.serial)
    revoke(ca.layout.revoked, [second], at=AT)
    assert deny.is_revoked(second.serial)


def test_the_file_is_parsed_only_when_it_changed(
    ca: CertificateAuthority, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = issue_certificate(ca, Identity("worker", "w1")).record
    revoke(ca.layout.revoked, [record], at=AT)
    parses = []
    real = cert_registry._revoked_serials

    def counting(data: bytes) -> frozenset[int]:
        parses.append(1)
        return real(data)

    monkeypatch.setattr(cert_registry, "_revoked_serials", counting)
    deny = RevocationList(ca.layout.revoked)
    for _ in range(5):
        assert deny.is_revoked(record.serial)
    assert len(parses) == 1
    revoke(ca.layout.revoked, [issue_certificate(ca, Identity("monitoring")).record], at=AT)
    deny.is_revoked(record.serial)
    assert len(parses) == 2


def test_a_corrupt_revocation_list_fails_closed(ca: CertificateAuthority) -> None:
    deny = RevocationList(ca.layout.revoked)
    ca.layout.revoked.write_text("{not json")
    for _ in range(2):  # every call, not only the first
        with pytest.raises(RegistryError, match="corrupt"):
            deny.is_revoked(1)
    ca.layout.revoked.write_text(json.dumps({"serials": {"12x": {}}}))
    with pytest.raises(RegistryError, match="corrupt"):
        deny.is_revoked(1)


def test_concurrent_revocations_all_survive(ca: CertificateAuthority) -> None:
    records = [issue_certificate(ca, Identity("worker", f"w{i}")).record for i in range(8)]
    start = threading.Barrier(len(records))

    def revoke_one(index: int) -> None:
        start.wait()
        revoke(ca.layout.revoked, [records[index]], at=AT)

    threads = [threading.Thread(target=revoke_one, args=(i,)) for i in range(len(records))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(read_revoked(ca.layout.revoked)) == {str(r.serial) for r in records}


def test_client_roles_are_looked_up_by_serial_and_follow_new_issues(
    ca: CertificateAuthority,
) -> None:
    roles = ClientRoles(ca.layout.registry)
    assert roles.role_of(123) is None  # no registry yet
    alice = issue_certificate(ca, Identity("client", "alice"), role="admin").record
    worker = issue_certificate(ca, Identity("worker", "w1")).record
    assert roles.role_of(alice.serial) == "admin"
    assert roles.role_of(worker.serial) is None
    bob = issue_certificate(ca, Identity("client", "bob")).record
    assert roles.role_of(bob.serial) == "viewer"


def test_registry_lines_survive_concurrent_appends(ca: CertificateAuthority) -> None:
    """The CLI and an enrolling backend may append at once; O_APPEND keeps lines whole."""
    start = threading.Barrier(4)

    def issue_some(index: int) -> None:
        start.wait()
        for n in range(5):
            issue_certificate(ca, Identity("worker", f"w{index}-{n}"))

    threads = [threading.Thread(target=issue_some, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(read_issued(ca.layout.registry)) == 20
