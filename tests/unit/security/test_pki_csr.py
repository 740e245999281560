"""Signing a worker's CSR: only its key is used; subject and requested names are ignored."""

import ipaddress
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store

from workfleet.security.cert_registry import read_issued
from workfleet.security.identity import (
    DEFAULT_TRUST_DOMAIN,
    Identity,
    IdentityError,
    parse_identity,
)
from workfleet.security.pki import (
    CertificateAuthority,
    CsrRefused,
    csr_public_key,
    init_ca,
    make_key_and_csr,
    sign_worker_csr,
)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path)


def csr_for(key: PrivateKey, *extensions: x509.ExtensionType, cn: str = "worker-w1") -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def test_an_enrolled_worker_gets_a_short_lived_certificate_for_its_own_key(
    ca: CertificateAuthority,
) -> None:
    key_pem, csr_pem = make_key_and_csr("w1")
    cert = x509.load_pem_x509_certificate(sign_worker_csr(ca, csr_pem, "w1"))
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert cert.public_key() == key.public_key()
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == timedelta(hours=24)
    assert parse_identity(cert, DEFAULT_TRUST_DOMAIN).identity == Identity("worker", "w1")
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    store = Store(x509.load_pem_x509_certificates(ca.bundle_pem()))
    PolicyBuilder().store(store).build_client_verifier().verify(cert, [])
    [record] = read_issued(ca.layout.registry)
    assert (record.serial, record.kind, record.name) == (cert.serial_number, "worker", "w1")


def test_the_csr_subject_and_requested_names_and_extensions_are_ignored(
    ca: CertificateAuthority,
) -> None:
    greedy = csr_for(
        ec.generate_private_key(ec.SECP256R1()),
        x509.SubjectAlternativeName(
            [
                x509.UniformResourceIdentifier(f"spiffe://{DEFAULT_TRUST_DOMAIN}/backend"),
                x509.DNSName("evil.example"),
                x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
            ]
        ),
        x509.BasicConstraints(ca=True, path_length=None),
        cn="backend",
    )
    cert = x509.load_pem_x509_certificate(
        sign_worker_csr(ca, greedy, "w1", timedelta(hours=1), dns=["w1.test"], ips=["::1"])
    )
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(san) == [
        x509.UniformResourceIdentifier(f"spiffe://{DEFAULT_TRUST_DOMAIN}/worker/w1"),
        x509.DNSName("w1.test"),
        x509.DNSName(f"w1.workers.{DEFAULT_TRUST_DOMAIN}"),  # set by the CA, never asked for
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "worker-w1"


def test_a_csr_whose_signature_does_not_match_its_key_is_refused(
    ca: CertificateAuthority,
) -> None:
    der = bytearray(
        x509.load_pem_x509_csr(make_key_and_csr("w1")[1]).public_bytes(serialization.Encoding.DER)
    )
    der[-1] ^= 0x01  # the last byte belongs to the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrRefused, match="signature"):
        sign_worker_csr(ca, tampered, "w1")
    assert not ca.layout.registry.exists()


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (rsa.generate_private_key(public_exponent=65537, key_size=1024), "RSA-1024"),
        (ec.generate_private_key(ec.SECP521R1()), "secp521r1"),
        (ed25519.Ed25519PrivateKey.generate(), "Ed25519"),
    ],
    ids=["rsa-1024", "p-521", "ed25519"],
)
def test_weak_or_unexpected_keys_are_refused(
    ca: CertificateAuthority, key: PrivateKey, message: str
) -> None:
    with pytest.raises(CsrRefused, match=message):
        sign_worker_csr(ca, csr_for(key), "w1")


@pytest.mark.parametrize(
    "key",
    [
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP384R1()),
    ],
    ids=["rsa-2048", "p-384"],
)
def test_rsa_2048_and_p384_keys_are_accepted(ca: CertificateAuthority, key: PrivateKey) -> None:
    cert = x509.load_pem_x509_certificate(sign_worker_csr(ca, csr_for(key), "w1"))
    assert cert.public_key() == key.public_key()


def test_garbage_is_refused_before_any_token_is_spent(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRefused, match="not a PEM certificate signing request"):
        csr_public_key(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n")
    assert isinstance(csr_public_key(make_key_and_csr("w1")[1]), ec.EllipticCurvePublicKey)


def test_the_worker_id_must_be_a_safe_id(ca: CertificateAuthority) -> None:
    with pytest.raises(IdentityError):
        sign_worker_csr(ca, make_key_and_csr("w1")[1], "w1/../backend")
    with pytest.raises(IdentityError):
        make_key_and_csr("")
