"""Who a certificate speaks for: one SPIFFE-style URI SAN, never the subject CN.

`spiffe://<trust-domain>/backend`, `.../worker/<id>`, `.../client/<name>`, `.../monitoring`.
A valid chain only proves the CA signed the certificate; the identity (and so the role) is this
URI, and a certificate with no URI SAN, several, or one outside our trust domain has none.
"""

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

IdentityKind = Literal["backend", "worker", "client", "monitoring"]
KINDS: tuple[IdentityKind, ...] = ("backend", "worker", "client", "monitoring")
NAMED_KINDS: frozenset[IdentityKind] = frozenset({"worker", "client"})
DEFAULT_TRUST_DOMAIN = "workfleet.local"
# ids end up in URIs and file names: no separators, no dot-dot start, bounded length
SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TRUST_DOMAIN = re.compile(r"[a-z0-9][a-z0-9._-]{0,254}")  # SPIFFE: lowercase, no port
SCHEME = "spiffe://"
DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class IdentityError(ValueError):
    """The certificate (or the name given) does not carry one valid workfleet identity."""


def check_trust_domain(trust_domain: str) -> str:
    if not TRUST_DOMAIN.fullmatch(trust_domain):
        raise IdentityError(
            f"trust domain {trust_domain!r} must be lowercase letters, digits, '.', '_' or '-'"
        )
    return trust_domain


def _kind(text: str) -> IdentityKind | None:
    for kind in KINDS:
        if kind == text:
            return kind
    return None


@dataclass(frozen=True, slots=True)
class Identity:
    kind: IdentityKind
    name: str | None = None

    def __post_init__(self) -> None:
        if _kind(self.kind) is None:
            raise IdentityError(f"unknown identity kind {self.kind!r}")
        if self.kind not in NAMED_KINDS:
            if self.name is not None:
                raise IdentityError(f"the {self.kind} identity takes no name")
        elif self.name is None or not SAFE_ID.fullmatch(self.name):
            raise IdentityError(
                f"{self.kind} id {self.name!r} must be 1-64 letters, digits, '.', '_' or '-',"
                " starting with a letter or digit"
            )

    @property
    def path(self) -> str:
        return self.kind if self.name is None else f"{self.kind}/{self.name}"

    @property
    def file_stem(self) -> str:
        """`backend`, `worker-<id>`, `client-<name>` or `monitoring`: the issued files' name."""
        return self.kind if self.name is None else f"{self.kind}-{self.name}"

    def uri(self, trust_domain: str) -> str:
        return f"{SCHEME}{trust_domain}/{self.path}"

    @classmethod
    def from_uri(cls, uri: str, trust_domain: str) -> "Identity":
        prefix = f"{SCHEME}{trust_domain}/"
        if not uri.startswith(prefix):
            if uri.startswith(SCHEME):
                raise IdentityError(f"identity {uri!r} is outside trust domain {trust_domain!r}")
            raise IdentityError(f"identity {uri!r} is not a {SCHEME} URI")
        kind, *rest = uri[len(prefix) :].split("/")
        known = _kind(kind)
        if known is None or len(rest) != (1 if known in NAMED_KINDS else 0):
            raise IdentityError(f"identity {uri!r} has an unknown path")
        return cls(known, rest[0] if rest else None)

    @classmethod
    def from_file_stem(cls, stem: str) -> "Identity":
        """The inverse of `file_stem`, so operators can name an identity as `certs list` does."""
        kind, _, name = stem.partition("-")
        known = _kind(kind)
        if known is None:
            raise IdentityError(
                f"{stem!r} is not an identity (backend, worker-<id>, client-<name>, monitoring)"
            )
        return cls(known, name if known in NAMED_KINDS else (name or None))


def worker_dns_name(worker_id: str, trust_domain: str) -> str:
    """A DNS name every worker certificate carries: the backend verifies it (as the TLS server
    name) whatever address the worker registered, so a worker's URL cannot lead the backend to
    another worker (or to anything else that is not that worker)."""
    # ids may hold '_', '.' or capitals, which DNS labels cannot (or fold): those get a digest
    label = (
        worker_id
        if DNS_LABEL.fullmatch(worker_id)
        else hashlib.sha256(worker_id.encode()).hexdigest()[:32]
    )
    return f"{label}.workers.{trust_domain}"


@dataclass(frozen=True, slots=True)
class PeerIdentity:
    """What the TLS layer needs about a verified peer: who, which certificate, which key."""

    identity: Identity
    serial: int
    spki_sha256: str
    not_after: datetime


def spki_sha256(certificate: x509.Certificate) -> str:
    """Fingerprint of the public key, stable across renewals that keep the key."""
    spki = certificate.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def parse_identity(certificate: x509.Certificate, trust_domain: str) -> PeerIdentity:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise IdentityError("certificate has no subjectAltName, so no identity") from None
    except x509.DuplicateExtension:
        raise IdentityError("certificate has two subjectAltName extensions") from None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    if len(uris) != 1:
        raise IdentityError(f"certificate must carry exactly one URI SAN, it has {len(uris)}")
    return PeerIdentity(
        identity=Identity.from_uri(uris[0], trust_domain),
        serial=certificate.serial_number,
        spki_sha256=spki_sha256(certificate),
        not_after=certificate.not_valid_after_utc,
    )


def parse_identity_der(der: bytes, trust_domain: str) -> PeerIdentity:
    """For `SSLObject.getpeercert(binary_form=True)`."""
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError:
        raise IdentityError("peer certificate is not valid DER") from None
    return parse_identity(certificate, trust_domain)
