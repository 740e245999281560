"""Simulated workers (harness/simworkers.py) against a real backend: many per process, each a
worker in its own right: registered and available, running no-ops exactly once, cancelled like
a real worker, gone once stopped."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workfleet.harness import ledger
from workfleet.harness.cluster import Cluster, wait_for
from workfleet.harness.simworkers import SIM_TYPE, SimFleet

pytestmark = pytest.mark.integration
NOOPS = 100
BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_scale.py"


async def test_fifty_simulated_workers_in_two_processes(cluster: Cluster) -> None:
    fleet = SimFleet(cluster, 50, 2)
    fleet.start()
    try:
        await cluster.wait_workers(*fleet.worker_ids, timeout_s=20)
        async with cluster.client() as client:
            workers = (await client.workers()).items
            assert {w.worker_type for w in workers} == {SIM_TYPE}
            assert len({w.endpoint_url for w in workers}) == 50  # an address of its own each

            ops = await client.submit_many([("diagnostic", {"payload": i}) for i in range(NOOPS)])
            finals = [await client.wait(op.operation_id, timeout_s=20) for op in ops]
            assert [op.result for op in finals] == [
                {"action": "noop", "payload": i} for i in range(NOOPS)
            ]
            assert {op.attempt for op in finals} == {1}
            assert len({op.worker_id for op in finals}) > 1  # spread, not one worker doing all
            books = ledger.check(finals, cluster.execution_logs())
            assert books.valid
            assert books.duplicate_executions == 0
            assert books.outcomes == {"completed": NOOPS}

            sleeper = await client.submit("diagnostic", {"action": "sleep", "seconds": 30})

            async def running() -> bool:
                return (await client.get(sleeper.operation_id)).status == "running"

            await wait_for(running, what="the sleep to run")
            await client.cancel(sleeper.operation_id)
            assert (await client.wait(sleeper.operation_id, timeout_s=10)).status == "cancelled"
    finally:
        await fleet.stop()
    async with cluster.client() as client:
        assert (await client.workers()).items == []  # each one deregistered on SIGTERM


@pytest.mark.slow
def test_bench_scale_smoke(tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH),
            *("--workers", "20", "--processes", "2", "--interval", "0.5"),
            *("--window", "1", "--samples", "10", "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert results["idle_with_workers"]["statuses"] == {"available": 20}
    assert results["dispatch"]["round_trip"]["n"] == 10
