"""Operations dispatched through a real backend to real worker processes."""

import asyncio
from pathlib import Path

import httpx
import pytest

from workfleet.client import ApiError, Client
from workfleet.harness.cluster import Cluster, free_port, wait_for
from workfleet.harness.ledger import check


async def test_a_noop_runs_on_a_worker_and_its_result_is_recorded(cluster: Cluster) -> None:
    await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "noop", "payload": {"x": 1}})
        done = await client.wait(op.operation_id, timeout_s=30)
    assert done.status == "completed"
    assert done.result == {"action": "noop", "payload": {"x": 1}}
    assert done.worker_id == "w1"
    assert done.attempt == 1
    assert done.created_at <= done.dispatched_at <= done.finished_at
    assert done.started_at is not None


async def test_progress_of_a_running_operation_is_visible(cluster: Cluster) -> None:
    await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 2, "steps": 8})

        async def halfway() -> bool:
            seen = await client.get(op.operation_id)
            return seen.progress is not None and (seen.progress.current_step or 0) >= 2

        await wait_for(halfway, timeout_s=15, what="progress reports")
        running = await client.get(op.operation_id)
        assert running.status == "running"
        assert running.progress is not None and running.progress.total_steps == 8
        done = await client.wait(op.operation_id, timeout_s=30)
    assert done.status == "completed"
    assert done.progress is not None and done.progress.percentage == 100.0


async def test_a_worker_never_runs_more_than_its_slots(cluster: Cluster) -> None:
    for name in ("w1", "w2"):
        await cluster.start_worker(name, slots=2)
    await cluster.wait_workers("w1", "w2")
    async with cluster.client() as client:
        ops = await asyncio.gather(
            *(client.submit("diagnostic", {"action": "sleep", "seconds": 0.3}) for _ in range(16))
        )
        finals = await asyncio.gather(*(client.wait(op.operation_id, timeout_s=60) for op in ops))
    assert {op.status for op in finals} == {"completed"}
    # overlap of [started, finished] intervals per worker never exceeds its 2 slots
    for worker in ("w1", "w2"):
        events = []
        for op in finals:
            if op.worker_id == worker:
                events += [(op.started_at, 1), (op.finished_at, -1)]
        running = peak = 0
        for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
            running += delta
            peak = max(peak, running)
        assert 1 <= peak <= 2, f"{worker} ran {peak} at once"
    assert check(finals, cluster.execution_logs()).valid


async def test_round_robin_spreads_operations_over_equal_workers(cluster: Cluster) -> None:
    names = ("w1", "w2", "w3")
    for name in names:
        await cluster.start_worker(name)
    await cluster.wait_workers(*names)
    async with cluster.client() as client:
        finals = []
        for _ in range(9):  # one at a time: every worker is idle at each placement
            op = await client.submit("diagnostic", {"action": "noop"})
            finals.append(await client.wait(op.operation_id, timeout_s=30))
    counts = {name: sum(op.worker_id == name for op in finals) for name in names}
    assert counts == {"w1": 3, "w2": 3, "w3": 3}


async def test_a_resubmit_with_the_same_idempotency_key_returns_the_same_operation(
    cluster: Cluster,
) -> None:
    async with cluster.client() as client:
        first = await client.submit("diagnostic", {"action": "noop"}, idempotency_key="k-1")
        again = await client.submit("diagnostic", {"action": "noop"}, idempotency_key="k-1")
        assert again.operation_id == first.operation_id
        with pytest.raises(ApiError, match="Idempotency-Key") as refused:
            await client.submit("diagnostic", {"action": "fail"}, idempotency_key="k-1")
        assert refused.value.status == 409


async def test_list_filters_and_paginates_every_operation_once(cluster: Cluster) -> None:
    async with cluster.client() as client:
        ids = {
            (await client.submit("diagnostic", {"action": "noop"})).operation_id for _ in range(7)
        }
        seen: list[str] = []
        cursor = None
        while True:
            page = await client.list(limit=3, cursor=cursor, status=["pending"])
            seen += [op.operation_id for op in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))


async def test_a_cancelled_pending_operation_never_runs(cluster: Cluster) -> None:
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "noop"})
        cancelled = await client.cancel(op.operation_id)
        assert cancelled.status == "cancelled"
        await cluster.start_worker("w1")
        await cluster.wait_workers("w1")
        later = await client.submit("diagnostic", {"action": "noop"})
        assert (await client.wait(later.operation_id, timeout_s=30)).status == "completed"
        assert (await client.get(op.operation_id)).status == "cancelled"
        again = await _cancel_status(client, op.operation_id)
    assert again == 409


async def _cancel_status(client: Client, operation_id: str) -> int:
    try:
        await client.cancel(operation_id)
    except ApiError as exc:
        return exc.status
    return 200


async def test_a_running_operation_is_cancelled_cooperatively(cluster: Cluster) -> None:
    await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 30, "steps": 30})
        await wait_for(lambda: _status_is(client, op.operation_id, "running"), what="running")
        requested = await client.cancel(op.operation_id)
        assert requested.status == "running" and requested.cancel_requested_at is not None
        done = await client.wait(op.operation_id, timeout_s=15)
    assert done.status == "cancelled"
    assert (done.finished_at - requested.cancel_requested_at).total_seconds() < 5


async def test_an_operation_ignoring_cancel_is_killed_after_the_grace(cluster: Cluster) -> None:
    await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        op = await client.submit(
            "diagnostic", {"action": "sleep", "seconds": 60, "ignore_cancel": True}
        )
        await wait_for(lambda: _status_is(client, op.operation_id, "running"), what="running")
        await client.cancel(op.operation_id)
        done = await client.wait(op.operation_id, timeout_s=20)
        assert done.status == "cancelled"
        # the worker replaced the killed process and keeps working
        after = await client.submit("diagnostic", {"action": "noop"})
        assert (await client.wait(after.operation_id, timeout_s=30)).status == "completed"


async def _status_is(client: Client, operation_id: str, status: str) -> bool:
    return (await client.get(operation_id)).status == status


async def test_a_failed_dispatch_is_retried_on_another_worker(cluster: Cluster) -> None:
    """A registered worker that is not there (nothing listens at its address) gets the first
    dispatch, as the least recently used; the operation then runs on the real worker."""
    await cluster.start_worker("real")
    await cluster.wait_workers("real")
    ghost = {
        "worker_id": "ghost",
        "worker_type": "backtesting",
        "instance_id": "g",
        "endpoint_url": f"http://127.0.0.1:{free_port()}",
        "operation_types": ["diagnostic"],
    }
    async with httpx.AsyncClient(trust_env=False) as http:
        registered = await http.post(
            f"{cluster.url}/api/v1/workers/register",
            json=ghost,
            headers={"Authorization": f"Bearer {cluster.token}"},
        )
        assert registered.status_code == 200
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "noop"})
        done = await client.wait(op.operation_id, timeout_s=30)
        ghost_view = await client.worker("ghost")
        metrics = await client.metrics()
    assert done.status == "completed" and done.worker_id == "real"
    assert ghost_view.status == "temporarily_unavailable"
    unreachable = 'operation_type="diagnostic",reason="unreachable"'
    assert f"workfleet_operation_dispatch_failures_total{{{unreachable}}} 1.0" in metrics


async def test_a_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    fleet = Cluster(tmp_path / "full", backend_env={"WORKFLEET_MAX_PENDING": "3"})
    await fleet.start_backend()
    try:
        async with fleet.client() as client:
            for _ in range(3):
                await client.submit("diagnostic", {"action": "noop"})
            with pytest.raises(ApiError) as refused:
                await client.submit("diagnostic", {"action": "noop"})
            listed = await client.list(status=["pending"])
    finally:
        await fleet.stop()
    assert refused.value.status == 429
    assert refused.value.retry_after is not None and int(refused.value.retry_after) >= 1
    assert len(listed.items) == 3  # nothing lost, nothing half-accepted


async def test_the_seed_aliases_submit_their_operation_type(cluster: Cluster) -> None:
    """`/backtests/start` and `/training/start` are POST /operations for their type, with the
    same validation: bad params get 422 naming what is wrong."""
    headers = {"Authorization": f"Bearer {cluster.admin_key}"}
    params = {"symbol": "SYN", "timeframe": "1h", "strategy": "sma_crossover"}
    async with httpx.AsyncClient(base_url=cluster.url, trust_env=False) as http:
        started = await http.post("/api/v1/backtests/start", json=params, headers=headers)
        training = await http.post(
            "/api/v1/training/start", json={"symbol": "SYN", "timeframe": "1h"}, headers=headers
        )
        refused = await http.post("/api/v1/training/start", json={}, headers=headers)
        async with cluster.client() as client:
            op = await client.get(started.json()["operation_id"])
            trained = await client.get(training.json()["operation_id"])
    assert started.status_code == 202 and started.json()["success"] is True
    assert op.operation_type == "backtesting" and op.params["symbol"] == "SYN"
    assert training.status_code == 202 and trained.operation_type == "training"
    assert trained.params["epochs"] == 20  # defaults filled in, so the view shows what runs
    assert refused.status_code == 422
    assert "symbol: Field required" in refused.json()["detail"]


async def test_a_worker_busy_with_cpu_work_keeps_answering_its_health_checks(
    cluster: Cluster,
) -> None:
    """Operations run in their own processes: two CPU-bound ones fill both slots and both
    cores, and the worker still answers every 0.25 s check within its 0.5 s timeout."""
    await cluster.start_worker("cruncher", slots=2)
    await cluster.wait_workers("cruncher")
    async with cluster.client() as client:
        ops = [
            await client.submit("diagnostic", {"action": "cpu", "seconds": 3, "steps": 3})
            for _ in range(2)
        ]
        await cluster.wait_workers("cruncher", status="busy")
        seen: list[tuple[str, int]] = []
        while [(await client.get(op.operation_id)).status for op in ops] != ["completed"] * 2:
            worker = await client.worker("cruncher")
            seen.append((worker.status, worker.consecutive_failures))
            await asyncio.sleep(0.1)
    assert len(seen) >= 10
    assert {status for status, _ in seen} <= {"busy", "available"}
    assert max(failures for _, failures in seen) == 0
