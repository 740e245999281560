"""Who is calling: the cluster secret (a worker), an API key (a client), or, in `none` mode,
the local user. Keys are cached for a second, so a revocation made by another process (the
offline `workfleet keys revoke`) takes effect without a restart."""

import time
from collections.abc import Callable
from datetime import datetime

from workfleet.domain.permissions import Principal
from workfleet.security import api_keys
from workfleet.security.api_keys import ApiKey
from workfleet.security.tokens import matches_any
from workfleet.settings import AuthMode
from workfleet.store.base import Store

LOCAL = Principal(role="admin", name="local")
WORKER = Principal(role="worker", name="cluster")
KEY_CACHE_S = 1.0


class Authenticator:
    def __init__(self, mode: AuthMode, cluster_secrets: tuple[bytes, ...], store: Store) -> None:
        self.mode = mode
        self._secrets = cluster_secrets
        self._store = store
        self._cache: dict[str, tuple[float, ApiKey | None]] = {}

    async def authenticate(self, token: str | None) -> Principal | None:
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
