"""Scale (issue 6): one real backend with 1,000 registered workers (simulated, several hundred
per process; see workfleet.harness.simworkers), production health interval.

    python benchmarks/bench_scale.py [--workers N] [--processes K] [--interval S]
                                     [--window S] [--samples M] [--rate R] [--out FILE.json]

- health cost: backend CPU (psutil cpu_times, user + system) per second over a window with no
  worker, then over a window of the same length with N workers registered and idle; the
  difference is what checking them costs: % of one core, and ms of CPU per check (checks
  counted by workfleet_worker_health_checks_total over the window). Also whether the monitor
  keeps up: checks done against N x window / interval, failures, workers not available, and
  the spread of last_healthy_at over the latest round (about how long one round takes).
- registration: from starting the simulated workers to all N listed available, and each
  worker's own time from its first register call to its registration (a stampede: all at once).
- dispatch with N registered: M no-ops, open loop at R/s: `dispatched_at - created_at` (server
  side), `started_at - client clock before submit` (DESIGN §9's protocol) and the round trip
  (submit -> result seen by the client), p50/p99 with their n.
- memory: backend RSS with no worker and with N; deregistration: SIGTERM to all N listed gone.
The figures are indicative on a shared 2-core machine: the simulated workers share the cores
with the backend (their CPU is reported too), and the load average is recorded.
"""

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from stats import summary
from workfleet.client import Client
from workfleet.harness.cluster import DEFAULT, Cluster, wait_for
from workfleet.harness.simworkers import SIM_TYPE, SimFleet
from workfleet.protocol import WorkerView

NOOP = {"action": "noop"}
QUIET = {"WORKFLEET_LOG_LEVEL": "WARNING"}
WARM_UP = 20


def cpu_seconds(processes: list[psutil.Process]) -> float:
    return sum(p.cpu_times().user + p.cpu_times().system for p in processes)


def health_checks(metrics: str) -> dict[str, float]:
    """Checks of simulated workers so far, by result (success, failure)."""
    counts: dict[str, float] = {}
    for line in metrics.splitlines():
        if line.startswith("workfleet_worker_health_checks_total{") and SIM_TYPE in line:
            result = line.split('result="', 1)[1].split('"', 1)[0]
            counts[result] = counts.get(result, 0.0) + float(line.rsplit(" ", 1)[1])
    return counts


async def idle_window(
    client: Client, backend: psutil.Process, others: list[psutil.Process], seconds: float
) -> dict[str, Any]:
    """Backend CPU per second while nothing but health checks happens; the metrics are read
    outside the measured span (a scrape with 1,000 workers costs CPU of its own)."""
    before = health_checks(await client.metrics())
    began, cpu0, others0 = time.monotonic(), cpu_seconds([backend]), cpu_seconds(others)
    await asyncio.sleep(seconds)
    wall = time.monotonic() - began
    cpu, others_cpu = cpu_seconds([backend]) - cpu0, cpu_seconds(others) - others0
    after = health_checks(await client.metrics())
    checks = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    return {
        "wall_s": wall,
        "backend_core_pct": 100 * cpu / wall,
        "simworkers_core_pct": 100 * others_cpu / wall,
        "checks": checks,
        "rss_mb": backend.memory_info().rss / 2**20,
    }


def oldest_health_s(workers: list[WorkerView]) -> float:
    """How old the backend's stalest view of a worker is: now - the oldest last_healthy_at
    (at most about one interval plus one round when the monitor keeps up)."""
    return time.time() - min(w.last_healthy_at.timestamp() for w in workers if w.last_healthy_at)


def by_status(workers: list[WorkerView]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for worker in workers:
        counts[worker.status] = counts.get(worker.status, 0) + 1
    return counts


async def all_available(client: Client, fleet: SimFleet, count: int) -> bool:
    fleet.check_alive()
    workers = (await client.workers()).items
    return sum(w.status == "available" for w in workers) >= count


async def register(client: Client, fleet: SimFleet, count: int) -> dict[str, Any]:
    began = time.monotonic()
    fleet.start()
    await wait_for(
        lambda: all_available(client, fleet, count),
        timeout_s=300,
        interval_s=1.0,  # listing 1,000 workers costs the backend CPU too
        what=f"{count} workers available",
    )
    total = time.monotonic() - began

    async def reports() -> list[float] | None:
        return fleet.registration_times()

    per_worker = await wait_for(reports, what="each process's registration report")
    return {"all_available_s": total, "per_worker": summary(per_worker)}


async def dispatch(client: Client, samples: int, rate: float) -> dict[str, Any]:
    for _ in range(WARM_UP):
        await client.wait((await client.submit("diagnostic", NOOP)).operation_id)
    rows: list[tuple[float, float, str]] = []
    start = time.monotonic()

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
        t0, p0 = time.time(), time.perf_counter()  # wall clock: vs the worker's started_at
        op = await client.submit("diagnostic", NOOP)
        done = await client.get(op.operation_id, wait_s=30)
        rows.append((t0, time.perf_counter() - p0, op.operation_id))
        if done.status != "completed":
            raise RuntimeError(f"{op.operation_id}: {done.status}")

    await asyncio.gather(*(one(i) for i in range(samples)))
    finals = [await client.get(op_id) for _, _, op_id in rows]
    t0_of = {op_id: t0 for t0, _, op_id in rows}
    dispatched, started = [], []
    for op in finals:
        assert op.dispatched_at is not None
        assert op.started_at is not None
        dispatched.append((op.dispatched_at - op.created_at).total_seconds())
        started.append(op.started_at.timestamp() - t0_of[op.operation_id])
    return {
        "rate_per_s": rate,
        "dispatch_latency": summary(dispatched),
        "submit_to_start": summary(started),
        "round_trip": summary([rt for _, rt, _ in rows]),
        "workers_used": len({op.worker_id for op in finals}),
        "attempts_above_1": sum(op.attempt > 1 for op in finals),
    }


async def deregister(client: Client, fleet: SimFleet) -> float:
    began = time.monotonic()
    await fleet.stop()

    async def none_left() -> bool:
        return not (await client.workers()).items

    await wait_for(none_left, timeout_s=60, interval_s=0.2, what="every worker to leave")
    return time.monotonic() - began


async def run(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    timing = replace(DEFAULT, health_interval_s=args.interval)
    cluster = Cluster(root, timing=timing, backend_env=QUIET)
    await cluster.start_backend()
    assert cluster.backend is not None
    backend = psutil.Process(cluster.backend.pid)
    fleet = SimFleet(cluster, args.workers, args.processes)
    results: dict[str, Any] = {}
    try:
        async with cluster.client() as client:
            await asyncio.sleep(2.0)  # let start-up work settle before the baseline
            results["idle_no_workers"] = await idle_window(client, backend, [], args.window)
            print(f"no workers: {row_idle(results['idle_no_workers'])}", flush=True)
            results["registration"] = await register(client, fleet, args.workers)
            print(row_registration(results["registration"], args.workers), flush=True)
            await asyncio.sleep(min(args.interval, args.window))  # past the stampede's wake
            sims = [psutil.Process(p.popen.pid) for p in fleet.processes]
            idle = await idle_window(client, backend, sims, args.window)
            workers = (await client.workers()).items
            idle |= {"oldest_health_s": oldest_health_s(workers)}
            idle |= {"statuses": by_status(workers)}
            results["idle_with_workers"] = idle
            print(f"{args.workers} workers: {row_idle(idle)}", flush=True)
            results["dispatch"] = await dispatch(client, args.samples, args.rate)
            results["statuses_after_dispatch"] = by_status((await client.workers()).items)
            results["deregistration_s"] = await deregister(client, fleet)
    finally:
        await fleet.stop()
        await cluster.stop()
    results["health"] = health_cost(results, args)
    return results


def health_cost(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    base, loaded = results["idle_no_workers"], results["idle_with_workers"]
    checks = sum(loaded["checks"].values())
    extra_pct = loaded["backend_core_pct"] - base["backend_core_pct"]
    expected = args.workers * loaded["wall_s"] / args.interval
    return {
        # the time between two checks of a worker: the interval when the monitor keeps up,
        # the time one round of all N takes when it does not
        "effective_interval_s": args.workers * loaded["wall_s"] / checks if checks else None,
        "core_pct": extra_pct,
        "core_pct_per_100_workers": extra_pct * 100 / args.workers,
        "ms_cpu_per_check": extra_pct / 100 * loaded["wall_s"] / checks * 1000 if checks else None,
        "checks": checks,
        "checks_expected": expected,
        "failures": loaded["checks"].get("failure", 0.0),
        "rss_mb_per_1000_workers": (loaded["rss_mb"] - base["rss_mb"]) * 1000 / args.workers,
    }


def row_idle(idle: dict[str, Any]) -> str:
    return (
        f"backend {idle['backend_core_pct']:.2f} % of a core over {idle['wall_s']:.0f} s, "
        f"checks {idle['checks']}, RSS {idle['rss_mb']:.0f} MB"
    )


def row_registration(reg: dict[str, Any], count: int) -> str:
    w = reg["per_worker"]
    return (
        f"registration of {count}: all available after {reg['all_available_s']:.1f} s; "
        f"per worker p50 {w['p50_ms']:.0f} ms, p99 {w['p99_ms']:.0f} ms, max {w['max_ms']:.0f} ms"
    )


def fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def table(results: dict[str, Any]) -> str:
    h, idle, d = results["health"], results["idle_with_workers"], results["dispatch"]
    n, interval = results["workers"], results["health_interval_s"]
    lines = [
        f"{n} workers, {results['processes']} processes, health interval {interval} s, "
        f"load average at start {results['load_average_start']}",
        f"health checking: {h['core_pct']:.2f} % of a core ({h['core_pct_per_100_workers']:.3f} "
        f"% per 100 workers), {fmt(h['ms_cpu_per_check'], 3)} ms CPU per check; "
        f"{h['checks']:.0f} checks of {h['checks_expected']:.0f} expected, "
        f"{h['failures']:.0f} failed; each worker checked every "
        f"{fmt(h['effective_interval_s'], 1)} s, oldest view {idle['oldest_health_s']:.1f} s; "
        f"statuses {idle['statuses']}",
        f"simulated workers used {idle['simworkers_core_pct']:.1f} % of a core meanwhile; "
        f"backend RSS +{h['rss_mb_per_1000_workers']:.0f} MB per 1,000 workers",
        row_registration(results["registration"], n),
    ]
    for key, label in (
        ("dispatch_latency", "dispatched_at - created_at"),
        ("submit_to_start", "submit -> start (client clock)"),
        ("round_trip", "round trip (submit -> result seen)"),
    ):
        s = d[key]
        lines.append(
            f"{label} at {d['rate_per_s']:.0f}/s, n={s['n']}: p50 {s['p50_ms']:.2f} ms, "
            f"p99 {s['p99_ms']:.2f} ms, max {s['max_ms']:.2f} ms"
        )
    lines.append(
        f"no-ops spread over {d['workers_used']} workers, {d['attempts_above_1']} redispatched; "
        f"all {n} deregistered {results['deregistration_s']:.1f} s after SIGTERM"
    )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=1000, help="simulated workers (N)")
    parser.add_argument("--processes", type=int, default=4, help="processes hosting them")
    parser.add_argument("--interval", type=float, default=10.0, help="health interval, s")
    parser.add_argument("--window", type=float, default=30.0, help="each CPU window, s")
    parser.add_argument("--samples", type=int, default=500, help="no-ops for dispatch latency")
    parser.add_argument("--rate", type=float, default=20.0, help="no-op submits per second")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.json"))
    args = parser.parse_args()
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average_start": [round(x, 2) for x in os.getloadavg()],
        "workers": args.workers,
        "processes": args.processes,
        "health_interval_s": args.interval,
    }
    with tempfile.TemporaryDirectory(prefix="wf-scale-") as tmp:
        results |= await run(args, Path(tmp))
    results["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"written to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
