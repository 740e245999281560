"""CFG-01: a process refuses to start in mtls mode with a certificate that carries no identity."""

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from workfleet.security.identity import Identity
from workfleet.security.pki import PkiLayout, init_ca, issue_certificate, write_credentials
from workfleet.security.tls import check_files
from workfleet.settings import ConfigurationError, TlsPaths


def test_a_certificate_without_a_san_is_refused_at_start(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    good = issue_certificate(ca, Identity("backend"), dns=["localhost"])
    cert, key, bundle = write_credentials(
        PkiLayout.of(tmp_path).issued_dir, Identity("backend"), good, ca.bundle_pem()
    )
    check_files(TlsPaths(cert, key, bundle))  # ours passes
    cn_only = _cn_only_certificate(ca.key, ca.cert)
    cert.write_bytes(cn_only.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigurationError, match="no subjectAltName, so no identity"):
        check_files(TlsPaths(cert, key, bundle))


def _cn_only_certificate(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(ca_key, hashes.SHA256())
    )
