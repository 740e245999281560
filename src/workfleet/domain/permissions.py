"""Who may do what. Roles are ordered for clients; `worker` and `monitoring` are machine roles."""

from dataclasses import dataclass
from typing import Final, Literal

Role = Literal["viewer", "operator", "admin", "worker", "monitoring"]
Action = Literal[
    "read",  # operations, workers, keys listing excluded
    "submit",
    "cancel",
    "manage_workers",  # drain, undrain, deregister
    "manage_keys",
    "report",  # worker callbacks: register, session, progress, completion
    "scrape",  # /metrics
    "audit",  # read the audit log
]

ALLOWED: Final[dict[Action, frozenset[Role]]] = {
    "read": frozenset({"viewer", "operator", "admin"}),
    "submit": frozenset({"operator", "admin"}),
    "cancel": frozenset({"operator", "admin"}),
    "manage_workers": frozenset({"admin"}),
    "manage_keys": frozenset({"admin"}),
    "report": frozenset({"worker"}),
    "scrape": frozenset({"viewer", "operator", "admin", "worker", "monitoring"}),
    "audit": frozenset({"admin"}),
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: `name` is the API key's name, or `cluster` for the shared secret."""

    role: Role
    name: str
    key_id: str | None = None


def allowed(principal: Principal, action: Action) -> bool:
    return principal.role in ALLOWED[action]


def may_cancel(principal: Principal, owner: str) -> bool:
    """Operators cancel their own operations; admins cancel any."""
    if principal.role == "admin":
        return True
    return principal.role == "operator" and principal.name == owner
