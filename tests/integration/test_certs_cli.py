"""`workfleet certs ...` as an operator runs it: real processes, real files, real output."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509

from workfleet.security.bootstrap import consume_bootstrap_token
from workfleet.security.cert_registry import RevocationList, read_issued

ISSUED = {
    "backend": ("backend", "--dns", "backend.test", "--ip", "127.0.0.1"),
    "worker-w1": ("worker", "w1", "--dns", "w1.test"),
    "client-alice": ("client", "alice", "--role", "operator", "--hours", "2"),
    "monitoring": ("monitoring",),
}


def certs(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "workfleet", "certs", *args],
        # the data dir from the environment, as the settings table promises; COLUMNS keeps
        # rich from wrapping what the assertions read
        env={**base, "WORKFLEET_DATA_DIR": str(data_dir), "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, done.stderr
    return done.stdout


def initialised(data: Path) -> Path:
    assert "trust domain test.local" in ok(certs(data, "init", "--trust-domain", "test.local"))
    return data


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return initialised(tmp_path / "data")


@pytest.fixture(scope="module")
def unchanged_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One CA for the refusals: none of them may change it (and each process costs a second)."""
    return initialised(tmp_path_factory.mktemp("refusals"))


def test_issue_list_and_revoke_each_kind(data_dir: Path, tmp_path: Path) -> None:
    for name, args in ISSUED.items():
        assert f"{name}.key" in ok(certs(data_dir, "issue", *args))
    issued = data_dir / "pki" / "issued"
    assert sorted(p.name for p in issued.iterdir()) == sorted(
        [f"{name}.{ext}" for name in ISSUED for ext in ("crt", "key")] + ["ca.crt"]
    )
    assert all((issued / f"{name}.key").stat().st_mode & 0o777 == 0o600 for name in ISSUED)
    elsewhere = ok(certs(data_dir, "issue", "worker", "w2", "--out", str(tmp_path / "w2")))
    assert (tmp_path / "w2" / "worker-w2.crt").is_file() and "worker-w2.crt" in elsewhere

    records = {r.identity: r for r in read_issued(data_dir / "pki" / "issued.jsonl")}
    alice = records["spiffe://test.local/client/alice"]
    assert alice.role == "operator"
    listing = ok(certs(data_dir, "list"))
    for record in records.values():
        assert f"{record.serial:x}" in listing and record.identity in listing
    assert "yes" not in listing

    deny = RevocationList(data_dir / "pki" / "revoked.json")
    assert f"revoked {alice.serial:x}" in ok(certs(data_dir, "revoke", f"{alice.serial:x}"))
    assert deny.is_revoked(alice.serial)
    assert "already revoked" in ok(certs(data_dir, "revoke", f"0x{alice.serial:X}"))
    worker = records["spiffe://test.local/worker/w1"]
    ok(certs(data_dir, "revoke", "--identity", "worker-w1"))
    backend = records["spiffe://test.local/backend"]
    ok(certs(data_dir, "revoke", "--identity", "spiffe://test.local/backend"))
    assert deny.is_revoked(worker.serial) and deny.is_revoked(backend.serial)
    assert ok(certs(data_dir, "list")).count("yes") == 3


def test_issued_files_hold_the_identity_and_the_bundle(data_dir: Path) -> None:
    ok(certs(data_dir, "issue", "worker", "w1", "--days", "3"))
    issued = data_dir / "pki" / "issued"
    cert = x509.load_pem_x509_certificate((issued / "worker-w1.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        "spiffe://test.local/worker/w1"
    ]
    assert (issued / "ca.crt").read_bytes() == (data_dir / "pki" / "ca-bundle.crt").read_bytes()


def test_bootstrap_token_prints_only_the_token(data_dir: Path) -> None:
    done = certs(data_dir, "bootstrap-token", "--worker-id", "w9", "--ttl", "30m")
    token = ok(done)
    assert token.count("\n") == 1 and token.startswith("wfb_")
    assert consume_bootstrap_token(data_dir / "pki", token.strip()) == "w9"


def test_rotate_ca_and_finish(data_dir: Path) -> None:
    bundle = data_dir / "pki" / "ca-bundle.crt"
    assert "--finish" in ok(certs(data_dir, "rotate-ca"))
    assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 2
    ok(certs(data_dir, "rotate-ca", "--finish"))
    assert len(x509.load_pem_x509_certificates(bundle.read_bytes())) == 1
    assert "1." in ok(certs(data_dir, "rotate-ca", "--help"))  # the steps are documented


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (("init",), 1, "already exists"),
        (("issue", "client", "bob", "--dns", "bob.test"), 2, "no DNS or IP"),
        (("issue", "worker", "w1", "--role", "admin"), 2, "client certificates only"),
        (("issue", "worker", "../w1"), 2, "worker id"),
        (("issue", "worker"), 2, "worker id"),
        (("issue", "backend", "extra"), 2, "takes no name"),
        (("issue", "backend", "--ip", "300.1.1.1"), 2, "not an IP address"),
        (("issue", "worker", "w1", "--days", "1", "--hours", "1"), 2, "not both"),
        (("revoke",), 2, "SERIAL or --identity"),
        (("revoke", "xyz"), 2, "not hexadecimal"),
        (("revoke", "abc"), 1, "no issued certificate"),
        (("revoke", "--identity", "spiffe://elsewhere/backend"), 2, "outside trust domain"),
        (("bootstrap-token", "--worker-id", "w1", "--ttl", "2d"), 2, "at most 1 day"),
        (("bootstrap-token", "--worker-id", "w1", "--ttl", "soon"), 2, "must look like"),
        (("rotate-ca", "--finish"), 1, "no CA rotation in progress"),
    ],
)
def test_errors_are_one_line_without_a_traceback(
    unchanged_data_dir: Path, args: tuple[str, ...], code: int, expected: str
) -> None:
    done = certs(unchanged_data_dir, *args)
    assert done.returncode == code, done.stderr
    assert done.stderr.startswith("error:") and done.stderr.count("\n") == 1, done.stderr
    assert expected in done.stderr and not done.stdout


def test_without_a_ca_every_command_says_how_to_make_one(tmp_path: Path) -> None:
    for args in (("issue", "backend"), ("list",), ("revoke", "ab"), ("rotate-ca",)):
        done = certs(tmp_path, *args)
        assert done.returncode == 1 and "workfleet certs init" in done.stderr, args
