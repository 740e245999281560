"""Logs of real processes: a backend, a worker and the worker's operation processes run
operations (completed, failed, crashed), answer callers who put secrets where they do not
belong, and shut down; every line they wrote (the harness sends stdout and stderr to one file
per process) is one JSON object with an event, and no secret appears anywhere: not the cluster
token, not an API key, not a worker's bootstrap token (mtls enrollment).
"""

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from workfleet.harness.cluster import Cluster

OPERATIONS = [
    {"action": "noop"},
    {"action": "sleep", "seconds": 0.3, "steps": 3},
    {"action": "fail", "payload": "why"},
    {"action": "crash"},
]


@dataclass
class Logs:
    lines: dict[str, list[dict[str, Any]]]  # process -> its lines, parsed
    text: str  # everything, as written
    secrets: dict[str, str]
    operation_ids: list[str]

    def events(self, process: str, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines[process] if line["event"] == event]


def _read(cluster: Cluster) -> tuple[dict[str, list[dict[str, Any]]], str]:
    processes = [p for p in [cluster.backend, *cluster.workers.values()] if p is not None]
    parsed: dict[str, list[dict[str, Any]]] = {}
    for process in processes:
        parsed[process.name] = []
        for number, line in enumerate(process.log().splitlines(), 1):
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{process.name} line {number} is not JSON: {line!r}")
            assert isinstance(entry, dict), f"{process.name} line {number}: {line!r}"
            assert isinstance(entry.get("event"), str) and entry["event"], line
            assert entry.get("level") and entry.get("timestamp"), line
            parsed[process.name].append(entry)
    return parsed, "".join(p.log() for p in processes)


async def _token_mode(cluster: Cluster) -> list[str]:
    await cluster.start_backend()
    await cluster.start_worker("w-log-1", slots=2)
    await cluster.wait_workers("w-log-1")
    async with cluster.client() as client:
        ops = [await client.submit("diagnostic", params) for params in OPERATIONS]
        for op in ops:
            await client.wait(op.operation_id, timeout_s=30)
    headers = {"Authorization": f"Bearer {cluster.admin_key}"}
    async with httpx.AsyncClient(base_url=cluster.url, trust_env=False, timeout=10) as http:
        # secrets where they do not belong: a query string, a wrong credential
        await http.get("/api/v1/operations", params={"token": cluster.token}, headers=headers)
        await http.get("/api/v1/workers", headers={"Authorization": f"Bearer x{cluster.token}"})
        await http.get(f"/api/v1/operations/{ops[0].operation_id}", headers=headers)
    await cluster.stop()  # the worker drains and deregisters: those lines too
    return [op.operation_id for op in ops]


@pytest.fixture(scope="module")
def token_logs(tmp_path_factory: pytest.TempPathFactory) -> Logs:
    cluster = Cluster(tmp_path_factory.mktemp("logs") / "cluster")
    try:
        operation_ids = asyncio.run(_token_mode(cluster))
    finally:
        asyncio.run(cluster.stop())
    lines, text = _read(cluster)
    secrets = {"cluster token": cluster.token, "API key": cluster.admin_key}
    return Logs(lines, text, secrets, operation_ids)


def test_every_line_is_json_with_an_event_and_no_secret(token_logs: Logs) -> None:
    assert set(token_logs.lines) == {"backend", "worker-w-log-1"}
    for name, secret in token_logs.secrets.items():
        assert secret and secret not in token_logs.text, f"the {name} is in the logs"


def test_each_process_says_who_it_is(token_logs: Logs) -> None:
    for line in token_logs.lines["backend"]:
        assert line["service"] == "backend", line
    services = {line["service"] for line in token_logs.lines["worker-w-log-1"]}
    assert services == {"worker", "executor"}  # the operation processes write there too
    for line in token_logs.lines["worker-w-log-1"]:
        assert (line["worker_id"], line["worker_type"]) == ("w-log-1", "backtesting"), line


def test_operation_lines_carry_their_ids(token_logs: Logs) -> None:
    finished = token_logs.events("backend", "operation_finished")
    assert {line["operation_id"] for line in finished} == set(token_logs.operation_ids)
    assert all(line["attempt"] >= 1 and line["worker_id"] == "w-log-1" for line in finished)
    accepted = token_logs.events("worker-w-log-1", "operation_accepted")
    assert {line["operation_id"] for line in accepted} == set(token_logs.operation_ids)
    assert all(line["attempt"] >= 1 for line in accepted)
    ran = token_logs.events("worker-w-log-1", "operation_run_finished")
    by_outcome = {line["outcome"]: line for line in ran}
    assert set(by_outcome) == {"completed", "failed"}  # the crashed one never reports
    failed = by_outcome["failed"]
    assert failed["service"] == "executor" and failed["operation_type"] == "diagnostic"
    assert failed["error_type"] == "DiagnosticFailure" and "why" in failed["error"]
    assert failed["operation_id"] == token_logs.operation_ids[2]


def test_access_lines_name_the_route_template_never_the_path(token_logs: Logs) -> None:
    access = token_logs.events("backend", "http_request")
    routes = {(line["method"], line["route"], line["status"]) for line in access}
    assert ("POST", "/api/v1/operations", 202) in routes
    assert ("GET", "/api/v1/operations", 200) in routes
    assert ("GET", "/api/v1/workers", 401) in routes
    assert ("POST", "/api/v1/workers/{worker_id}/reports", 200) in routes
    for line in access:
        assert isinstance(line["duration_s"], float) and line["request_id"], line
        assert "?" not in line["route"], line
    one = [line for line in access if line["route"] == "/api/v1/operations/{operation_id}"]
    assert token_logs.operation_ids[0] in {line.get("operation_id") for line in one}


def test_the_server_s_own_messages_are_json_too(token_logs: Logs) -> None:
    uvicorn = [
        line for line in token_logs.lines["backend"] if line.get("logger") == "uvicorn.error"
    ]
    assert any("Application startup complete" in line["event"] for line in uvicorn)


# ---- mtls: a worker enrolls with a bootstrap token -----------------------------------------------


async def _mtls_mode(cluster: Cluster) -> str:
    await cluster.start_backend()
    token = cluster.bootstrap_token("w-log-m")
    await cluster.start_worker(
        "w-log-m", issue_certificate=False, env={"WORKFLEET_BOOTSTRAP_TOKEN": token}
    )
    await cluster.wait_workers("w-log-m")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "noop"})
        await client.wait(op.operation_id, timeout_s=30)
    await cluster.stop()
    return token


def test_mtls_logs_never_show_the_bootstrap_token(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path / "cluster", auth_mode="mtls")
    try:
        token = asyncio.run(_mtls_mode(cluster))
    finally:
        asyncio.run(cluster.stop())
    lines, text = _read(cluster)
    assert token and token not in text
    assert cluster.admin_key not in text
    assert any(line["event"] == "operation_run_finished" for line in lines["worker-w-log-m"])
