"""Who may do what. Roles are ordered for clients; `worker` and `monitoring` are machine roles."""

from dataclasses import dataclass
from typing import Final, Literal

from workfleet.domain.errors import Forbidden

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
    """An authenticated caller: `name` is the API key's name, `cluster` for the shared secret,
    or the id in a certificate's identity (mtls)."""

    role: Role
    name: str
    key_id: str | None = None
    certificate_serial: int | None = None  # mtls: the certificate the caller proved
    key_fingerprint: str | None = None  # mtls: SHA-256 of that certificate's public key

    @property
    def bound_worker(self) -> str | None:
        """The worker id this caller proved with its certificate; None for the shared cluster
        secret of token mode, which every worker holds alike."""
        if self.role == "worker" and self.certificate_serial is not None:
            return self.name
        return None


def allowed(principal: Principal, action: Action) -> bool:
    return principal.role in ALLOWED[action]


def may_cancel(principal: Principal, owner: str) -> bool:
    """Operators cancel their own operations; admins cancel any."""
    if principal.role == "admin":
        return True
    return principal.role == "operator" and principal.name == owner


def check_acts_as(principal: Principal, worker_id: str) -> None:
    """A worker proven by its certificate speaks only for itself (REG-05): worker-1's
    certificate cannot register, report, upload or deregister as worker-2."""
    bound = principal.bound_worker
    if bound is not None and bound != worker_id:
        raise Forbidden(f"the certificate of worker {bound} cannot act as worker {worker_id}")
