"""FastAPI dependencies: the orchestrator, and callers authorized for one action each."""

import math
import time
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from workfleet.backend.auth import LOCAL, Authenticator
from workfleet.backend.orchestrator import AuditTrail, Orchestrator
from workfleet.domain.audit import actor_of
from workfleet.domain.errors import Forbidden, Throttled, Unauthenticated
from workfleet.domain.permissions import Action, Principal, allowed
from workfleet.domain.throttle import FailureThrottle

bearer = HTTPBearer(auto_error=False, description="an API key, or the cluster secret (workers)")


async def get_orchestrator(request: Request) -> Orchestrator:  # async: no threadpool hop
    orchestrator: Orchestrator = request.app.state.orchestrator
    return orchestrator


def require(*actions: Action) -> Callable[..., Awaitable[Principal]]:
    """A caller allowed at least one of `actions`."""

    async def authorize(
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        authenticator: Authenticator = request.app.state.authenticator
        if authenticator.mode == "none":
            return LOCAL
        principal = await authenticator.authenticate(
            credentials.credentials if credentials else None,
            getattr(request.state, "peer", None),  # mtls: set per connection (security/tls.py)
        )
        if principal is None:
            if credentials is not None:  # a wrong credential, not just a missing one
                check_not_throttled(request)
                note_failed_attempt(request)
            _note_denied(request, "anonymous", "401")
            raise Unauthenticated("missing or invalid credential")
        if not any(allowed(principal, action) for action in actions):
            _note_denied(request, actor_of(principal), "403")
            wanted = " or ".join(a.replace("_", " ") for a in actions)
            raise Forbidden(f"the {principal.role} role may not {wanted}")
        return principal

    return authorize


def _source(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def check_not_throttled(request: Request) -> None:
    """429 for a failed attempt from an address that failed too often lately (REG-16). Only
    failures are held off: a valid credential from the same address (a worker behind the same
    NAT as a guesser) always gets in, so a guesser cannot lock others out."""
    throttle: FailureThrottle = request.app.state.throttle
    wait = throttle.retry_after(_source(request), time.monotonic())
    if wait is not None:
        _note_denied(request, f"address:{_source(request)}", "429")
        raise Throttled(max(1, math.ceil(wait)))


def note_failed_attempt(request: Request) -> None:
    throttle: FailureThrottle = request.app.state.throttle
    throttle.failed(_source(request), time.monotonic())


def _note_denied(request: Request, actor: str, status: str) -> None:
    """Refused attempts are part of the record (who knocked, on which door)."""
    audit: AuditTrail | None = getattr(request.app.state, "audit", None)
    if audit is not None:
        audit.note(actor, "auth.denied", f"{request.method} {request.url.path}", status)


OrchestratorDep = Annotated[Orchestrator, Depends(get_orchestrator)]
Reader = Annotated[Principal, Depends(require("read"))]
Submitter = Annotated[Principal, Depends(require("submit"))]
Canceller = Annotated[Principal, Depends(require("cancel"))]
WorkerAdmin = Annotated[Principal, Depends(require("manage_workers"))]
KeyAdmin = Annotated[Principal, Depends(require("manage_keys"))]
WorkerCaller = Annotated[Principal, Depends(require("report"))]
# datasets, checkpoints and models: workers fetch them with the cluster secret, clients with a key
Fetcher = Annotated[Principal, Depends(require("read", "report"))]
Scraper = Annotated[Principal, Depends(require("scrape"))]
# A worker may drain or deregister (itself, on SIGTERM); token mode cannot tell workers apart.
DrainCaller = Annotated[Principal, Depends(require("manage_workers", "report"))]


def check_holds(caller: Principal, orchestrator: Orchestrator, operation_id: str) -> None:
    """A worker proven by its certificate reports and uploads only for the operations it holds
    (BOLA); token mode has only the lease to go by. Not running at all: the lease check says
    409."""
    bound = caller.bound_worker
    if bound is not None and orchestrator.assigned_worker(operation_id) not in (bound, None):
        raise Forbidden(f"operation {operation_id} is not running on worker {bound}")
