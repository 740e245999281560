"""TLS edge cases from the anchors' checklist, on real sockets: certificates our CA signed but
for the wrong purpose, without a SAN or expired, and a static gate on how contexts are built.
REG-10, MITM-03, MITM-04, MITM-06, MITM-07."""

import re
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from workfleet.harness.cluster import Cluster
from workfleet.security.identity import Identity
from workfleet.security.pki import CertificateAuthority, load_ca
from workfleet.security.tls import client_context
from workfleet.settings import TlsPaths

SRC = Path(__file__).resolve().parents[2] / "src" / "workfleet"


def signed_by(
    ca: CertificateAuthority,
    *,
    uri: str | None,
    dns: str | None,
    usages: list[x509.ObjectIdentifier],
    valid_from: datetime,
    valid_to: datetime,
) -> tuple[bytes, bytes]:
    """A leaf our CA signs but `certs issue` would never make (wrong EKU, no SAN, expired)."""
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from)
        .not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    names: list[x509.GeneralName] = []
    if uri:
        names.append(x509.UniformResourceIdentifier(uri))
    if dns:
        names.append(x509.DNSName(dns))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def written(tmp_path: Path, name: str, pair: tuple[bytes, bytes], ca_file: Path) -> TlsPaths:
    cert, key = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert.write_bytes(pair[0])
    key.write_bytes(pair[1])
    key.chmod(0o600)
    return TlsPaths(cert, key, ca_file)


@contextmanager
def tls_server(cert: Path, key: Path) -> Iterator[int]:
    """A bare TLS server answering one HTTP 200 per connection, on a free loopback port."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                with context.wrap_socket(raw, server_side=True) as conn:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            except (ssl.SSLError, OSError):
                pass  # the client refused our certificate: what the tests want to see

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[CertificateAuthority, Path]:
    cluster = Cluster(tmp_path / "c", auth_mode="mtls")
    cluster.issue(Identity("backend"))
    return load_ca(cluster.data_dir), cluster.ca_file


def now() -> datetime:
    return datetime.now(UTC)


async def test_a_client_certificate_for_server_use_only_is_refused(tmp_path: Path) -> None:
    """REG-10: a worker identity whose EKU is serverAuth only cannot be used as a client."""
    cluster = Cluster(tmp_path / "c", auth_mode="mtls")
    try:
        await cluster.start_backend()
        server_only = signed_by(
            load_ca(cluster.data_dir),
            uri="spiffe://workfleet.local/worker/w1",
            dns=None,
            usages=[ExtendedKeyUsageOID.SERVER_AUTH],
            valid_from=now() - timedelta(minutes=1),
            valid_to=now() + timedelta(hours=1),
        )
        paths = written(tmp_path, "server-only", server_only, cluster.ca_file)
        async with httpx.AsyncClient(
            base_url=cluster.url, verify=client_context(cluster.ca_file, paths), trust_env=False
        ) as http:
            with pytest.raises(httpx.TransportError):
                await http.get("/api/v1/workers")
    finally:
        await cluster.stop()


def test_a_server_certificate_with_only_a_common_name_is_refused(
    tmp_path: Path, ca: tuple[CertificateAuthority, Path]
) -> None:
    """MITM-03: CN=localhost and no SAN: refused, since our clients never read the CN; the
    control shows Python's default would have accepted it."""
    authority, ca_file = ca
    cn_only = signed_by(
        authority,
        uri=None,
        dns=None,
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        valid_from=now() - timedelta(minutes=1),
        valid_to=now() + timedelta(hours=1),
    )
    paths = written(tmp_path, "cn-only", cn_only, ca_file)
    with tls_server(paths.cert, paths.key) as port:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://localhost:{port}/", verify=client_context(ca_file))
        lenient = ssl.create_default_context(cafile=ca_file)
        lenient.hostname_checks_common_name = True  # Python's default
        assert httpx.get(f"https://localhost:{port}/", verify=lenient).status_code == 200


def test_an_expired_server_certificate_is_refused(
    tmp_path: Path, ca: tuple[CertificateAuthority, Path]
) -> None:
    """MITM-04: the certificate of a backend (or worker) past its notAfter."""
    authority, ca_file = ca
    expired = signed_by(
        authority,
        uri="spiffe://workfleet.local/backend",
        dns="localhost",
        usages=[ExtendedKeyUsageOID.SERVER_AUTH],
        valid_from=now() - timedelta(hours=2),
        valid_to=now() - timedelta(hours=1),
    )
    paths = written(tmp_path, "expired", expired, ca_file)
    with (
        tls_server(paths.cert, paths.key) as port,
        pytest.raises(httpx.ConnectError, match="certificate has expired"),
    ):
        httpx.get(f"https://localhost:{port}/", verify=client_context(ca_file))


def test_client_contexts_trust_our_ca_alone(ca: tuple[CertificateAuthority, Path]) -> None:
    """MITM-06: no certifi, no system roots: exactly one CA in the store."""
    _, ca_file = ca
    context = client_context(ca_file)
    assert context.cert_store_stats()["x509_ca"] == 1
    assert context.check_hostname and not context.hostname_checks_common_name
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_no_code_turns_verification_off() -> None:
    """MITM-07: a static gate over the product code."""
    banned = re.compile(
        r"verify\s*=\s*False|CERT_NONE|check_hostname\s*=\s*False|_create_unverified_context"
    )
    offenders = [
        f"{path.relative_to(SRC)}:{number}"
        for path in SRC.rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if banned.search(line)
    ]
    assert offenders == []
