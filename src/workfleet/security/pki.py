"""The private CA of mTLS mode: create it, rotate it with overlap, issue leaves, sign worker CSRs.

Everything lives in files under `<data-dir>/pki/` (no database), so `workfleet certs` works
offline. Certificates carry complete RFC 5280 extensions (critical basicConstraints and keyUsage,
AKI, SKI, a non-critical SAN under a non-empty subject) because `cryptography.x509.verification`
and Python 3.13's default VERIFY_X509_STRICT refuse anything less. The identity is the SAN URI
(see `identity`); the subject CN is only a label for humans.
"""

import ipaddress
import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from workfleet.files import write_atomically
from workfleet.security.cert_registry import ClientRole, IssuedCertificate, record_issued
from workfleet.security.identity import (
    DEFAULT_TRUST_DOMAIN,
    Identity,
    IdentityKind,
    check_trust_domain,
    spki_sha256,
    worker_dns_name,
)
from workfleet.settings import ensure_private_dir

CLOCK_SKEW = timedelta(minutes=5)  # notBefore is backdated so a peer whose clock lags accepts it
CA_LIFETIME = timedelta(days=3650)
ENROLLMENT_LIFETIME = timedelta(hours=24)  # short-lived: renewal, not revocation, is the norm
DEFAULT_LIFETIME: dict[IdentityKind, timedelta] = {
    "backend": timedelta(days=365),  # issued by hand, so long-lived
    "worker": timedelta(days=30),
    "client": timedelta(days=30),
    "monitoring": timedelta(days=30),
}
# backend and workers both serve (each calls the other), so only they get serverAuth and the
# DNS/IP names that clients check; a client or monitoring certificate cannot pose as a server
SERVING_KINDS: frozenset[IdentityKind] = frozenset({"backend", "worker"})
MIN_RSA_BITS = 2048
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)
_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_NAME = re.compile(rf"(?=.{{1,253}}$){_DNS_LABEL}(?:\.{_DNS_LABEL})*")

CsrPublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey


class PkiError(Exception):
    """The PKI on disk does not allow the operation (no CA yet, a CA already, ...)."""


class InsecureKeyFile(PkiError):
    """A private key file is readable by group or others."""


class InvalidRequest(ValueError):
    """Arguments no PKI state would accept (a DNS name on a client certificate, a bad IP, ...)."""


class CsrRefused(InvalidRequest):
    """A certificate signing request the CA will not sign."""


@dataclass(frozen=True, slots=True)
class PkiLayout:
    """The files of `<data-dir>/pki/`."""

    root: Path

    @classmethod
    def of(cls, data_dir: Path) -> "PkiLayout":
        return cls(data_dir / "pki")

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def previous_ca_key(self) -> Path:
        return self.root / "ca-previous.key"

    @property
    def previous_ca_cert(self) -> Path:
        return self.root / "ca-previous.crt"

    @property
    def bundle(self) -> Path:
        """What every process trusts: the CA, plus the previous one during a rotation."""
        return self.root / "ca-bundle.crt"

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def issued_dir(self) -> Path:
        return self.root / "issued"

    @property
    def registry(self) -> Path:
        return self.root / "issued.jsonl"

    @property
    def revoked(self) -> Path:
        return self.root / "revoked.json"


@dataclass(frozen=True, slots=True)
class CertificateAuthority:
    layout: PkiLayout
    trust_domain: str
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    def bundle_pem(self) -> bytes:
        return self.layout.bundle.read_bytes()


@dataclass(frozen=True, slots=True)
class IssuedCredentials:
    key_pem: bytes
    cert_pem: bytes
    record: IssuedCertificate


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),  # file mode 0600 protects it; processes start unattended
    )


def _key_usage(*, signs_certificates: bool) -> x509.KeyUsage:
    """A CA signs certificates and CRLs, nothing else; a leaf signs handshakes, nothing else."""
    return x509.KeyUsage(
        digital_signature=not signs_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=signs_certificates,
        crl_sign=signs_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _leaf_subject(identity: Identity) -> x509.Name:
    """A label for people reading the certificate; the identity is the SAN URI."""
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, identity.file_stem)])


def _new_ca(
    trust_domain: str, lifetime: timedelta, now: datetime
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    # a fresh suffix per CA keeps the old and the new apart by name in a rotation bundle
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "workfleet"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"workfleet CA {trust_domain} {secrets.token_hex(4)}"
            ),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(signs_certificates=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _write_ca(layout: PkiLayout, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> None:
    write_atomically(layout.ca_key, _private_pem(key))
    write_atomically(layout.ca_cert, _pem(cert))


def init_ca(
    data_dir: Path,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    lifetime: timedelta = CA_LIFETIME,
    now: datetime | None = None,
) -> CertificateAuthority:
    layout = PkiLayout.of(data_dir)
    check_trust_domain(trust_domain)
    if layout.ca_key.exists() or layout.ca_cert.exists():
        raise PkiError(
            f"a CA already exists in {layout.root}; refusing to overwrite it"
            " (replace it with `workfleet certs rotate-ca`)"
        )
    ensure_private_dir(data_dir)
    ensure_private_dir(layout.root)
    key, cert = _new_ca(trust_domain, lifetime, now or _utc_now())
    _write_ca(layout, key, cert)
    write_atomically(layout.bundle, _pem(cert))
    write_atomically(layout.config, json.dumps({"trust_domain": trust_domain}).encode())
    return CertificateAuthority(layout, trust_domain, key, cert)


def existing_layout(data_dir: Path) -> PkiLayout:
    """The PKI of `data_dir`, refused when it has no CA yet."""
    layout = PkiLayout.of(data_dir)
    if not (layout.ca_key.exists() and layout.ca_cert.exists() and layout.config.exists()):
        raise PkiError(f"no CA in {layout.root}; create one with `workfleet certs init`")
    return layout


def load_ca(data_dir: Path) -> CertificateAuthority:
    layout = existing_layout(data_dir)
    check_private_key_file(layout.ca_key)
    try:
        trust_domain = check_trust_domain(json.loads(layout.config.read_text())["trust_domain"])
        key = serialization.load_pem_private_key(layout.ca_key.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(layout.ca_cert.read_bytes())
    except (ValueError, KeyError, TypeError) as exc:
        raise PkiError(f"the CA in {layout.root} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{layout.ca_key} is not an EC key")
    return CertificateAuthority(layout, trust_domain, key, cert)


def rotate_ca(
    data_dir: Path, lifetime: timedelta = CA_LIFETIME, now: datetime | None = None
) -> CertificateAuthority:
    """New CA for new certificates; the bundle trusts old and new until `finish_ca_rotation`."""
    current = load_ca(data_dir)
    layout = current.layout
    if layout.previous_ca_cert.exists():
        raise PkiError(
            "a CA rotation is already in progress; end it with `workfleet certs rotate-ca --finish`"
        )
    key, cert = _new_ca(current.trust_domain, lifetime, now or _utc_now())
    write_atomically(layout.previous_ca_key, _private_pem(current.key))
    write_atomically(layout.previous_ca_cert, _pem(current.cert))
    _write_ca(layout, key, cert)
    write_atomically(layout.bundle, _pem(cert) + _pem(current.cert))
    return CertificateAuthority(layout, current.trust_domain, key, cert)


def finish_ca_rotation(data_dir: Path) -> None:
    """Trust only the new CA; certificates from the previous one stop verifying."""
    ca = load_ca(data_dir)
    layout = ca.layout
    if not layout.previous_ca_cert.exists():
        raise PkiError("no CA rotation in progress (start one with `workfleet certs rotate-ca`)")
    # bundle first: if we stop half-way, the previous files remain and --finish can run again
    write_atomically(layout.bundle, _pem(ca.cert))
    layout.previous_ca_key.unlink(missing_ok=True)
    layout.previous_ca_cert.unlink()


def _general_names(
    kind: IdentityKind, dns: Sequence[str], ips: Sequence[str]
) -> list[x509.GeneralName]:
    if (dns or ips) and kind not in SERVING_KINDS:
        raise InvalidRequest(f"a {kind} certificate carries no DNS or IP names (it never serves)")
    names: list[x509.GeneralName] = []
    for host in dns:
        if not DNS_NAME.fullmatch(host.lower()):
            raise InvalidRequest(f"not a DNS name: {host!r}")
        names.append(x509.DNSName(host.lower()))
    for address in ips:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(address)))
        except ValueError:
            raise InvalidRequest(f"not an IP address: {address!r}") from None
    return names


def _sign_leaf(
    ca: CertificateAuthority,
    public_key: CsrPublicKey,
    identity: Identity,
    *,
    lifetime: timedelta,
    dns: Sequence[str],
    ips: Sequence[str],
    role: ClientRole | None,
    now: datetime,
) -> tuple[x509.Certificate, IssuedCertificate]:
    """The one place leaves are built, for `certs issue` and CSR signing alike; records it."""
    if identity.kind == "worker" and identity.name is not None:
        # the name the backend checks when it calls this worker, wherever it is reached
        dns = [*dns, worker_dns_name(identity.name, ca.trust_domain)]
    extra_names = _general_names(identity.kind, dns, ips)
    if lifetime <= timedelta(0):
        raise InvalidRequest("a certificate lifetime must be positive")
    # backdated for clock skew, but never by a large share of a short lifetime
    not_before = now - min(CLOCK_SKEW, lifetime / 10)
    # notAfter - notBefore is exactly the lifetime, so a policy maximum holds as stated
    not_after = not_before + lifetime
    if not_after > ca.cert.not_valid_after_utc:
        raise InvalidRequest(
            f"a certificate valid until {not_after:%Y-%m-%d} would outlive the CA"
            f" (valid until {ca.cert.not_valid_after_utc:%Y-%m-%d})"
        )
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.kind in SERVING_KINDS:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    ca_ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    uri = identity.uri(ca.trust_domain)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_leaf_subject(identity))
        .issuer_name(ca.cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(signs_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri), *extra_names]),
            critical=False,  # RFC 5280: not critical when the subject is non-empty
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    record = IssuedCertificate(
        serial=cert.serial_number,
        identity=uri,
        kind=identity.kind,
        name=identity.name,
        role=role,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        spki_sha256=spki_sha256(cert),
    )
    record_issued(ca.layout.registry, record)
    return cert, record


def issue_certificate(
    ca: CertificateAuthority,
    identity: Identity,
    *,
    lifetime: timedelta | None = None,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    role: ClientRole | None = None,
    now: datetime | None = None,
) -> IssuedCredentials:
    """A new key and certificate for `identity`; clients get `role` (default viewer)."""
    if role is not None and identity.kind != "client":
        raise InvalidRequest("a role applies to client certificates only")
    key = ec.generate_private_key(ec.SECP256R1())
    cert, record = _sign_leaf(
        ca,
        key.public_key(),
        identity,
        lifetime=DEFAULT_LIFETIME[identity.kind] if lifetime is None else lifetime,
        dns=dns,
        ips=ips,
        role=(role or "viewer") if identity.kind == "client" else None,
        now=now or _utc_now(),
    )
    return IssuedCredentials(_private_pem(key), _pem(cert), record)


def write_credentials(
    out_dir: Path, identity: Identity, credentials: IssuedCredentials, bundle_pem: bytes
) -> tuple[Path, Path, Path]:
    """`<stem>.crt`, `<stem>.key` (0600) and `ca.crt` (the trust bundle) in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = (
        out_dir / f"{identity.file_stem}.crt",
        out_dir / f"{identity.file_stem}.key",
        out_dir / "ca.crt",
    )
    for path, content in zip(
        paths, (credentials.cert_pem, credentials.key_pem, bundle_pem), strict=True
    ):
        write_atomically(path, content)  # 0600 from the start: a key is never briefly readable
    return paths


def issue_locally(data_dir: Path, identity: Identity, **options: Any) -> tuple[Path, Path, Path]:
    """`certs init` when there is no CA yet, then `certs issue` into `<data-dir>/pki/issued/`:
    what a one-host fleet (`workfleet up`, a test cluster) needs; returns (crt, key, ca.crt)."""
    layout = PkiLayout.of(data_dir)
    ca = load_ca(data_dir) if layout.ca_key.exists() else init_ca(data_dir)
    credentials = issue_certificate(ca, identity, **options)
    return write_credentials(layout.issued_dir, identity, credentials, ca.bundle_pem())


def csr_public_key(csr_pem: bytes) -> CsrPublicKey:
    """The CSR's public key once its type, size and self-signature pass; lets a caller refuse a
    request before it spends a bootstrap token."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
        public_key = csr.public_key()
        signature_ok = csr.is_signature_valid
    except (ValueError, UnsupportedAlgorithm):
        raise CsrRefused("not a PEM certificate signing request with a supported key") from None
    checked = _check_csr_key(public_key)
    if not signature_ok:
        raise CsrRefused("the CSR's signature does not match its public key")
    return checked


def _check_csr_key(public_key: object) -> CsrPublicKey:
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if isinstance(public_key.curve, ACCEPTED_CURVES):
            return public_key
        raise CsrRefused(f"EC curve {public_key.curve.name} refused (use P-256 or P-384)")
    if isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size >= MIN_RSA_BITS:
            return public_key
        raise CsrRefused(f"RSA-{public_key.key_size} refused (at least {MIN_RSA_BITS} bits)")
    raise CsrRefused(f"{type(public_key).__name__} keys are refused (use EC P-256/P-384 or RSA)")


def sign_worker_csr(
    ca: CertificateAuthority,
    csr_pem: bytes,
    worker_id: str,
    lifetime: timedelta = ENROLLMENT_LIFETIME,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    now: datetime | None = None,
) -> bytes:
    """A worker certificate for the CSR's key. Only the key is taken from the CSR: its subject
    and requested extensions are ignored, the identity is the `worker_id` the caller enrolled."""
    identity = Identity("worker", worker_id)
    cert, _ = _sign_leaf(
        ca,
        csr_public_key(csr_pem),
        identity,
        lifetime=lifetime,
        dns=dns,
        ips=ips,
        role=None,
        now=now or _utc_now(),
    )
    return _pem(cert)


def make_key_and_csr(worker_id: str) -> tuple[bytes, bytes]:
    """The worker side of enrollment: a P-256 key (PKCS8 PEM) and a CSR for it."""
    key_pem = _private_pem(ec.generate_private_key(ec.SECP256R1()))
    return key_pem, csr_for_key(key_pem, worker_id)


def csr_for_key(key_pem: bytes, worker_id: str) -> bytes:
    """A CSR for an existing key: renewal keeps the key, so the backend still knows the worker
    by it (one key per active worker id)."""
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CsrRefused("the worker's key must be an EC key")
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_leaf_subject(Identity("worker", worker_id)))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


def check_private_key_file(path: Path) -> None:
    """Refuse a key file that group or others can access (start-up check, CFG-03)."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raise PkiError(f"private key file {path} does not exist") from None
    if mode & 0o077:
        raise InsecureKeyFile(
            f"private key file {path} is accessible by group or others (mode {mode:03o});"
            f" fix it with: chmod 600 {path}"
        )
