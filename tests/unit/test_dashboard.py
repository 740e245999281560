"""The /ui dashboard's files and the figures it reads (GET /api/v1/stats), in-process."""

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path

import httpx
import pytest

from fakes import NoFleet
from workfleet.backend.app import create_app
from workfleet.backend.auth import create_key
from workfleet.backend.fleet_stats import FleetHistory, Totals, queue_breakdown
from workfleet.backend.orchestrator import Orchestrator, Registration, utc_now
from workfleet.backend.routes.ui import ASSETS, CONTENT_SECURITY_POLICY
from workfleet.domain.workers import Capabilities
from workfleet.settings import BackendSettings, Placement
from workfleet.store.memory import MemoryStore

SECRET = "dashboard-cluster-secret-0123456789abcdefgh"
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def running_backend(
    tmp_path: Path, placement: Placement = "round_robin"
) -> AsyncIterator[tuple[httpx.AsyncClient, Orchestrator, str]]:
    """A running token-mode backend app (lifespan included), a client of it, a viewer key."""
    store = MemoryStore()
    config = BackendSettings(
        data_dir=tmp_path, auth_mode="token", cluster_token=SECRET, placement=placement
    )
    app = create_app(config, store=store, gateway=NoFleet())
    _, viewer = await create_key(store, "viewer", "viewer", utc_now)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://backend") as client,
    ):
        yield client, app.state.orchestrator, viewer


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Orchestrator, str]]:
    async with running_backend(tmp_path) as running:
        yield running


@pytest.mark.parametrize("path", ["/ui", *(f"/ui/{name}" for name in ASSETS)])
async def test_the_page_and_its_files_are_public_and_under_a_strict_content_policy(
    backend: tuple[httpx.AsyncClient, Orchestrator, str], path: str
) -> None:
    client, _, _ = backend
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert "script-src 'self'" in CONTENT_SECURITY_POLICY
    expected = ASSETS.get(path.removeprefix("/ui/"), "text/html; charset=utf-8")
    assert response.headers["content-type"] == expected


async def test_the_page_has_no_inline_script_or_event_handler(
    backend: tuple[httpx.AsyncClient, Orchestrator, str],
) -> None:
    client, _, _ = backend
    html = (await client.get("/ui")).text
    assert '<script type="module" src="ui/app.js"></script>' in html
    assert html.count("<script") == 1
    assert re.search(r"<[^>]*\son\w+\s*=", html) is None  # onclick=, onload=, ...
    assert "style=" not in html


def test_every_file_of_the_dashboard_is_served() -> None:
    """A file added to backend/ui/ but not to ASSETS would 404 in the browser."""
    shipped = {path.name for path in files("workfleet.backend").joinpath("ui").iterdir()}
    assert shipped == {"index.html", *ASSETS}


@pytest.mark.parametrize("name", ["index.html", "fleet_stats.py", "..%2Fapp.py", ".hidden"])
async def test_only_the_listed_dashboard_files_are_served(
    backend: tuple[httpx.AsyncClient, Orchestrator, str], name: str
) -> None:
    client, _, _ = backend
    assert (await client.get(f"/ui/{name}")).status_code == 404


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wf_not-a-real-key"}])
async def test_the_figures_need_a_credential(
    backend: tuple[httpx.AsyncClient, Orchestrator, str], headers: dict[str, str]
) -> None:
    client, _, _ = backend
    assert (await client.get("/api/v1/stats", headers=headers)).status_code == 401


async def test_a_viewer_reads_workers_by_state_and_slots(
    backend: tuple[httpx.AsyncClient, Orchestrator, str],
) -> None:
    client, orchestrator, viewer = backend
    await orchestrator.register(
        Registration(
            worker_id="w1",
            worker_type="backtesting",
            endpoint_url="http://127.0.0.1:9",
            capabilities=Capabilities(slots=3),
            operation_types=frozenset({"diagnostic"}),
            instance_id="i1",
            accepted_seq=0,
        )
    )
    response = await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {viewer}"})
    assert response.status_code == 200
    stats = response.json()
    assert set(stats["workers"]) == {"available", "busy", "draining", "temporarily_unavailable"}
    assert sum(stats["workers"].values()) == 1
    assert (stats["slots_used"], stats["slots_total"]) == (0, 3)
    assert (stats["queue_depth"], stats["running"], stats["finished_last_hour"]) == (0, 0, 0)
    assert (stats["queue_by_priority"], stats["queue_by_submitter"]) == ([], [])
    assert (stats["queue_other_submitters"], stats["placement"]) == (0, "round_robin")


async def test_a_viewer_reads_the_queue_depth_per_priority_and_per_submitter(
    backend: tuple[httpx.AsyncClient, Orchestrator, str],
) -> None:
    """No worker is registered, so everything submitted waits."""
    client, orchestrator, viewer = backend
    for submitter, priorities in (("alice", [0, 0, 5]), ("bob", [5])):
        _, key = await create_key(orchestrator.store, submitter, "operator", utc_now)
        for priority in priorities:
            response = await client.post(
                "/api/v1/operations",
                json={"operation_type": "diagnostic", "priority": priority},
                headers={"Authorization": f"Bearer {key}"},
            )
            assert response.status_code == 202, response.text
    stats = (
        await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {viewer}"})
    ).json()
    assert stats["queue_depth"] == 4
    assert stats["queue_by_priority"] == [
        {"priority": 5, "queued": 2},
        {"priority": 0, "queued": 2},
    ]
    assert stats["queue_by_submitter"] == [
        {"submitter": "alice", "queued": 3},
        {"submitter": "bob", "queued": 1},
    ]
    assert stats["queue_other_submitters"] == 0


@pytest.mark.parametrize("policy", ["capacity", "fastest"])
async def test_the_figures_name_the_placement_policy_in_use(
    tmp_path: Path, policy: Placement
) -> None:
    async with running_backend(tmp_path, placement=policy) as (client, _, viewer):
        response = await client.get("/api/v1/stats", headers={"Authorization": f"Bearer {viewer}"})
    assert response.json()["placement"] == policy


def test_the_queue_lists_the_submitters_with_most_waiting_and_sums_the_rest() -> None:
    depths = {(f"user{i:02}", i % 3): i for i in range(1, 26)}  # user25 has 25 waiting, ...
    depths[("idle", 4)] = 0
    queue = queue_breakdown(depths, top=20)
    assert [d.submitter for d in queue.by_submitter] == [f"user{i:02}" for i in range(25, 5, -1)]
    assert queue.other_submitters == 1 + 2 + 3 + 4 + 5
    assert [d.priority for d in queue.by_priority] == [2, 1, 0]  # no empty priority 4
    assert sum(d.queued for d in queue.by_priority) == sum(range(1, 26))


def test_submitters_with_as_many_waiting_are_listed_by_name() -> None:
    queue = queue_breakdown({("bob", 0): 2, ("alice", 0): 1, ("alice", 9): 1}, top=1)
    assert [(d.submitter, d.queued) for d in queue.by_submitter] == [("alice", 2)]
    assert queue.other_submitters == 2
    assert [(d.priority, d.queued) for d in queue.by_priority] == [(9, 1), (0, 3)]


def test_each_minute_counts_what_finished_in_it_and_its_longest_queue() -> None:
    history = FleetHistory()
    history.record(T0, queue_depth=4, totals=Totals(finished=2, failed=0))
    history.record(T0 + timedelta(seconds=30), queue_depth=9, totals=Totals(5, 1))
    history.record(T0 + timedelta(seconds=61), queue_depth=1, totals=Totals(6, 1))
    first, second = history.last_hour(T0 + timedelta(minutes=2))
    assert (first.at, first.finished, first.failed, first.queue_peak) == (T0, 5, 1, 9)
    assert (second.finished, second.failed, second.queue_peak) == (1, 0, 1)


def test_minutes_older_than_an_hour_are_left_out() -> None:
    history = FleetHistory()
    for minute in range(90):
        history.record(T0 + timedelta(minutes=minute), queue_depth=minute, totals=Totals())
    kept = history.last_hour(T0 + timedelta(minutes=89, seconds=30))
    assert len(kept) == 60
    assert kept[0].at == T0 + timedelta(minutes=30)
