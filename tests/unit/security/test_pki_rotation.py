"""CA rotation with overlap: both CAs are trusted until `--finish`, new leaves use the new one."""

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from workfleet.security.identity import Identity
from workfleet.security.pki import (
    PkiError,
    finish_ca_rotation,
    init_ca,
    issue_certificate,
    load_ca,
    rotate_ca,
)


def verify_against_bundle(data_dir: Path, cert_pem: bytes) -> None:
    bundle = load_ca(data_dir).bundle_pem()
    verifier = (
        PolicyBuilder()
        .store(Store(x509.load_pem_x509_certificates(bundle)))
        .build_client_verifier()
    )
    verifier.verify(x509.load_pem_x509_certificate(cert_pem), [])


def test_rotation_trusts_old_and_new_until_finished(tmp_path: Path) -> None:
    old_ca = init_ca(tmp_path)
    from_old = issue_certificate(old_ca, Identity("worker", "w1")).cert_pem

    new_ca = rotate_ca(tmp_path)
    assert load_ca(tmp_path).cert == new_ca.cert != old_ca.cert
    assert len(x509.load_pem_x509_certificates(new_ca.bundle_pem())) == 2
    assert (
        x509.load_pem_x509_certificate(new_ca.layout.previous_ca_cert.read_bytes()) == old_ca.cert
    )
    from_new = issue_certificate(load_ca(tmp_path), Identity("worker", "w1")).cert_pem
    assert x509.load_pem_x509_certificate(from_new).issuer == new_ca.cert.subject
    verify_against_bundle(tmp_path, from_old)
    verify_against_bundle(tmp_path, from_new)

    finish_ca_rotation(tmp_path)
    assert len(x509.load_pem_x509_certificates(load_ca(tmp_path).bundle_pem())) == 1
    assert not new_ca.layout.previous_ca_key.exists()
    assert not new_ca.layout.previous_ca_cert.exists()
    verify_against_bundle(tmp_path, from_new)
    with pytest.raises(VerificationError):
        verify_against_bundle(tmp_path, from_old)


def test_one_rotation_at_a_time_and_nothing_to_finish_without_one(tmp_path: Path) -> None:
    init_ca(tmp_path)
    with pytest.raises(PkiError, match="no CA rotation in progress"):
        finish_ca_rotation(tmp_path)
    rotate_ca(tmp_path)
    with pytest.raises(PkiError, match="already in progress"):
        rotate_ca(tmp_path)
    finish_ca_rotation(tmp_path)
    rotate_ca(tmp_path)  # a later rotation starts afresh


def test_rotation_needs_a_ca(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="certs init"):
        rotate_ca(tmp_path)
