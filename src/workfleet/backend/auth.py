"""Who is calling: in mtls mode the identity of the caller's certificate (unless its serial is
revoked), else an API key (a client); in token mode the cluster secret (a worker) or an API key;
in `none` mode the local user. Keys are cached for a second and the revocation list is re-read
when its file changes, so revocations made by another process (the offline `workfleet keys
revoke` / `certs revoke`) take effect without a restart."""

import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Protocol, get_args

from workfleet.domain.permissions import Principal, Role
from workfleet.security import api_keys
from workfleet.security.api_keys import ApiKey
from workfleet.security.cert_registry import ClientRoles, RevocationList
from workfleet.security.identity import PeerIdentity
from workfleet.security.tokens import matches_any
from workfleet.settings import AuthMode
from workfleet.store.base import Store
from workfleet.store.sql import SqlStore

LOCAL = Principal(role="admin", name="local")
WORKER = Principal(role="worker", name="cluster")
KEY_CACHE_S = 1.0
ALLOWED_ROLES = frozenset(get_args(Role))


class CertificateChecks(Protocol):
    """mtls: whether a serial is revoked, and the role a client certificate was issued with."""

    def is_revoked(self, serial: int) -> bool: ...

    def role_of(self, serial: int) -> str | None: ...


class IssuedCertificates:
    """CertificateChecks from the PKI directory that `workfleet certs` writes: its revocation
    list and the registry of issued certificates, each re-read when its file changes."""

    def __init__(self, pki_dir: Path) -> None:
        self._revoked = RevocationList(pki_dir / "revoked.json")
        self._roles = ClientRoles(pki_dir / "issued.jsonl")

    def is_revoked(self, serial: int) -> bool:
        return self._revoked.is_revoked(serial)

    def role_of(self, serial: int) -> str | None:
        return self._roles.role_of(serial)


class Authenticator:
    def __init__(
        self,
        mode: AuthMode,
        cluster_secrets: tuple[bytes, ...],
        store: Store,
        certificates: CertificateChecks | None = None,
    ) -> None:
        self.mode = mode
        # mtls accepts no shared secret: every worker proves its own identity
        self._secrets = cluster_secrets if mode == "token" else ()
        self._store = store
        self._certificates = certificates
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def authenticate(
        self, token: str | None, peer: PeerIdentity | None = None
    ) -> Principal | None:
        if peer is not None and self._certificates is not None:
            return self._from_certificate(peer, self._certificates)
        if token is None:
            return None
        if matches_any(token, self._secrets):
            return WORKER
        parsed = api_keys.parse(token)
        if parsed is None:
            return None
        key_id, secret = parsed
        key = await self._key(key_id)
        if key is None or key.revoked_at is not None or not api_keys.matches(key, secret):
            return None
        return Principal(role=key.role, name=key.name, key_id=key.key_id)

    def _from_certificate(
        self, peer: PeerIdentity, certificates: CertificateChecks
    ) -> Principal | None:
        # checked on every request: a keep-alive connection keeps its handshake identity
        if certificates.is_revoked(peer.serial):
            return None
        kind, name = peer.identity.kind, peer.identity.name
        role: str | None = {"worker": "worker", "monitoring": "monitoring"}.get(kind)
        if kind == "client":
            role = certificates.role_of(peer.serial)
        if role is None or role not in ALLOWED_ROLES:  # the backend's own identity, or unknown
            return None
        return Principal(
            role=role,  # type: ignore[arg-type]  # checked against ALLOWED_ROLES just above
            name=name or kind,
            certificate_serial=peer.serial,
            key_fingerprint=peer.spki_sha256,
        )

    def forget(self, key_id: str) -> None:
        self._cache.pop(key_id, None)

    async def _key(self, key_id: str) -> ApiKey | None:
        cached = self._cache.get(key_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < KEY_CACHE_S:
            return cached[1]
        key = await self._store.get_api_key(key_id)
        if len(self._cache) > 10_000:  # unknown ids are cached too: keep guessing cheap, bounded
            self._cache.clear()
        self._cache[key_id] = (now, key)
        return key


async def create_key(
    store: Store, name: str, role: str, clock: Callable[[], datetime]
) -> tuple[ApiKey, str]:
    if role not in ("viewer", "operator", "admin"):
        raise ValueError(f"role must be viewer, operator or admin, not {role!r}")
    record, raw = api_keys.generate(name, role, at=clock())  # type: ignore[arg-type]
    await store.add_api_key(record)
    return record, raw


async def create_key_offline(
    database_url: str, name: str, role: str, clock: Callable[[], datetime]
) -> str:
    """A key written straight into the database, whether or not a backend runs on it (a
    running one finds it on its next lookup); returns the raw key."""
    store = SqlStore(database_url)
    await store.open()
    try:
        _, raw = await create_key(store, name, role, clock)
    finally:
        await store.close()
    return raw
