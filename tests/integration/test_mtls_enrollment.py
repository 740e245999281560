"""Enrollment and renewal over real TLS: a worker with only a bootstrap token and the CA file
gets its own short-lived certificate, and renews it with itself before it expires.
Checklist lines: REG-11, REG-12, REG-13 (over the API), REV-08."""

from pathlib import Path

import httpx
import pytest
from cryptography import x509

from workfleet.harness.cluster import Cluster, wait_for
from workfleet.security.identity import Identity
from workfleet.security.pki import make_key_and_csr
from workfleet.security.tls import client_context


def enrollment(worker_id: str, token: str, csr: bytes, **names: list[str]) -> dict[str, object]:
    return {"worker_id": worker_id, "bootstrap_token": token, "csr_pem": csr.decode(), **names}


@pytest.fixture
async def fleet(tmp_path: Path):  # type: ignore[no-untyped-def]
    cluster = Cluster(
        tmp_path / "cluster",
        auth_mode="mtls",
        backend_env={"WORKFLEET_WORKER_CERT_LIFETIME_S": "12"},
    )
    try:
        await cluster.start_backend()
        yield cluster
    finally:
        await cluster.stop()


async def test_a_worker_enrolls_with_a_bootstrap_token_and_renews_its_certificate(
    fleet: Cluster,
) -> None:
    token = fleet.bootstrap_token("w1")
    process = await fleet.start_worker(
        "w1", issue_certificate=False, env={"WORKFLEET_BOOTSTRAP_TOKEN": token}
    )
    await fleet.wait_workers("w1")
    cert_path = fleet.data_dir / "pki/issued/worker-w1.crt"
    key_path = fleet.data_dir / "pki/issued/worker-w1.key"
    first = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert oct(key_path.stat().st_mode & 0o777) == "0o600"
    lifetime = first.not_valid_after_utc - first.not_valid_before_utc
    assert lifetime.total_seconds() == 12  # short-lived, as the backend decides

    async def renewed() -> x509.Certificate | None:
        current = x509.load_pem_x509_certificate(cert_path.read_bytes())
        return current if current.serial_number != first.serial_number else None

    second = await wait_for(renewed, timeout_s=20, what="the worker to renew its certificate")
    assert second.public_key() == first.public_key()  # renewal keeps the key
    async with fleet.client() as client:  # still trusted, still working, past the first expiry
        await wait_for(
            lambda: _expired(first), timeout_s=20, what="the first certificate to expire"
        )
        op = await client.submit("diagnostic", {"action": "noop"})
        done = await client.wait(op.operation_id, timeout_s=30)
    assert done.status == "completed" and done.worker_id == "w1"
    assert "certificate_renewed" in process.log()


async def _expired(certificate: x509.Certificate) -> bool:
    from datetime import UTC, datetime

    return datetime.now(UTC) > certificate.not_valid_after_utc


async def test_bootstrap_tokens_are_single_use_bound_and_spent_only_by_a_good_csr(
    fleet: Cluster,
) -> None:
    token = fleet.bootstrap_token("w1")
    _, csr = make_key_and_csr("w1")
    async with httpx.AsyncClient(
        base_url=fleet.url, verify=client_context(fleet.ca_file), trust_env=False
    ) as http:
        garbage = await http.post("/api/v1/enroll", json=enrollment("w1", token, b"not a csr"))
        wrong_worker = await http.post(
            "/api/v1/enroll", json=enrollment("w2", fleet.bootstrap_token("w1"), csr)
        )
        first = await http.post(
            "/api/v1/enroll",
            json=enrollment("w1", token, csr, dns=["evil.example"], ips=["127.0.0.1"]),
        )
        replay = await http.post("/api/v1/enroll", json=enrollment("w1", token, csr))
        forged = await http.post("/api/v1/enroll", json=enrollment("w1", "wfb_x.y", csr))
    assert garbage.status_code == 422  # and the token is still good:
    assert first.status_code == 200, first.text
    assert wrong_worker.status_code == 403
    assert replay.status_code == forged.status_code == 401
    assert replay.json() == forged.json()  # one answer for every refused token
    issued = x509.load_pem_x509_certificate(first.json()["certificate_pem"].encode())
    uris = issued.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.UniformResourceIdentifier)
    assert uris == ["spiffe://workfleet.local/worker/w1"]  # the CSR's subject is ignored


async def test_renewal_needs_the_workers_own_valid_certificate(fleet: Cluster) -> None:
    w1 = fleet.issue(Identity("worker", "w1"))
    w2 = fleet.issue(Identity("worker", "w2"))
    _, csr = make_key_and_csr("w1")
    body = {"csr_pem": csr.decode()}
    async with httpx.AsyncClient(
        base_url=fleet.url, verify=client_context(fleet.ca_file, w2), trust_env=False
    ) as http:
        as_other = await http.post("/api/v1/workers/w1/certificate", json=body)
    async with httpx.AsyncClient(
        base_url=fleet.url, verify=client_context(fleet.ca_file), trust_env=False
    ) as http:
        anonymous = await http.post("/api/v1/workers/w1/certificate", json=body)
    async with httpx.AsyncClient(
        base_url=fleet.url, verify=client_context(fleet.ca_file, w1), trust_env=False
    ) as http:
        own = await http.post("/api/v1/workers/w1/certificate", json=body)
    assert as_other.status_code == 403 and anonymous.status_code == 401
    assert own.status_code == 200
