"""When a worker renews (REV-08) and when it says it is unhealthy (REV-10), by an injected
clock and jitter."""

import ssl
from datetime import timedelta
from pathlib import Path

import httpx

from workfleet.security.identity import Identity
from workfleet.security.pki import PkiLayout, init_ca, issue_certificate, write_credentials
from workfleet.settings import WorkerSettings
from workfleet.worker.certificates import CertificateRenewer


def renewer_at(tmp_path: Path, fraction: float) -> CertificateRenewer:
    ca = init_ca(tmp_path)
    identity = Identity("worker", "w1")
    issued = issue_certificate(ca, identity, lifetime=timedelta(hours=10))
    write_credentials(PkiLayout.of(tmp_path).issued_dir, identity, issued, ca.bundle_pem())
    settings = WorkerSettings(data_dir=tmp_path, worker_id="w1", auth_mode="mtls")
    certificate = issued.record
    start = certificate.not_before
    lifetime = certificate.not_after - certificate.not_before
    return CertificateRenewer(
        settings,
        httpx.AsyncClient(),
        ssl.create_default_context(),
        clock=lambda: start + lifetime * fraction,
        jitter=lambda low, high: low,  # the earliest point of the window
    )


def test_renewal_is_planned_in_the_jittered_window(tmp_path: Path) -> None:
    renewer = renewer_at(tmp_path, 0.1)
    from cryptography import x509

    current = x509.load_pem_x509_certificate((tmp_path / "pki/issued/worker-w1.crt").read_bytes())
    lifetime = current.not_valid_after_utc - current.not_valid_before_utc
    assert renewer.renew_at(current) == current.not_valid_before_utc + lifetime * 0.5


def test_a_worker_that_cannot_renew_says_so_before_its_certificate_expires(
    tmp_path: Path,
) -> None:
    assert renewer_at(tmp_path / "early", 0.5).problem() is None
    late = renewer_at(tmp_path / "late", 0.95)
    late.last_error = "renewal refused (HTTP 401): missing or invalid credential"
    problem = late.problem()
    assert problem is not None and "renewal failed" in problem and "HTTP 401" in problem
