"""Identity comes from exactly one spiffe:// URI SAN in our trust domain; the CN is never read."""

from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from workfleet.security.identity import (
    Identity,
    IdentityError,
    check_trust_domain,
    parse_identity,
    parse_identity_der,
    spki_sha256,
)

TD = "workfleet.local"


def certificate(*names: x509.GeneralName, cn: str = "whoever") -> x509.Certificate:
    """Self-signed: parsing reads the SAN of a certificate the TLS layer already verified."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(hours=1))
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=False)
    return builder.sign(key, hashes.SHA256())


def uri(value: str) -> x509.UniformResourceIdentifier:
    return x509.UniformResourceIdentifier(value)


@pytest.mark.parametrize(
    ("identity", "path", "stem"),
    [
        (Identity("backend"), "backend", "backend"),
        (Identity("worker", "w-1.a_b"), "worker/w-1.a_b", "worker-w-1.a_b"),
        (Identity("client", "alice"), "client/alice", "client-alice"),
        (Identity("monitoring"), "monitoring", "monitoring"),
    ],
)
def test_each_identity_has_a_uri_and_a_file_stem_that_round_trip(
    identity: Identity, path: str, stem: str
) -> None:
    assert identity.uri(TD) == f"spiffe://{TD}/{path}"
    assert identity.file_stem == stem
    assert Identity.from_uri(identity.uri(TD), TD) == identity
    assert Identity.from_file_stem(stem) == identity


@pytest.mark.parametrize(
    ("kind", "name"),
    [
        ("backend", "x"),  # the singletons take no name
        ("monitoring", "x"),
        ("worker", None),
        ("worker", ""),
        ("worker", "../etc"),
        ("worker", "a/b"),
        ("worker", "-leading-dash"),
        ("worker", "w1\n"),  # `$` would have let a trailing newline through
        ("client", "a" * 65),
        ("client", "al ice"),
        ("admin", None),
    ],
)
def test_unsafe_or_misplaced_names_are_refused(kind: str, name: str | None) -> None:
    with pytest.raises(IdentityError):
        Identity(kind, name)  # type: ignore[arg-type]


def test_the_identity_comes_from_the_san_uri_and_the_cn_is_never_read() -> None:
    cert = certificate(uri(f"spiffe://{TD}/worker/w1"), cn="worker-w2")
    peer = parse_identity(cert, TD)
    assert peer.identity == Identity("worker", "w1")
    assert peer.serial == cert.serial_number
    assert peer.spki_sha256 == spki_sha256(cert) and len(peer.spki_sha256) == 64
    assert peer.not_after == cert.not_valid_after_utc
    assert parse_identity_der(cert.public_bytes(Encoding.DER), TD) == peer


def test_dns_and_ip_names_beside_the_uri_do_not_matter() -> None:
    cert = certificate(
        x509.DNSName("backend.example"), uri(f"spiffe://{TD}/backend"), x509.DNSName("other")
    )
    assert parse_identity(cert, TD).identity == Identity("backend")


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ((), "no subjectAltName"),
        ((x509.DNSName("worker-w1"),), "exactly one URI SAN, it has 0"),
        (
            (uri(f"spiffe://{TD}/worker/w1"), uri(f"spiffe://{TD}/worker/w2")),
            "exactly one URI SAN, it has 2",
        ),
        ((uri("spiffe://evil.example/backend"),), "outside trust domain"),
        ((uri(f"spiffe://{TD}.evil/backend"),), "outside trust domain"),
        ((uri(f"https://{TD}/backend"),), "not a spiffe:// URI"),
        ((uri(f"spiffe://{TD}/admin"),), "unknown path"),
        ((uri(f"spiffe://{TD}/worker"),), "unknown path"),
        ((uri(f"spiffe://{TD}/worker/a/b"),), "unknown path"),
        ((uri(f"spiffe://{TD}/backend/x"),), "unknown path"),
        ((uri(f"spiffe://{TD}/worker/.."),), "worker id"),
        ((uri(f"spiffe://{TD}/worker/a%2Fb"),), "worker id"),
        ((uri(f"spiffe://{TD}/client/"),), "client id"),
    ],
)
def test_certificates_without_exactly_one_valid_identity_are_refused(
    names: tuple[x509.GeneralName, ...], message: str
) -> None:
    with pytest.raises(IdentityError, match=message):
        parse_identity(certificate(*names, cn="backend"), TD)


def test_garbage_der_is_an_identity_error() -> None:
    with pytest.raises(IdentityError, match="not valid DER"):
        parse_identity_der(b"\x30\x03junk", TD)


@pytest.mark.parametrize("stem", ["", "worker", "worker-", "admin", "backend-x", "client-a/b"])
def test_names_that_are_no_identity_are_refused(stem: str) -> None:
    with pytest.raises(IdentityError):
        Identity.from_file_stem(stem)


@pytest.mark.parametrize("domain", ["", "Upper.case", "with/slash", "port:8443", "-x"])
def test_bad_trust_domains_are_refused(domain: str) -> None:
    with pytest.raises(IdentityError, match="trust domain"):
        check_trust_domain(domain)
