"""The CA and the leaves `certs issue` makes: RFC 5280 complete, verifiable, files locked down."""

import ipaddress
import json
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from workfleet.security.identity import (
    DEFAULT_TRUST_DOMAIN,
    Identity,
    IdentityError,
    parse_identity,
    parse_identity_der,
    worker_dns_name,
)
from workfleet.security.pki import (
    CLOCK_SKEW,
    CertificateAuthority,
    InsecureKeyFile,
    InvalidRequest,
    IssuedCredentials,
    PkiError,
    check_private_key_file,
    init_ca,
    issue_certificate,
    load_ca,
    write_credentials,
)

SERVER = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT = ExtendedKeyUsageOID.CLIENT_AUTH


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return init_ca(tmp_path / "data")


def leaf(credentials: IssuedCredentials) -> x509.Certificate:
    return x509.load_pem_x509_certificate(credentials.cert_pem)


def store(ca: CertificateAuthority) -> Store:
    return Store(x509.load_pem_x509_certificates(ca.bundle_pem()))


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_the_ca_is_a_critical_path_length_zero_signing_only_ca(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    extensions = ca.cert.extensions
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    ski = extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(ca.cert.public_key())
    assert isinstance(ca.key.curve, ec.SECP256R1)
    assert ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc >= timedelta(days=3650)
    pki = tmp_path / "data" / "pki"
    assert (pki / "ca-bundle.crt").read_bytes() == (pki / "ca.crt").read_bytes()
    assert json.loads((pki / "config.json").read_text()) == {"trust_domain": DEFAULT_TRUST_DOMAIN}
    assert mode(pki / "ca.key") == 0o600
    assert mode(tmp_path / "data") == mode(pki) == 0o700
    assert load_ca(tmp_path / "data").cert == ca.cert


def test_an_existing_ca_is_never_overwritten(ca: CertificateAuthority) -> None:
    data_dir = ca.layout.root.parent
    before = ca.layout.ca_key.read_bytes()
    with pytest.raises(PkiError, match="already exists"):
        init_ca(data_dir)
    assert ca.layout.ca_key.read_bytes() == before


def test_the_trust_domain_is_chosen_at_init_and_kept(tmp_path: Path) -> None:
    init_ca(tmp_path, trust_domain="prod.example")
    ca = load_ca(tmp_path)
    issued = issue_certificate(ca, Identity("monitoring"))
    assert issued.record.identity == "spiffe://prod.example/monitoring"
    with pytest.raises(IdentityError):
        init_ca(tmp_path / "other", trust_domain="Not A Domain")


def test_without_a_ca_issuing_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="certs init"):
        load_ca(tmp_path)


KINDS = [
    (Identity("backend"), ["backend.test", "Localhost"], ["127.0.0.1", "::1"], [SERVER, CLIENT]),
    (Identity("worker", "w1"), ["w1.test"], [], [SERVER, CLIENT]),
    (Identity("client", "alice"), [], [], [CLIENT]),
    (Identity("monitoring"), [], [], [CLIENT]),
]


@pytest.mark.parametrize(("identity", "dns", "ips", "usages"), KINDS)
def test_each_leaf_carries_complete_rfc5280_extensions(
    ca: CertificateAuthority,
    identity: Identity,
    dns: list[str],
    ips: list[str],
    usages: list[x509.ObjectIdentifier],
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    cert = leaf(issue_certificate(ca, identity, dns=dns, ips=ips, now=now))
    extensions = cert.extensions
    constraints = extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and not constraints.value.ca
    usage = extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_encipherment)
    assert list(extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == usages
    san = extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert not san.critical and cert.subject.rfc4514_string()  # non-critical needs a subject
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [
        identity.uri(DEFAULT_TRUST_DOMAIN)
    ]
    expected_dns = [name.lower() for name in dns]
    if identity.kind == "worker":  # the name the backend verifies when it calls the worker
        expected_dns.append(worker_dns_name(identity.name or "", DEFAULT_TRUST_DOMAIN))
    assert san.value.get_values_for_type(x509.DNSName) == expected_dns
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(a) for a in ips]
    aki = extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest
    assert extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value == x509.SubjectKeyIdentifier.from_public_key(cert.public_key())
    assert cert.issuer == ca.cert.subject
    assert cert.not_valid_before_utc == now - CLOCK_SKEW
    public_key = cert.public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    assert isinstance(public_key.curve, ec.SECP256R1)
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert parse_identity(cert, DEFAULT_TRUST_DOMAIN).identity == identity


@pytest.mark.parametrize(("identity", "dns", "ips", "usages"), KINDS)
def test_every_leaf_passes_the_cryptography_client_verifier(
    ca: CertificateAuthority,
    identity: Identity,
    dns: list[str],
    ips: list[str],
    usages: list[x509.ObjectIdentifier],
) -> None:
    cert = leaf(issue_certificate(ca, identity, dns=dns, ips=ips))
    verified = PolicyBuilder().store(store(ca)).build_client_verifier().verify(cert, [])
    assert verified.chain[-1] == ca.cert
    if SERVER in usages:
        for name in dns:
            server = PolicyBuilder().store(store(ca)).build_server_verifier(x509.DNSName(name))
            assert server.verify(cert, [])[-1] == ca.cert


def test_a_client_certificate_cannot_serve(ca: CertificateAuthority) -> None:
    cert = leaf(issue_certificate(ca, Identity("client", "alice")))
    # the verifier insists on serverAuth before it looks at names
    verifier = PolicyBuilder().store(store(ca)).build_server_verifier(x509.DNSName("alice"))
    with pytest.raises(VerificationError):
        verifier.verify(cert, [])


@pytest.mark.parametrize(
    ("identity", "lifetime", "expected"),
    [
        (Identity("backend"), None, timedelta(days=365)),
        (Identity("worker", "w1"), None, timedelta(days=30)),
        (Identity("client", "c"), None, timedelta(days=30)),
        (Identity("monitoring"), None, timedelta(days=30)),
        (Identity("worker", "w1"), timedelta(hours=2), timedelta(hours=2)),
    ],
)
def test_lifetimes_default_by_kind_and_are_exact(
    ca: CertificateAuthority,
    identity: Identity,
    lifetime: timedelta | None,
    expected: timedelta,
) -> None:
    cert = leaf(issue_certificate(ca, identity, lifetime=lifetime))
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == expected


def test_clients_get_a_role_recorded_and_viewer_by_default(ca: CertificateAuthority) -> None:
    assert issue_certificate(ca, Identity("client", "a")).record.role == "viewer"
    assert issue_certificate(ca, Identity("client", "b"), role="admin").record.role == "admin"
    assert issue_certificate(ca, Identity("worker", "w")).record.role is None


@pytest.mark.parametrize(
    ("identity", "options", "message"),
    [
        (Identity("client", "c"), {"dns": ["c.test"]}, "no DNS or IP"),
        (Identity("monitoring"), {"ips": ["10.0.0.1"]}, "no DNS or IP"),
        (Identity("worker", "w"), {"role": "admin"}, "client certificates only"),
        (Identity("backend"), {"dns": ["bad_name.test"]}, "not a DNS name"),
        (Identity("backend"), {"dns": ["*.test"]}, "not a DNS name"),
        (Identity("backend"), {"ips": ["10.0.0"]}, "not an IP address"),
        (Identity("backend"), {"lifetime": timedelta(0)}, "positive"),
        (Identity("backend"), {"lifetime": timedelta(days=4000)}, "outlive the CA"),
    ],
)
def test_requests_no_ca_state_could_satisfy_are_refused(
    ca: CertificateAuthority, identity: Identity, options: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        issue_certificate(ca, identity, **options)  # type: ignore[arg-type]
    assert not ca.layout.registry.exists()  # nothing recorded for a refused request


def test_credentials_are_written_with_a_private_key_only_the_owner_reads(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    identity = Identity("worker", "w1")
    issued = issue_certificate(ca, identity)
    cert_path, key_path, bundle_path = write_credentials(
        tmp_path / "out" / "nested", identity, issued, ca.bundle_pem()
    )
    assert (cert_path.name, key_path.name, bundle_path.name) == (
        "worker-w1.crt",
        "worker-w1.key",
        "ca.crt",
    )
    assert mode(key_path) == 0o600
    assert bundle_path.read_bytes() == ca.bundle_pem()
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8
    assert key.public_key() == leaf(issued).public_key()
    check_private_key_file(key_path)


def test_a_key_file_others_can_read_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k.key"
    key.write_bytes(b"k")
    key.chmod(0o640)
    with pytest.raises(InsecureKeyFile, match="chmod 600"):
        check_private_key_file(key)
    with pytest.raises(PkiError, match="does not exist"):
        check_private_key_file(tmp_path / "missing.key")


def test_the_ca_is_not_used_once_its_key_is_readable_by_others(ca: CertificateAuthority) -> None:
    ca.layout.ca_key.chmod(0o644)
    with pytest.raises(InsecureKeyFile):
        load_ca(ca.layout.root.parent)


def handshake(server: ssl.SSLContext, client: ssl.SSLContext, server_name: str) -> bytes:
    """A full TLS handshake through memory BIOs (no sockets); the server's view of the client."""
    client_in, client_out, server_in, server_out = (ssl.MemoryBIO() for _ in range(4))
    client_side = client.wrap_bio(client_in, client_out, server_hostname=server_name)
    server_side = server.wrap_bio(server_in, server_out, server_side=True)
    pending = [client_side, server_side]
    for _ in range(10):
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
        server_in.write(client_out.read())
        client_in.write(server_out.read())
        if not pending:
            break
    peer = server_side.getpeercert(binary_form=True)
    assert peer is not None
    return peer


def strict_context(purpose: ssl.Purpose, bundle: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """What Python 3.13's create_default_context adds: X509_STRICT (AKI required, critical CA
    basicConstraints, ...) and PARTIAL_CHAIN."""
    context = ssl.create_default_context(purpose, cafile=str(bundle))
    context.verify_flags |= ssl.VERIFY_X509_STRICT | ssl.VERIFY_X509_PARTIAL_CHAIN
    context.verify_mode = ssl.CERT_REQUIRED
    context.hostname_checks_common_name = False
    context.load_cert_chain(cert, key)
    return context


def test_backend_and_worker_complete_a_strict_mutual_tls_handshake(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    out = tmp_path / "issued"
    backend = Identity("backend")
    worker = Identity("worker", "w1")
    b_cert, b_key, bundle = write_credentials(
        out, backend, issue_certificate(ca, backend, dns=["backend.test"]), ca.bundle_pem()
    )
    w_cert, w_key, _ = write_credentials(
        out, worker, issue_certificate(ca, worker), ca.bundle_pem()
    )
    server = strict_context(ssl.Purpose.CLIENT_AUTH, bundle, b_cert, b_key)
    client = strict_context(ssl.Purpose.SERVER_AUTH, bundle, w_cert, w_key)
    peer = handshake(server, client, "backend.test")
    assert parse_identity_der(peer, DEFAULT_TRUST_DOMAIN).identity == worker


def test_a_certificate_from_another_ca_fails_the_handshake(
    ca: CertificateAuthority, tmp_path: Path
) -> None:
    rogue = init_ca(tmp_path / "rogue")
    backend, worker = Identity("backend"), Identity("worker", "w1")
    b_cert, b_key, bundle = write_credentials(
        tmp_path / "b", backend, issue_certificate(ca, backend, dns=["b.test"]), ca.bundle_pem()
    )
    w_cert, w_key, _ = write_credentials(
        tmp_path / "w", worker, issue_certificate(rogue, worker), b""
    )
    server = strict_context(ssl.Purpose.CLIENT_AUTH, bundle, b_cert, b_key)
    client = strict_context(ssl.Purpose.SERVER_AUTH, bundle, w_cert, w_key)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(server, client, "b.test")
