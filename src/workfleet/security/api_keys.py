"""Client API keys: `wf_<key_id>.<secret>`, stored as SHA-256 of the secret, shown once.

The public key_id is the lookup key; the secret is 256 random bits, so a fast hash is enough
(slow hashes exist for low-entropy passwords). Unknown id and wrong secret fail the same way.
"""

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime

from workfleet.domain.permissions import Role

PREFIX = "wf_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    name: str
    role: Role
    secret_sha256: str
    created_at: datetime
    revoked_at: datetime | None = None


def generate(name: str, role: Role, *, at: datetime) -> tuple[ApiKey, str]:
    """A new key record and the raw key to show once."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(
        key_id=key_id, name=name, role=role, secret_sha256=_digest(secret), created_at=at
    )
    return record, f"{PREFIX}{key_id}.{secret}"


def parse(raw: str) -> tuple[str, str] | None:
    """Split a raw key into (key_id, secret), or None if it does not look like one."""
    if not raw.startswith(PREFIX) or "." not in raw:
        return None
    key_id, secret = raw[len(PREFIX) :].split(".", 1)
    if not key_id or not secret:
        return None
    return key_id, secret


def matches(record: ApiKey, secret: str) -> bool:
    return hmac.compare_digest(record.secret_sha256, _digest(secret))


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
