"""FastAPI dependencies: the orchestrator, and callers authorized for one action each."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from workfleet.backend.auth import LOCAL, Authenticator
from workfleet.backend.orchestrator import Orchestrator
from workfleet.domain.errors import Forbidden, Unauthenticated
from workfleet.domain.permissions import Action, Principal, allowed

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
            credentials.credentials if credentials else None
        )
        if principal is None:
            raise Unauthenticated("missing or invalid credential")
        if not any(allowed(principal, action) for action in actions):
            wanted = " or ".join(a.replace("_", " ") for a in actions)
            raise Forbidden(f"the {principal.role} role may not {wanted}")
        return principal

    return authorize


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
