"""AUTHZ-07 (reference/anchors-security.md §3 T6, §0 item 13, §4.8): the backend's OpenAPI
document declares HTTPBearer on every protected operation and on no public one, and a
schemathesis run against the app in-process (ASGI, no sockets) finds no 5xx on any operation
and no operation that ignores the auth it declares.

The backend serves no public /openapi.json (`openapi_url=None`): the schema is built with
`app.openapi()` and handed to schemathesis with `from_dict`; requests go to the app through
schemathesis' ASGI transport, which also runs its lifespan (in schemathesis' own event-loop
thread). A MemoryStore holds the keys; a gateway that reaches no worker keeps the fuzzer's
registrations off the network."""

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import pytest
import schemathesis
from fastapi import Depends, FastAPI
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import ignored_auth

from fakes import NoFleet
from workfleet.backend.app import create_app
from workfleet.backend.auth import create_key
from workfleet.backend.orchestrator import utc_now
from workfleet.settings import BackendSettings
from workfleet.store.memory import MemoryStore

CLUSTER_SECRET = "fuzz-cluster-secret-0123456789abcdefghijklmnop"
PUBLIC = {("GET", "/health"), ("POST", "/api/v1/enroll")}  # same list as test_route_inventory
MAX_EXAMPLES = 20  # per operation and caller: the whole module runs in well under 60 s
REQUEST_TIMEOUT_S = 10.0


def backend_app(data_dir: Path) -> tuple[FastAPI, str]:
    """A token-mode backend on a MemoryStore, and an admin API key made in that store."""
    store = MemoryStore()
    settings = BackendSettings(
        data_dir=data_dir,
        auth_mode="token",
        cluster_token=CLUSTER_SECRET,
        # `ignored_auth` re-sends every 2xx with a wrong credential, all from one address: the
        # failed-authentication throttle (REG-16, its own tests) would soon answer 429 to all
        auth_failure_limit=1_000_000,
    )
    app = create_app(settings, store=store, gateway=NoFleet())
    _, raw = asyncio.run(create_key(store, "fuzz-admin", "admin", utc_now))
    return app, raw


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, methods in schema["paths"].items():
        for method, spec in methods.items():
            yield method.upper(), path, spec


def test_protected_operations_declare_bearer_security_and_public_ones_do_not(
    tmp_path: Path,
) -> None:
    """AUTHZ-07 companion (§0 item 13): `ignored_auth` can only test what the schema declares."""
    app, _ = backend_app(tmp_path)
    schema = app.openapi()
    scheme = schema["components"]["securitySchemes"]["HTTPBearer"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    found = set()
    for method, path, spec in operations(schema):
        found.add((method, path))
        if (method, path) in PUBLIC:
            assert "security" not in spec, f"public {method} {path} declares security"
        else:
            assert spec.get("security") == [{"HTTPBearer": []}], f"{method} {path} declares none"
    assert ("GET", "/health") in found


def fuzz_operation(
    schema: BaseSchema, method: str, path: str, credential: str
) -> dict[bool, set[int]]:
    """Valid and invalid requests for one operation, sent with `credential`; fails on a 5xx
    (`not_a_server_error`) and on declared auth that is not enforced (`ignored_auth`: each
    2xx is sent again without and with a wrong credential, which must be refused). Returns the
    statuses seen, by whether the request carried the credential (negative cases may drop it:
    the schema requires it)."""
    operation = schema[path][method]
    seen: dict[bool, set[int]] = {True: set(), False: set()}

    @given(
        case=st.one_of(
            operation.as_strategy(GenerationMode.POSITIVE),
            operation.as_strategy(GenerationMode.NEGATIVE),
        )
    )
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def fuzz(case: Case[Any]) -> None:
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {credential}"},
            checks=[not_a_server_error, ignored_auth],
            timeout=REQUEST_TIMEOUT_S,  # a request that hangs fails instead of stalling the run
        )
        seen["Authorization" in response.request.headers].add(response.status_code)

    fuzz()
    return seen


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BaseSchema, str]]:
    """The schema bound to one live app (its lifespan runs in schemathesis' loop thread, for
    the whole module), and that app's admin key."""
    app, admin_key = backend_app(tmp_path_factory.mktemp("fuzz"))
    schema = schemathesis.openapi.from_dict(app.openapi())
    schema.app = app
    try:
        yield schema, admin_key
    finally:
        shutdown_lifespans()  # stops the app's background loops and closes its audit log


def fuzz_cases() -> list[Any]:
    """(caller, method, path) for every operation of the app, known at collection time from a
    throwaway app (building one touches no disk), less the exclusions below."""
    app = create_app(
        BackendSettings(data_dir=Path("unused"), cluster_token=CLUSTER_SECRET),
        store=MemoryStore(),
        gateway=NoFleet(),
    )
    found = sorted((method, path) for method, path, _ in operations(app.openapi()))
    return [
        pytest.param(caller, method, path, id=f"{caller}-{method}-{path}")
        for caller in ("admin", "worker")
        for method, path in found
        if (caller, method, path) not in EXCLUDED_FOR.get(caller, set())
    ]


# Operations the fuzzer leaves out, and why.
EXCLUDED_FOR = {
    # With the cluster secret, a session to a worker id the fuzzer registered is held open for
    # as long as the worker lives (by design, the backend's liveness signal); an admin gets 403.
    "worker": {
        ("worker", "GET", "/api/v1/workers/{worker_id}/session"),
    },
}


@pytest.mark.parametrize(("caller", "method", "path"), fuzz_cases())
def test_no_operation_answers_a_valid_caller_with_a_server_error(
    fuzzed: tuple[BaseSchema, str], caller: str, method: str, path: str
) -> None:
    """AUTHZ-07: whatever an admin (API key) or a worker (cluster secret) sends, valid or not,
    gets a 2xx or a 4xx, never a 5xx; an operation that declares auth refuses the same request
    without a credential or with a wrong one. A valid credential is never answered 401, a
    missing one always is."""
    schema, admin_key = fuzzed
    credential = {"admin": admin_key, "worker": CLUSTER_SECRET}[caller]
    seen = fuzz_operation(schema, method, path, credential)
    assert seen[True], "no request carried the credential"
    assert 401 not in seen[True], f"{caller}'s valid credential was refused as invalid"
    assert seen[False] <= {401}, "a request without a credential was not refused with 401"


def test_the_fuzzer_flags_an_operation_that_declares_auth_but_ignores_it() -> None:
    """The check above would catch a route whose security is only declared: a canary app with
    HTTPBearer in its schema that answers 200 without any credential."""
    canary = FastAPI()
    declared_only = HTTPBearer(auto_error=False)

    @canary.get("/items")
    async def items(
        _: Annotated[HTTPAuthorizationCredentials | None, Depends(declared_only)],
    ) -> list[int]:
        return [1]

    schema = schemathesis.openapi.from_dict(canary.openapi())
    schema.app = canary
    with pytest.raises(FailureGroup, match="API accepts requests without authentication"):
        fuzz_operation(schema, "GET", "/items", "any-token")
