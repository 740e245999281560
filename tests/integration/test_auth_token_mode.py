"""Token mode (the brief's Option A) on a real backend and a real worker: who may do what."""

import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from workfleet.harness.cluster import Cluster, free_port, wait_for

REGISTRATION = {
    "worker_id": "probe",
    "worker_type": "backtesting",
    "endpoint_url": "http://127.0.0.1:9",
    "operation_types": ["diagnostic"],
    "instance_id": "i-1",
}
NOOP = {"operation_type": "diagnostic", "params": {"action": "noop"}}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def http(cluster: Cluster):
    async with httpx.AsyncClient(base_url=cluster.url, trust_env=False) as client:
        yield client


async def test_only_backend_health_is_public(cluster: Cluster, http: httpx.AsyncClient) -> None:
    assert (await http.get("/health")).status_code == 200
    for method, path in [
        ("GET", "/api/v1/operations"),
        ("POST", "/api/v1/operations"),
        ("GET", "/api/v1/workers"),
        ("POST", "/api/v1/workers/register"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/keys"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/backtests/start"),
    ]:
        response = await http.request(method, path, json={})
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_a_wrong_credential_looks_exactly_like_a_missing_one(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    missing = await http.get("/api/v1/operations")
    for token in (
        "x" * 43,
        cluster.token[:-1] + ("B" if cluster.token.endswith("A") else "A"),
        "wf_abc.def",
        "wf_" + cluster.admin_key[3:-2],
    ):
        wrong = await http.get("/api/v1/operations", headers=bearer(token))
        assert (wrong.status_code, wrong.json()) == (missing.status_code, missing.json())


async def test_the_cluster_secret_registers_workers_but_cannot_act_as_a_client(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    worker = bearer(cluster.token)
    assert (
        await http.post("/api/v1/workers/register", json=REGISTRATION, headers=worker)
    ).status_code == 200
    assert (await http.post("/api/v1/operations", json=NOOP, headers=worker)).status_code == 403
    assert (await http.get("/api/v1/operations", headers=worker)).status_code == 403
    assert (await http.get("/api/v1/keys", headers=worker)).status_code == 403
    admin = bearer(cluster.admin_key)
    assert (
        await http.post("/api/v1/workers/register", json=REGISTRATION, headers=admin)
    ).status_code == 403


async def test_roles_viewer_operator_admin(cluster: Cluster, http: httpx.AsyncClient) -> None:
    viewer = bearer(cluster.create_key("viewer", "vera"))
    operator = bearer(cluster.create_key("operator", "otto"))
    admin = bearer(cluster.admin_key)
    assert (await http.get("/api/v1/operations", headers=viewer)).status_code == 200
    assert (await http.post("/api/v1/operations", json=NOOP, headers=viewer)).status_code == 403
    mine = (await http.post("/api/v1/operations", json=NOOP, headers=operator)).json()
    assert mine["owner"] == "otto"
    theirs = (await http.post("/api/v1/operations", json=NOOP, headers=admin)).json()
    cancel = "/api/v1/operations/{}/cancel"
    assert (await http.post(cancel.format(mine["operation_id"]), headers=viewer)).status_code == 403
    assert (
        await http.post(cancel.format(theirs["operation_id"]), headers=operator)
    ).status_code == 403
    assert (
        await http.post(cancel.format(mine["operation_id"]), headers=operator)
    ).status_code == 200
    assert (
        await http.post(cancel.format(theirs["operation_id"]), headers=admin)
    ).status_code == 200
    assert (await http.get("/api/v1/keys", headers=operator)).status_code == 403
    assert (await http.post("/api/v1/workers/x/drain", headers=operator)).status_code == 403
    assert (await http.get("/api/v1/keys", headers=admin)).status_code == 200
    assert (await http.get("/metrics", headers=viewer)).status_code == 200


async def test_a_key_revoked_offline_is_refused_by_the_running_backend(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    key = cluster.create_key("viewer", "temp")
    assert (await http.get("/api/v1/operations", headers=bearer(key))).status_code == 200
    key_id = key[3:].split(".", 1)[0]
    subprocess.run(
        [sys.executable, "-m", "workfleet", "keys", "revoke", key_id],
        env=cluster._env({}),
        check=True,
        capture_output=True,
        timeout=60,
    )

    async def refused() -> bool:
        return (await http.get("/api/v1/operations", headers=bearer(key))).status_code == 401

    await wait_for(refused, timeout_s=5, what="the revocation to take effect")


async def test_a_worker_refuses_calls_without_the_cluster_secret(cluster: Cluster) -> None:
    process = await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    dispatch = {
        "operation_id": "op_x",
        "operation_type": "diagnostic",
        "params": {},
        "lease": {"attempt": 1, "token": "t" * 16},
    }
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{process.port}", trust_env=False
    ) as http:
        assert (await http.get("/livez")).status_code == 200
        for headers in ({}, bearer("x" * 43), bearer(cluster.admin_key)):
            assert (
                await http.post("/api/v1/operations", json=dispatch, headers=headers)
            ).status_code == 401
            assert (await http.get("/health", headers=headers)).status_code == 401
            assert (await http.get("/metrics", headers=headers)).status_code == 401
        assert (await http.get("/health", headers=bearer(cluster.token))).status_code == 200


async def test_every_protected_route_declares_its_security_in_openapi(
    cluster: Cluster, http: httpx.AsyncClient
) -> None:
    schema = (await http.get("/api/v1/openapi.json", headers=bearer(cluster.admin_key))).json()
    # enrollment's credential is the one-time bootstrap token in its body (mtls mode only)
    public = {"/health", "/api/v1/enroll"}
    for path, methods in schema["paths"].items():
        for method, spec in methods.items():
            if path in public:
                assert "security" not in spec
            else:
                assert spec.get("security"), f"{method.upper()} {path} declares no security"


async def test_no_secret_appears_in_any_log(cluster: Cluster) -> None:
    await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "noop"})
        await client.wait(op.operation_id, timeout_s=30)
    secret_part = cluster.admin_key.split(".", 1)[1]
    for process in [cluster.backend, *cluster.workers.values()]:
        assert process is not None
        log = process.log()
        assert log, f"{process.name} logged nothing"
        assert cluster.token not in log and secret_part not in log


async def test_secrets_rotate_with_an_overlap(tmp_path: Path) -> None:
    """Mid-rotation: the backend sends the new secret, the worker still sends the old one; both
    accept both, so nothing stops."""
    old = "old-secret-for-rotation-test-0000000000"
    new = "new-secret-for-rotation-test-1111111111"
    fleet = Cluster(tmp_path / "rotating", backend_env={"WORKFLEET_CLUSTER_TOKEN": f"{new},{old}"})
    fleet.token = f"{old},{new}"
    try:
        await fleet.start_backend()
        await fleet.start_worker("w1")
        await fleet.wait_workers("w1")
        async with fleet.client() as client:
            op = await client.submit("diagnostic", {"action": "noop"})
            assert (await client.wait(op.operation_id, timeout_s=30)).status == "completed"
            assert (await client.worker("w1")).consecutive_failures == 0
    finally:
        await fleet.stop()


def _backend_exit(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", **env_extra}
    return subprocess.run(
        [sys.executable, "-m", "workfleet", "backend", "--port", str(free_port()), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_backend_refuses_to_start_without_a_strong_secret(tmp_path: Path) -> None:
    for token_env in (
        {},
        {"WORKFLEET_CLUSTER_TOKEN": "short"},
        {"WORKFLEET_CLUSTER_TOKEN": "changeme"},
    ):
        done = _backend_exit({"WORKFLEET_DATA_DIR": str(tmp_path), **token_env})
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert "cluster secret" in done.stderr


def test_auth_mode_none_refuses_a_non_loopback_bind(tmp_path: Path) -> None:
    done = _backend_exit(
        {"WORKFLEET_DATA_DIR": str(tmp_path)}, "--auth-mode", "none", "--host", "0.0.0.0"
    )
    assert done.returncode == 2
    assert "loopback" in done.stderr and "Traceback" not in done.stderr


async def test_an_address_guessing_credentials_is_held_off_with_429(tmp_path: Path) -> None:
    """REG-16: after the limit of wrong credentials, further wrong ones get 429 (Retry-After),
    while a right one from the same address still gets in: a guesser locks nobody out."""
    fleet = Cluster(tmp_path / "throttled", backend_env={"WORKFLEET_AUTH_FAILURE_LIMIT": "3"})
    try:
        await fleet.start_backend()
        async with httpx.AsyncClient(base_url=fleet.url, trust_env=False) as client:
            wrong = [
                (await client.get("/api/v1/workers", headers=bearer(f"wf_nope.{i}"))).status_code
                for i in range(3)
            ]
            held = await client.get("/api/v1/workers", headers=bearer("wf_nope.again"))
            valid = await client.get("/api/v1/workers", headers=bearer(fleet.admin_key))
    finally:
        await fleet.stop()
    assert wrong == [401, 401, 401]
    assert held.status_code == 429 and int(held.headers["Retry-After"]) >= 1
    assert "too many failed attempts" in held.json()["detail"]
    assert valid.status_code == 200
