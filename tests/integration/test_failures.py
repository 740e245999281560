"""Each failure of the core issue, with real processes and real signals. Every test ends by
checking the ledger: every acknowledged operation has exactly one terminal record, and each
recorded outcome comes from an attempt that really ran and ended that way."""

import asyncio
import signal
import time
from pathlib import Path

from workfleet.client import Client
from workfleet.harness.cluster import Cluster, wait_for
from workfleet.harness.ledger import check
from workfleet.protocol import OperationView


async def _running_on(client: Client, operation_id: str) -> str | None:
    op = await client.get(operation_id)
    return op.worker_id if op.status == "running" else None


async def _finals(
    client: Client, ops: list[OperationView], timeout_s: float = 60
) -> list[OperationView]:
    return list(
        await asyncio.gather(*(client.wait(op.operation_id, timeout_s=timeout_s) for op in ops))
    )


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_operations_of_a_sigkilled_worker_run_again_elsewhere_exactly_once(
    tmp_path: Path,
) -> None:
    """Health checks every 60 s here: only the fast path (the worker's session drops, the
    backend finds nothing listening) can re-run the operations within the deadline. Three
    kills in a row, so pooled connections to dead workers are exercised too."""
    fleet = Cluster(tmp_path / "kill", backend_env={"WORKFLEET_HEALTH_INTERVAL_S": "60"})
    await fleet.start_backend()
    try:
        await fleet.start_worker("spare", slots=2)
        finals: list[OperationView] = []
        async with fleet.client() as client:
            for round_ in range(3):
                victim = f"victim{round_}"
                await fleet.start_worker(victim, slots=2)
                await fleet.wait_workers(victim, "spare")
                await client.drain("spare")  # both operations go to the victim
                ops = [
                    await client.submit("diagnostic", {"action": "sleep", "seconds": 1, "steps": 2})
                    for _ in range(2)
                ]
                for op in ops:
                    await wait_for(lambda op=op: _running_on(client, op.operation_id), what="run")
                await client.drain("spare", undo=True)
                killed_at = time.monotonic()
                fleet.workers[victim].signal(signal.SIGKILL)
                for op in ops:
                    await wait_for(
                        lambda op=op: _rerun_on(client, op.operation_id, "spare"),
                        timeout_s=10,
                        what="the operation running again on the spare",
                    )
                failover_s = time.monotonic() - killed_at
                assert failover_s < 5, f"failover took {failover_s:.2f} s"
                finals += await _finals(client, ops)
    finally:
        await fleet.stop()
    assert all(op.status == "completed" and op.worker_id == "spare" for op in finals)
    assert all(op.attempt == 2 for op in finals)
    ledger = check(finals, fleet.execution_logs())
    assert ledger.valid, ledger


async def _rerun_on(client: Client, operation_id: str, worker_id: str) -> bool:
    op = await client.get(operation_id)
    return op.worker_id == worker_id and op.attempt >= 2 and op.status in ("running", "completed")


async def test_a_frozen_worker_late_result_is_rejected_and_the_rerun_stands(
    cluster: Cluster,
) -> None:
    await cluster.start_worker("frozen")
    await cluster.wait_workers("frozen")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 2, "steps": 4})
        await wait_for(lambda: _running_on(client, op.operation_id), what="running")
        cluster.workers["frozen"].signal(signal.SIGSTOP)
        await cluster.wait_workers("frozen", status="temporarily_unavailable", timeout_s=15)
        await cluster.start_worker("healthy")
        await wait_for(
            lambda: _rerun_on(client, op.operation_id, "healthy"),
            timeout_s=20,
            what="the re-dispatch",
        )
        cluster.workers["frozen"].signal(signal.SIGCONT)
        final = await client.wait(op.operation_id, timeout_s=30)

        async def late_result_refused() -> bool:
            return _metric(await client.metrics(), "workfleet_stale_reports_total") >= 1

        await wait_for(late_result_refused, timeout_s=20, what="the frozen worker's late result")
        await cluster.wait_workers("frozen", "healthy", timeout_s=15)
    assert final.status == "completed"
    assert final.worker_id == "healthy" and final.attempt == 2
    ledger = check([final], cluster.execution_logs())
    assert ledger.valid, ledger
    assert ledger.duplicate_executions == 1


async def test_a_partitioned_worker_becomes_unavailable_then_available_and_finishes_once(
    cluster: Cluster,
) -> None:
    process = await cluster.start_worker("far", proxied=True)
    await cluster.wait_workers("far")
    inbound, outbound = process.extra["proxies"]
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 1, "steps": 2})
        await wait_for(lambda: _running_on(client, op.operation_id), what="running")
        inbound.partition()
        outbound.partition()
        await cluster.wait_workers("far", status="temporarily_unavailable", timeout_s=15)
        inbound.heal()
        outbound.heal()
        await cluster.wait_workers("far", status="available", timeout_s=15)
        final = await client.wait(op.operation_id, timeout_s=30)
        after = await client.submit("diagnostic", {"action": "noop"})
        after_final = await client.wait(after.operation_id, timeout_s=30)
    assert final.status == "completed"
    assert after_final.status == "completed" and after_final.worker_id == "far"
    ledger = check([final, after_final], cluster.execution_logs())
    assert ledger.valid, ledger


async def test_a_crashing_operation_fails_with_the_reason_and_the_worker_stays_up(
    cluster: Cluster,
) -> None:
    await cluster.start_worker("w1")
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        crash = await client.submit("diagnostic", {"action": "crash"})
        failed = await client.wait(crash.operation_id, timeout_s=30)
        fail = await client.submit("diagnostic", {"action": "fail", "payload": "boom"})
        raised = await client.wait(fail.operation_id, timeout_s=30)
        after = await client.submit("diagnostic", {"action": "noop"})
        completed = await client.wait(after.operation_id, timeout_s=30)
        worker = await client.worker("w1")
    assert failed.status == "failed" and failed.error is not None
    assert failed.error.type == "crashed" and "SIGKILL" in failed.error.message
    assert raised.status == "failed" and raised.error is not None
    assert raised.error.type == "exception" and "DiagnosticFailure" in raised.error.message
    assert "boom" in raised.error.message
    assert completed.status == "completed" and completed.worker_id == "w1"
    assert worker.status == "available"
    assert cluster.workers["w1"].alive()


async def test_the_backend_killed_under_load_loses_nothing_and_workers_come_back(
    cluster: Cluster,
) -> None:
    names = ("w1", "w2", "w3")
    for name in names:
        await cluster.start_worker(name, slots=2)
    await cluster.wait_workers(*names)
    async with cluster.client() as client:
        ops = [
            await client.submit("diagnostic", {"action": "sleep", "seconds": 0.4})
            for _ in range(30)
        ]

        async def mixed() -> bool:  # some done, some running, some still queued
            statuses = {(await client.get(op.operation_id)).status for op in ops}
            return {"completed", "running", "pending"} <= statuses

        await wait_for(mixed, timeout_s=20, interval_s=0.05, what="a mix of states")
        await cluster.restart_backend()
    async with cluster.client() as client:
        await cluster.wait_workers(*names, timeout_s=30)
        finals = await _finals(client, ops, timeout_s=90)
    assert [op.status for op in finals] == ["completed"] * len(ops)
    ledger = check(finals, cluster.execution_logs())
    assert ledger.valid, ledger


async def test_a_sigterm_drains_the_worker_and_deregisters_it(cluster: Cluster) -> None:
    await cluster.start_worker("leaving")
    await cluster.wait_workers("leaving")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 1, "steps": 2})
        await wait_for(lambda: _running_on(client, op.operation_id), what="running")
        cluster.workers["leaving"].signal(signal.SIGTERM)
        final = await client.wait(op.operation_id, timeout_s=30)

        async def gone() -> bool:
            return all(w.worker_id != "leaving" for w in (await client.workers()).items)

        await wait_for(gone, timeout_s=15, what="deregistration")
    assert final.status == "completed" and final.worker_id == "leaving"
    # uvicorn re-raises the signal it handled once shut down, so the exit status says SIGTERM
    assert cluster.workers["leaving"].popen.wait(timeout=10) in (0, -signal.SIGTERM)


async def test_a_worker_stopping_hands_back_what_it_cannot_finish(cluster: Cluster) -> None:
    await cluster.start_worker("leaving", env={"WORKFLEET_SHUTDOWN_GRACE_S": "0.3"})
    await cluster.wait_workers("leaving")
    async with cluster.client() as client:
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 2, "steps": 2})
        await wait_for(lambda: _running_on(client, op.operation_id), what="running")
        cluster.workers["leaving"].signal(signal.SIGTERM)

        async def requeued() -> bool:
            return (await client.get(op.operation_id)).status == "pending"

        await wait_for(requeued, timeout_s=15, what="the hand-back")
        await cluster.start_worker("staying")
        final = await client.wait(op.operation_id, timeout_s=30)
    assert final.status == "completed" and final.worker_id == "staying"
    ledger = check([final], cluster.execution_logs())
    assert ledger.valid, ledger


async def test_a_worker_removed_after_a_long_outage_registers_again_by_itself(
    tmp_path,
) -> None:
    fleet = Cluster(tmp_path / "removal", backend_env={"WORKFLEET_WORKER_REMOVAL_S": "1.5"})
    try:
        await fleet.start_backend()
        await fleet.start_worker("sleepy")
        await fleet.wait_workers("sleepy")
        fleet.workers["sleepy"].signal(signal.SIGSTOP)
        async with fleet.client() as client:

            async def removed() -> bool:
                return all(w.worker_id != "sleepy" for w in (await client.workers()).items)

            await wait_for(removed, timeout_s=20, what="removal")
            fleet.workers["sleepy"].signal(signal.SIGCONT)
            await fleet.wait_workers("sleepy", timeout_s=20)
            op = await client.submit("diagnostic", {"action": "noop"})
            assert (await client.wait(op.operation_id, timeout_s=30)).worker_id == "sleepy"
    finally:
        await fleet.stop()


async def test_a_worker_restarted_under_the_same_id_replaces_the_old_one(
    cluster: Cluster,
) -> None:
    await cluster.start_worker("phoenix")
    await cluster.start_worker("other")
    await cluster.wait_workers("phoenix", "other")
    async with cluster.client() as client:
        await client.drain("other")
        op = await client.submit("diagnostic", {"action": "sleep", "seconds": 30, "steps": 30})
        await wait_for(lambda: _running_on(client, op.operation_id), what="running")
        cluster.workers["phoenix"].signal(signal.SIGKILL)
        cluster.workers["phoenix"].popen.wait(timeout=10)
        await cluster.start_worker("phoenix")
        await cluster.wait_workers("phoenix", status="busy")  # it took the re-run at once
        workers = [w.worker_id for w in (await client.workers()).items]
        assert workers.count("phoenix") == 1
        await wait_for(
            lambda: _rerun_on(client, op.operation_id, "phoenix"),
            timeout_s=20,
            what="the operation running on the new incarnation",
        )
        rerun = await client.get(op.operation_id)
        await client.cancel(op.operation_id)
        final = await client.wait(op.operation_id, timeout_s=20)
    assert rerun.attempt == 2
    assert final.status == "cancelled"
    ledger = check([final], cluster.execution_logs())
    assert ledger.valid, ledger
