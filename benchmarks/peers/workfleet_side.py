"""workfleet side of the peers benchmark: benchmarks/bench_core.py's own steps, with the counts
run.py passes. Runs in the project's venv; writes its figures as JSON to --out.

bench_core's latency, round trip and burst steps start their fleet with `fleet(root, workers,
slots)` (2 x 1 for latency and round trip, 4 x 4 for the burst); here every step gets SLOTS
workers of 1 slot, the same number of execution slots the peers get. The SIGKILL step is
bench_core's failover as it is: a victim worker and a spare one (1 slot each), the victim's
process SIGKILLed while it runs a sleep; time from the kill to the new `dispatched_at`.
"""

import argparse
import asyncio
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import common

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_core  # noqa: E402

SYSTEM = "workfleet"


def same_slots_as_peers(slots: int) -> None:
    """bench_core.fleet with SLOTS workers of one slot each, whatever the step asks for."""
    original = bench_core.fleet
    total = slots

    async def fleet(root: Path, workers: int, slots: int) -> bench_core.Cluster:
        return await original(root, workers=total, slots=1)

    bench_core.fleet = fleet  # type: ignore[assignment]


def burst(result: dict[str, Any]) -> dict[str, Any]:
    b = result["burst"]
    how = "submit_many, chunks of 500" if b["batched"] else f"{b['in_flight']} submits in flight"
    return common.burst_figures(
        b["n"], b["submit_s"], b["total_s"], batched=b["batched"], submit=how
    )


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from importlib.metadata import version

    same_slots_as_peers(args.slots)
    results: dict[str, Any] = {
        "system": SYSTEM,
        "versions": {"workfleet": version("workfleet")},
        "config": {
            "fleet": f"{args.slots} workers x 1 slot, auth token, timing DEFAULT (production)",
            "kill_worker": "bench_core.bench_failover: SIGKILL of the worker process, a spare "
            "worker idle; measured to the new dispatched_at",
            "health_interval_s": bench_core.DEFAULT.health_interval_s,
        },
    }
    latency = await bench_core.bench_latency(root / "latency", args.latency, args.rate)
    results["submit_to_start"] = latency["submit_to_start"]
    results["dispatch_latency"] = latency["dispatch_latency"]
    common.progress(SYSTEM, common.describe("submit_to_start", results["submit_to_start"]))
    results["round_trip"] = (await bench_core.bench_round_trip(root / "rt", args.round_trip))[
        "round_trip"
    ]
    common.progress(SYSTEM, common.describe("round_trip", results["round_trip"]))
    for name, batched in (("burst", False), ("burst_batched", True)):
        step = await bench_core.bench_burst(root / name, args.burst, batched=batched)
        results[name] = burst(step)
        common.progress(SYSTEM, common.describe(name, results[name]))
    failover = (await bench_core.bench_failover(root / "failover", args.kill_trials))["failover"]
    results["kill_worker"] = {
        "what": "SIGKILL of the worker process running it",
        "n": failover["n"],
        "never": 0,  # bench_failover raises when an operation does not come back
        "p50_s": failover["p50_ms"] / 1000,
        "max_s": failover["max_ms"] / 1000,
        "summary_ms": failover,
    }
    common.progress(SYSTEM, common.describe("kill_worker", results["kill_worker"]))
    return results


def main() -> None:
    parser = common.side_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the harness stops its fleet
    with tempfile.TemporaryDirectory(prefix="peers-workfleet-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
