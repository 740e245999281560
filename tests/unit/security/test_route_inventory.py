"""AUTHZ-01 (reference/anchors-security.md §3 T6; OWASP API9, improper inventory): every route
of the backend and of the worker is either on an explicit public list, written here, or
guarded by one of the two auth dependencies: the backend's `require(...)` (deps.py), which
names the actions a caller must be allowed, or the worker's `_callers(...)` (worker/app.py),
which names the identities that may call. The guard is read from the route's dependency tree
(`route.dependant`), not from its path or its OpenAPI entry.

The policy tables below are the inventory: a new route fails the test until it is added here,
with its guard, on purpose. No sockets: the apps are built and inspected, never served."""

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import pytest
from fastapi import APIRouter, Depends, FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from workfleet.backend.app import create_app
from workfleet.backend.deps import require
from workfleet.domain.permissions import ALLOWED, Action, Principal, Role
from workfleet.settings import BackendSettings, WorkerSettings
from workfleet.store.memory import MemoryStore
from workfleet.worker.app import _callers, create_worker_app

SECRET = "inventory-cluster-secret-0123456789abcdefghij"
Route = tuple[str, str]  # (method, path)

# Public on purpose, and why.
BACKEND_PUBLIC: dict[Route, str] = {
    ("GET", "/health"): "liveness for load balancers; says nothing about the fleet",
    ("POST", "/api/v1/enroll"): "mtls enrollment: the one-time bootstrap token in the body is "
    "the credential (a worker has no certificate yet)",
    ("GET", "/ui"): "the dashboard's page: static, no data (its script calls the API with the "
    "viewer's own key)",
    ("GET", "/ui/{name}"): "the dashboard's listed static files, nothing else of the package",
}
WORKER_PUBLIC: dict[Route, str] = {
    ("GET", "/livez"): "says only that the process answers",
}

# Backend: route -> the actions `require(...)` accepts (any one of them suffices).
BACKEND_GUARDS: dict[Route, frozenset[Action]] = {
    ("GET", "/api/v1/operations"): frozenset({"read"}),
    ("GET", "/api/v1/operations/{operation_id}"): frozenset({"read"}),
    ("GET", "/api/v1/operations/{operation_id}/artifacts"): frozenset({"read"}),
    ("GET", "/api/v1/workers"): frozenset({"read"}),
    ("GET", "/api/v1/workers/{worker_id}"): frozenset({"read"}),
    ("GET", "/api/v1/datasets"): frozenset({"read"}),
    ("GET", "/api/v1/openapi.json"): frozenset({"read"}),
    ("GET", "/api/v1/stats"): frozenset({"read"}),
    # workers fetch inputs and checkpoints with the cluster secret, clients with a key
    ("GET", "/api/v1/operations/{operation_id}/artifacts/{name}"): frozenset({"read", "report"}),
    ("GET", "/api/v1/datasets/{symbol}/{timeframe}"): frozenset({"read", "report"}),
    ("GET", "/api/v1/datasets/{symbol}/{timeframe}/content"): frozenset({"read", "report"}),
    ("POST", "/api/v1/operations"): frozenset({"submit"}),
    ("POST", "/api/v1/operations/batch"): frozenset({"submit"}),
    ("POST", "/api/v1/backtests/start"): frozenset({"submit"}),
    ("POST", "/api/v1/training/start"): frozenset({"submit"}),
    ("PUT", "/api/v1/datasets/{symbol}/{timeframe}"): frozenset({"submit"}),
    ("POST", "/api/v1/operations/{operation_id}/cancel"): frozenset({"cancel"}),
    ("POST", "/api/v1/workers/{worker_id}/undrain"): frozenset({"manage_workers"}),
    # a worker drains and deregisters itself on SIGTERM
    ("POST", "/api/v1/workers/{worker_id}/drain"): frozenset({"manage_workers", "report"}),
    ("DELETE", "/api/v1/workers/{worker_id}"): frozenset({"manage_workers", "report"}),
    ("GET", "/api/v1/keys"): frozenset({"manage_keys"}),
    ("POST", "/api/v1/keys"): frozenset({"manage_keys"}),
    ("POST", "/api/v1/keys/{key_id}/revoke"): frozenset({"manage_keys"}),
    ("POST", "/api/v1/workers/register"): frozenset({"report"}),
    ("GET", "/api/v1/workers/{worker_id}/session"): frozenset({"report"}),
    ("POST", "/api/v1/workers/{worker_id}/reports"): frozenset({"report"}),
    ("POST", "/api/v1/operations/{operation_id}/progress"): frozenset({"report"}),
    ("POST", "/api/v1/operations/{operation_id}/complete"): frozenset({"report"}),
    ("PUT", "/api/v1/operations/{operation_id}/artifacts/{name}"): frozenset({"report"}),
    ("POST", "/api/v1/workers/{worker_id}/certificate"): frozenset({"report"}),
    ("GET", "/metrics"): frozenset({"scrape"}),
    ("GET", "/api/v1/prometheus/targets"): frozenset({"scrape"}),  # Prometheus HTTP SD
    ("GET", "/api/v1/audit"): frozenset({"audit"}),
}

# Worker: route -> the identities `_callers(...)` lets in.
WORKER_GUARDS: dict[Route, frozenset[str]] = {
    ("POST", "/api/v1/operations"): frozenset({"backend"}),
    ("POST", "/api/v1/operations/batch"): frozenset({"backend"}),
    ("POST", "/api/v1/operations/{operation_id}/cancel"): frozenset({"backend"}),
    ("GET", "/api/v1/operations/{operation_id}"): frozenset({"backend"}),
    ("GET", "/health"): frozenset({"backend"}),
    ("GET", "/metrics"): frozenset({"backend", "monitoring"}),
}

# The code of the closures the two guard factories return: the same for every call.
_GUARD_CODE = {
    require("read").__code__: "actions",
    _callers("backend").__code__: "kinds",
}


def _guards_in(dependant: Dependant) -> Iterator[frozenset[str]]:
    """What each auth dependency in the tree (sub-dependencies included) accepts."""
    call = dependant.call
    if call is not None and getattr(call, "__code__", None) in _GUARD_CODE:
        accepted = inspect.getclosurevars(call).nonlocals[_GUARD_CODE[call.__code__]]
        yield frozenset(accepted)
    for sub in dependant.dependencies:
        yield from _guards_in(sub)


def _route_contexts(app: FastAPI) -> Iterator[object]:
    """The app's routes, flattened: FastAPI >= 0.16x keeps included routers as lazy
    `_IncludedRouter` entries in `app.routes`; `iter_route_contexts` resolves them (with their
    prefixes and router-level dependencies)."""
    from fastapi import routing

    iterate: Callable[..., Iterator[object]] | None = getattr(routing, "iter_route_contexts", None)
    yield from (iterate(app.routes) if iterate is not None else app.routes)


def inventory(app: FastAPI) -> dict[Route, frozenset[str] | None]:
    """(method, path) -> what its guard accepts, or None for a route with no auth dependency
    (a Mount, a plain Starlette route or a websocket counts as unguarded: "*" for its
    method)."""
    found: dict[Route, frozenset[str] | None] = {}
    for route in _route_contexts(app):
        path = str(getattr(route, "path", "?"))
        dependant = getattr(route, "dependant", None)
        guards = list(_guards_in(dependant)) if dependant is not None else []
        accepted = frozenset().union(*guards) if guards else None
        methods = set(getattr(route, "methods", None) or {"*"})
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette adds HEAD to every GET route
        for method in methods:
            found[(method, path)] = accepted
    return found


def unguarded(app: FastAPI, public: dict[Route, str]) -> list[Route]:
    """Routes that are neither on the public list nor guarded by an auth dependency."""
    return sorted(
        route
        for route, accepted in inventory(app).items()
        if accepted is None and route not in public
    )


@pytest.fixture(scope="module")
def backend() -> FastAPI:
    # building the app touches no disk: data_dir is only used once it starts
    return create_app(
        BackendSettings(data_dir=Path("unused"), auth_mode="token", cluster_token=SECRET),
        store=MemoryStore(),
    )


@pytest.fixture(scope="module")
def worker() -> FastAPI:
    return create_worker_app(
        WorkerSettings(data_dir=Path("unused"), auth_mode="token", cluster_token=SECRET)
    )


def test_every_backend_route_is_public_by_name_or_guarded(backend: FastAPI) -> None:
    """AUTHZ-01: no backend route is reachable without an auth dependency unless listed."""
    assert unguarded(backend, BACKEND_PUBLIC) == []


def test_every_worker_route_is_public_by_name_or_guarded(worker: FastAPI) -> None:
    """AUTHZ-01 / WAPI: no worker route is reachable without `_callers` unless listed."""
    assert unguarded(worker, WORKER_PUBLIC) == []


def test_backend_routes_require_exactly_the_actions_of_the_policy(backend: FastAPI) -> None:
    """AUTHZ-01/02: the whole inventory, route by route; a new, removed or re-guarded route
    shows up here as a difference."""
    expected = {**BACKEND_GUARDS, **dict.fromkeys(BACKEND_PUBLIC)}
    assert inventory(backend) == expected


def test_worker_routes_let_in_exactly_the_identities_of_the_policy(worker: FastAPI) -> None:
    """WAPI-01..04 as an inventory: the worker answers the backend (and monitoring on
    /metrics) and nothing else but /livez."""
    expected = {**WORKER_GUARDS, **dict.fromkeys(WORKER_PUBLIC)}
    assert inventory(worker) == expected


def test_public_lists_name_only_routes_that_exist(backend: FastAPI, worker: FastAPI) -> None:
    """A stale public entry would silently let a future route with that name through."""
    assert set(BACKEND_PUBLIC) <= set(inventory(backend))
    assert set(WORKER_PUBLIC) <= set(inventory(worker))


def test_client_only_and_worker_only_routes_stay_apart() -> None:
    """AUTHZ-02 at the policy level, from permissions.ALLOWED: no client role reaches a worker
    callback, the cluster secret (worker) and monitoring reach no client route but /metrics
    and the worker's fetches, and only admins manage keys and read the audit log."""
    clients: set[Role] = {"viewer", "operator", "admin"}
    assert ALLOWED["read"] == clients
    for route, actions in BACKEND_GUARDS.items():
        roles: frozenset[Role] = frozenset().union(*(ALLOWED[a] for a in actions))
        assert roles, route
        if actions == {"report"}:
            assert roles == {"worker"}, route
        if not actions & {"report", "scrape"}:
            assert roles <= clients, route
        if actions & {"manage_keys", "audit"}:
            assert roles == {"admin"}, route


def test_a_route_added_to_the_backend_without_auth_is_caught() -> None:
    """AUTHZ-01 against the real app: one more router, one unguarded route, one finding."""
    app = create_app(
        BackendSettings(data_dir=Path("unused"), auth_mode="token", cluster_token=SECRET),
        store=MemoryStore(),
    )
    extra = APIRouter(prefix="/api/v1")

    @extra.get("/operations/{operation_id}/debug")
    async def debug(operation_id: str) -> dict[str, str]:
        return {"operation_id": operation_id}

    app.include_router(extra)
    assert unguarded(app, BACKEND_PUBLIC) == [("GET", "/api/v1/operations/{operation_id}/debug")]


def test_the_checker_flags_a_route_added_without_auth() -> None:
    """The inventory test above would fail for an unguarded route: a tiny app with one route
    per way of getting this wrong, and one guarded route as a control."""
    app = FastAPI()
    router = APIRouter(prefix="/api/v1")
    own_bearer = HTTPBearer(auto_error=False)

    @router.get("/leak")
    async def leak() -> dict[str, str]:
        return {}

    @router.get("/declared-only")  # a bearer scheme in the schema is no check of the caller
    async def declared_only(
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(own_bearer)],
    ) -> dict[str, str]:
        return {}

    async def nested(caller: Annotated[Principal, Depends(require("read"))]) -> str:
        return caller.name

    @router.get("/guarded")
    async def guarded(_: Annotated[Principal, Depends(require("read"))]) -> dict[str, str]:
        return {}

    @router.get("/guarded-deeper")  # the guard inside another dependency still counts
    async def guarded_deeper(_: Annotated[str, Depends(nested)]) -> dict[str, str]:
        return {}

    app.include_router(router)
    app.add_api_websocket_route("/ws", lambda websocket: None)  # no dependant at all

    assert unguarded(app, {}) == [
        ("*", "/ws"),
        ("GET", "/api/v1/declared-only"),
        ("GET", "/api/v1/leak"),
        # FastAPI's defaults, which our apps turn off: turning them on again is caught too
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/openapi.json"),
        ("GET", "/redoc"),
    ]
    assert inventory(app)[("GET", "/api/v1/guarded-deeper")] == frozenset({"read"})
    assert ("GET", "/api/v1/declared-only") in unguarded(
        app, {("GET", "/api/v1/leak"): "listed", ("*", "/ws"): "listed"}
    )
    assert ("GET", "/api/v1/leak") not in unguarded(app, {("GET", "/api/v1/leak"): "listed"})
