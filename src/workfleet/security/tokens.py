"""The cluster secret (token mode): shared by backend and workers, checked in both directions."""

import hmac
from collections.abc import Iterable

BEARER = "Bearer "


def bearer_token(authorization: str | None) -> str | None:
    if not authorization or not authorization.startswith(BEARER):
        return None
    return authorization[len(BEARER) :].strip() or None


def matches_any(presented: str, accepted: Iterable[bytes]) -> bool:
    """Constant-time against every accepted secret (a list allows rotation with overlap)."""
    candidate = presented.encode()
    found = False
    for secret in accepted:
        found |= hmac.compare_digest(candidate, secret)
    return found


def auth_header(secrets: tuple[bytes, ...]) -> dict[str, str]:
    """What this process sends: the first secret is the current one."""
    if not secrets:
        return {}
    return {"Authorization": f"{BEARER}{secrets[0].decode()}"}
