"""`issue_locally`: the CA is made once, then every certificate comes from it."""

from pathlib import Path

from cryptography import x509

from workfleet.security.identity import Identity
from workfleet.security.pki import issue_locally


def test_the_first_call_makes_the_ca_and_later_ones_reuse_it(tmp_path: Path) -> None:
    backend = issue_locally(tmp_path, Identity("backend"), dns=["localhost"])
    worker = issue_locally(tmp_path, Identity("worker", "w1"))
    assert [path.name for path in backend] == ["backend.crt", "backend.key", "ca.crt"]
    assert backend[2] == worker[2] and oct(worker[1].stat().st_mode & 0o777) == "0o600"
    ca = x509.load_pem_x509_certificate(worker[2].read_bytes())
    for cert, _, _ in (backend, worker):
        assert x509.load_pem_x509_certificate(cert.read_bytes()).issuer == ca.subject
