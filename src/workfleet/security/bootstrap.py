"""Bootstrap tokens: one-time, expiring, bound to one worker id; they let a worker enroll.

A token reads `wfb_<token_id>.<secret>`. The public id names `<pki>/bootstrap/<token_id>.json`,
which holds only sha256(secret), the worker id and the expiry; the secret is 256 random bits, so
a fast hash is enough. Consuming renames that file to `<token_id>.used`: a rename is atomic, so
of two concurrent consumers exactly one finds the file to move. Every refusal (malformed,
unknown, wrong secret, expired, used) is the same error, so none tells an attacker which it was.
"""

import hashlib
import hmac
import json
import os
import re
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path

from workfleet.files import write_atomically
from workfleet.security.identity import Identity
from workfleet.security.pki import InvalidRequest
from workfleet.settings import ensure_private_dir

PREFIX = "wfb_"
BOOTSTRAP_DIR = "bootstrap"
MAX_TTL = timedelta(hours=24)
TOKEN_ID = re.compile(r"[0-9a-f]{16}")  # also keeps a presented id from naming any other path
REFUSED = "invalid or expired bootstrap token"


class BootstrapRefused(Exception):
    """The one error for every unusable token."""

    def __init__(self) -> None:
        super().__init__(REFUSED)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_bootstrap_token(
    pki_dir: Path, worker_id: str, ttl: timedelta, now: datetime | None = None
) -> str:
    """Store a token for `worker_id` and return the raw token (shown once, never stored)."""
    Identity("worker", worker_id)  # the id must be one a certificate can carry
    if not timedelta(0) < ttl <= MAX_TTL:
        raise InvalidRequest(f"a bootstrap token lives more than 0 and at most {MAX_TTL}")
    issued_at = now or datetime.now(UTC)
    token_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    record = {
        "token_id": token_id,
        "worker_id": worker_id,
        "secret_sha256": _digest(secret),
        "created_at": issued_at.isoformat(),
        "expires_at": (issued_at + ttl).isoformat(),
    }
    directory = ensure_private_dir(pki_dir / BOOTSTRAP_DIR)
    write_atomically(directory / f"{token_id}.json", json.dumps(record).encode())
    return f"{PREFIX}{token_id}.{secret}"


def consume_bootstrap_token(pki_dir: Path, raw: str, now: datetime | None = None) -> str:
    """Spend a token and return the worker id it was issued for; `BootstrapRefused` otherwise."""
    token_id, _, secret = raw.removeprefix(PREFIX).partition(".")
    if not raw.startswith(PREFIX) or not TOKEN_ID.fullmatch(token_id) or not secret:
        raise BootstrapRefused
    pending = pki_dir / BOOTSTRAP_DIR / f"{token_id}.json"
    try:
        stored = json.loads(pending.read_bytes())
        secret_ok = hmac.compare_digest(stored["secret_sha256"], _digest(secret))
        expired = datetime.fromisoformat(stored["expires_at"]) <= (now or datetime.now(UTC))
        worker_id: str = stored["worker_id"]
    except (OSError, ValueError, KeyError, TypeError):  # unknown, already used, or unreadable
        raise BootstrapRefused from None
    if not secret_ok or expired:
        raise BootstrapRefused
    try:
        os.rename(pending, pending.with_suffix(".used"))
    except FileNotFoundError:  # a concurrent consumer spent it between our read and here
        raise BootstrapRefused from None
    return worker_id
