"""Who may do what, over real sockets against a real backend process
(reference/anchors-security.md §3 T6):

- AUTHZ-02: a caller x route table of expected statuses, in token mode (API keys and the
  cluster secret) and in mtls mode (certificate identities): 401 for a missing or invalid
  credential, 403 for an authenticated caller without the permission, the route's own answer
  (2xx, or a 4xx that is not about auth) for an allowed one (anchors §0 item 5; DESIGN §5).
- AUTHZ-03 (BOLA): an operator cannot cancel another operator's operation.
- AUTHZ-04 (BOPLA): a submit cannot set `owner`, `worker_id`, `lease` and the like, and no
  response carries a key's secret or hash, or an operation's lease.

One route stands for each action of domain/permissions.py; the unit inventory
(tests/unit/security/test_route_inventory.py) maps every route to its action.
"""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import pytest_asyncio

from workfleet.harness.cluster import Cluster
from workfleet.protocol import WorkerRegistration
from workfleet.security.identity import Identity
from workfleet.security.tls import client_context
from workfleet.settings import TlsPaths

pytestmark = pytest.mark.asyncio(loop_scope="module")  # one token-mode backend for the module

NOOP = {"operation_type": "diagnostic", "params": {"action": "noop"}}
MISSING = "op_does_not_exist"


def registration(worker_id: str, scheme: str = "http") -> dict[str, Any]:
    """No operation types: nothing is ever dispatched to this worker's (dead) address."""
    return WorkerRegistration(
        worker_id=worker_id,
        worker_type="backtesting",
        endpoint_url=f"{scheme}://127.0.0.1:9",
        operation_types=[],
        instance_id=f"i-{worker_id}",
    ).model_dump(mode="json")


# One route per action: (method, path, JSON body).
ROUTES: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    "read": ("GET", "/api/v1/operations", None),
    "submit": ("POST", "/api/v1/operations", NOOP),
    "cancel": ("POST", f"/api/v1/operations/{MISSING}/cancel", None),
    "manage_workers": ("POST", "/api/v1/workers/nobody/undrain", None),
    "manage_keys": ("GET", "/api/v1/keys", None),
    "report": ("POST", "/api/v1/workers/register", registration("matrix-probe")),
    "scrape": ("GET", "/metrics", None),
    "audit": ("GET", "/api/v1/audit", None),
}

# Token mode. Allowed callers get the route's own answer: 404 where the target does not
# exist (cancel of an unknown operation, undrain of an unknown worker), which shows the caller
# got past the auth check.
TOKEN_CALLERS = ("anonymous", "bad key", "bad secret", "viewer", "operator", "admin", "worker")
# fmt: off
TOKEN_MATRIX: dict[str, tuple[int, ...]] = {
    #                 anonymous  bad key  bad secret  viewer  operator  admin  worker
    "read":           (401,      401,     401,        200,    200,      200,   403),
    "submit":         (401,      401,     401,        403,    202,      202,   403),
    "cancel":         (401,      401,     401,        403,    404,      404,   403),
    "manage_workers": (401,      401,     401,        403,    403,      404,   403),
    "manage_keys":    (401,      401,     401,        403,    403,      200,   403),
    "report":         (401,      401,     401,        403,    403,      403,   200),
    "scrape":         (401,      401,     401,        200,    200,      200,   200),
    "audit":          (401,      401,     401,        403,    403,      200,   403),
}
# fmt: on

# mtls mode, certificate identities only (no API key). "anonymous" is TLS without a client
# certificate: the backend lets it connect (API keys still work over TLS) and answers 401.
MTLS_ROUTES = ("read", "submit", "report", "scrape")
MTLS_CALLERS = ("anonymous", "worker", "viewer", "operator", "admin", "monitoring")
# fmt: off
MTLS_MATRIX: dict[str, tuple[int, ...]] = {
    #          anonymous  worker  viewer  operator  admin  monitoring
    "read":    (401,      403,    200,    200,      200,   403),
    "submit":  (401,      403,    403,    202,      202,   403),
    "report":  (401,      200,    403,    403,      403,   403),
    "scrape":  (401,      200,    200,    200,      200,   200),
}
# fmt: on


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def table(statuses: dict[str, dict[str, int]], callers: tuple[str, ...]) -> str:
    """The table as a reader would write it, for failure messages."""
    rows = [f"{'':16}" + "".join(f"{c:>12}" for c in callers)]
    for action, by_caller in statuses.items():
        rows.append(f"{action:16}" + "".join(f"{by_caller[c]:>12}" for c in callers))
    return "\n".join(rows)


def expected_column(
    matrix: dict[str, tuple[int, ...]], callers: tuple[str, ...], caller: str
) -> dict[str, int]:
    index = callers.index(caller)
    return {action: row[index] for action, row in matrix.items()}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def fleet(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Cluster]:
    """A token-mode backend (no workers) shared by the token-mode tests of this module."""
    cluster = Cluster(
        tmp_path_factory.mktemp("matrix") / "cluster",
        # the bad-credential columns fail from one address: keep the throttle (REG-16, tested
        # on its own) out of a table about roles
        backend_env={"WORKFLEET_AUTH_FAILURE_LIMIT": "1000"},
    )
    try:
        await cluster.start_backend()
        yield cluster
    finally:
        await cluster.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def keys(fleet: Cluster) -> dict[str, str]:
    """Raw API keys by role (the admin key is the cluster's own)."""
    return {
        "viewer": fleet.create_key("viewer", "vera"),
        "operator": fleet.create_key("operator", "otto"),
        "other operator": fleet.create_key("operator", "olga"),
        "admin": fleet.admin_key,
    }


@pytest_asyncio.fixture(loop_scope="module")
async def http(fleet: Cluster) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fleet.url, trust_env=False, timeout=10) as client:
        yield client


def token_credentials(fleet: Cluster, keys: dict[str, str]) -> dict[str, dict[str, str]]:
    key_id = fleet.admin_key.split(".", 1)[0]
    return {
        "anonymous": {},
        "bad key": bearer(f"{key_id}.{'A' * 43}"),  # a real key id, a wrong secret
        "bad secret": bearer("x" * 43),  # looks like a cluster secret, is not one
        "viewer": bearer(keys["viewer"]),
        "operator": bearer(keys["operator"]),
        "admin": bearer(keys["admin"]),
        "worker": bearer(fleet.token),
    }


@pytest.mark.parametrize(
    "caller",
    [
        *TOKEN_CALLERS,
        pytest.param(
            "monitoring",
            marks=pytest.mark.skip(
                reason="token mode has no monitoring credential: API keys are viewer, operator "
                "or admin, the cluster secret is the workers'; monitoring scrapes with a viewer "
                "key there, and has its own identity only in mtls (the mtls matrix below)"
            ),
        ),
    ],
)
async def test_token_mode_role_matrix(
    fleet: Cluster, keys: dict[str, str], http: httpx.AsyncClient, caller: str
) -> None:
    """AUTHZ-02, token mode: one column of TOKEN_MATRIX per run; a refusal carries
    `WWW-Authenticate: Bearer` when it is a 401."""
    headers = token_credentials(fleet, keys)[caller]
    actual: dict[str, int] = {}
    for action in ROUTES:
        method, path, body = ROUTES[action]
        response = await http.request(method, path, json=body, headers=headers)
        actual[action] = response.status_code
        if response.status_code == 401:
            assert response.headers.get("WWW-Authenticate") == "Bearer", (action, caller)
    expected = expected_column(TOKEN_MATRIX, TOKEN_CALLERS, caller)
    assert actual == expected, f"the {caller!r} column of TOKEN_MATRIX"


async def test_an_operator_cannot_cancel_another_operators_operation(
    keys: dict[str, str], http: httpx.AsyncClient
) -> None:
    """AUTHZ-03 (BOLA): operators cancel their own operations, admins any (DESIGN §5). Reads
    are not owner-scoped: every client role reads every operation by design (no tenants), so
    the refusal is 403, not 404; an unknown id is 404 for every role allowed to cancel."""
    otto, olga = bearer(keys["operator"]), bearer(keys["other operator"])
    mine = (await http.post("/api/v1/operations", json=NOOP, headers=otto)).json()
    cancel = f"/api/v1/operations/{mine['operation_id']}/cancel"

    refused = await http.post(cancel, headers=olga)
    by_viewer = await http.post(cancel, headers=bearer(keys["viewer"]))
    untouched = (await http.get(f"/api/v1/operations/{mine['operation_id']}", headers=olga)).json()
    own = await http.post(cancel, headers=otto)

    assert mine["owner"] == "otto"
    assert refused.status_code == 403
    assert "only their own" in refused.json()["detail"]
    assert by_viewer.status_code == 403
    assert untouched["cancel_requested_at"] is None
    assert untouched["status"] not in ("cancelled", "cancelling")
    assert own.status_code in (200, 202)
    theirs = (await http.post("/api/v1/operations", json=NOOP, headers=olga)).json()
    by_admin = await http.post(
        f"/api/v1/operations/{theirs['operation_id']}/cancel", headers=bearer(keys["admin"])
    )
    assert by_admin.status_code in (200, 202)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("owner", "mallory"),
        ("worker_id", "w1"),
        ("lease", {"attempt": 1, "token": "t" * 16}),
        ("status", "completed"),
        ("attempt", 7),
        ("quota", 1000),
    ],
)
async def test_a_submit_cannot_set_fields_the_server_owns(
    keys: dict[str, str], http: httpx.AsyncClient, field: str, value: object
) -> None:
    """AUTHZ-04 (mass assignment): unknown fields are refused (422, naming the field), and
    nothing is created."""
    operator = bearer(keys["operator"])
    before = (await http.get("/api/v1/operations", headers=operator, params={"limit": 500})).json()
    response = await http.post("/api/v1/operations", json={**NOOP, field: value}, headers=operator)
    after = (await http.get("/api/v1/operations", headers=operator, params={"limit": 500})).json()
    assert response.status_code == 422
    assert [(e["type"], e["loc"][-1]) for e in response.json()["detail"]] == [
        ("extra_forbidden", field)
    ]
    assert len(after["items"]) == len(before["items"])


async def test_the_legacy_start_routes_cannot_set_the_owner_either(
    keys: dict[str, str], http: httpx.AsyncClient
) -> None:
    """AUTHZ-04: the seed-compatible routes take the whole body as parameters; an `owner` there
    is an unknown parameter of the operation type, refused, never the operation's owner."""
    response = await http.post(
        "/api/v1/backtests/start",
        json={
            "symbol": "BTCUSDT",
            "timeframe": "1h",
            "strategy": "sma_crossover",
            "owner": "mallory",
        },
        headers=bearer(keys["operator"]),
    )
    assert response.status_code == 422, response.text
    assert "owner" in response.text


async def test_responses_carry_no_key_secret_or_hash_and_no_lease(
    fleet: Cluster, keys: dict[str, str], http: httpx.AsyncClient
) -> None:
    """AUTHZ-04 (excessive data exposure): a key's raw value is shown once, at creation; the
    listing has names and roles only; operation views carry no lease (the worker's proof)."""
    admin = bearer(keys["admin"])
    created = await http.post(
        "/api/v1/keys", json={"name": "shown-once", "role": "viewer"}, headers=admin
    )
    listing = await http.get("/api/v1/keys", headers=admin)
    ops = await http.get("/api/v1/operations", headers=admin)

    assert created.status_code == 201 and created.json()["key"].startswith("wf_")
    assert listing.status_code == 200
    for item in listing.json()["items"]:
        assert set(item) == {"key_id", "name", "role", "created_at", "revoked_at"}
    secrets = [raw.split(".", 1)[1] for raw in (*keys.values(), created.json()["key"])]
    for secret in secrets:
        assert secret not in listing.text
    lowered = listing.text.lower()
    assert "sha256" not in lowered and "hash" not in lowered and "secret" not in lowered
    assert ops.status_code == 200 and ops.json()["items"]
    for view in ops.json()["items"]:
        assert "lease" not in view and "token" not in view
    assert fleet.token not in ops.text


# ---- mtls -------------------------------------------------------------------------------------


@pytest_asyncio.fixture(loop_scope="module")
async def mtls_fleet(tmp_path: Path) -> AsyncIterator[Cluster]:
    cluster = Cluster(tmp_path / "mtls", auth_mode="mtls")
    try:
        await cluster.start_backend()
        yield cluster
    finally:
        await cluster.stop()


async def test_mtls_role_matrix(mtls_fleet: Cluster) -> None:
    """AUTHZ-02, mtls mode: the identity in the caller's certificate decides (worker, client
    with the role it was issued with, monitoring), on the backend's read, submit, register
    and /metrics."""
    identities: dict[str, TlsPaths | None] = {
        "anonymous": None,
        "worker": mtls_fleet.issue(Identity("worker", "w1")),
        "viewer": mtls_fleet.issue(Identity("client", "dash"), role="viewer"),
        "operator": mtls_fleet.issue(Identity("client", "ops-bot"), role="operator"),
        "admin": mtls_fleet.issue(Identity("client", "root"), role="admin"),
        "monitoring": mtls_fleet.issue(Identity("monitoring")),
    }
    routes = {**ROUTES, "report": ("POST", "/api/v1/workers/register", registration("w1", "https"))}
    actual: dict[str, dict[str, int]] = {action: {} for action in MTLS_ROUTES}
    for caller, identity in identities.items():
        async with httpx.AsyncClient(
            base_url=mtls_fleet.url,
            verify=client_context(mtls_fleet.ca_file, identity),
            trust_env=False,
            timeout=10,
        ) as http:
            for action in MTLS_ROUTES:
                method, path, body = routes[action]
                actual[action][caller] = (await http.request(method, path, json=body)).status_code
    expected = {
        action: dict(zip(MTLS_CALLERS, row, strict=True)) for action, row in MTLS_MATRIX.items()
    }
    assert actual == expected, (
        f"actual:\n{table(actual, MTLS_CALLERS)}\nexpected:\n{table(expected, MTLS_CALLERS)}"
    )
