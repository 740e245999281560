"""Core platform figures (DESIGN §9), measured on real processes with production timings.

    python benchmarks/bench_core.py [--quick] [--auth-mode token|mtls] [--db-sync full|normal]
                                    [--only STEP]
                                    [--out benchmarks/results/core.json]

- latency: open-loop submits at 50/s to idle workers; `dispatched_at - created_at` (server
  side) and `started_at - client clock just before submit` (the peers' protocol), p50/p99
- round trip: one no-op at a time, client clock from before submit to the result seen
- burst: 5,000 no-op submits (64 in flight, or in batches of 500), then wait for all;
  4 workers x 4 slots
- failover: SIGKILL of the worker running an operation, an idle slot elsewhere; time from
  the kill to the operation running again (its new dispatched_at), over several trials
Prints a table and writes every figure to JSON, so runs can be compared. `--auth-mode mtls`
runs the same steps over mutual TLS (a CA and a certificate per process), for the overhead.
"""

import argparse
import asyncio
import json
import platform
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stats import summary
from workfleet.harness.cluster import DEFAULT, Cluster, wait_for

NOOP = {"action": "noop"}
QUIET = {"WORKFLEET_LOG_LEVEL": "WARNING"}
AUTH_MODE = ["token"]  # set once from --auth-mode, before any step runs
BACKEND_ENV = dict(QUIET)  # and --db-sync


def new_cluster(root: Path) -> Cluster:
    return Cluster(root, timing=DEFAULT, auth_mode=AUTH_MODE[0], backend_env=BACKEND_ENV)


async def fleet(root: Path, workers: int, slots: int) -> Cluster:
    cluster = new_cluster(root)
    await cluster.start_backend()
    names = [f"w{i}" for i in range(workers)]
    for name in names:
        await cluster.start_worker(name, slots=slots, env={"WORKFLEET_LOG_LEVEL": "WARNING"})
    await cluster.wait_workers(*names)
    return cluster


async def bench_latency(root: Path, count: int, rate: float) -> dict[str, Any]:
    cluster = await fleet(root, workers=2, slots=1)
    try:
        async with cluster.client() as client:
            for _ in range(20):  # warm up connections and the executors
                await client.wait((await client.submit("diagnostic", NOOP)).operation_id)
            sent: list[tuple[float, str]] = []
            start = time.monotonic()

            async def one(i: int) -> None:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
                t0 = time.time()  # wall clock: compared with the worker's started_at
                op = await client.submit("diagnostic", NOOP)
                sent.append((t0, op.operation_id))

            await asyncio.gather(*(one(i) for i in range(count)))
            finals = [await client.wait(op_id) for _, op_id in sent]
        t0_of = {op_id: t0 for t0, op_id in sent}
        dispatch = [(op.dispatched_at - op.created_at).total_seconds() for op in finals]
        start_lat = [op.started_at.timestamp() - t0_of[op.operation_id] for op in finals]
        return {
            "rate_per_s": rate,
            "dispatch_latency": summary(dispatch),
            "submit_to_start": summary(start_lat),
        }
    finally:
        await cluster.stop()


async def bench_round_trip(root: Path, count: int) -> dict[str, Any]:
    cluster = await fleet(root, workers=2, slots=1)
    try:
        async with cluster.client() as client:
            samples = []
            for i in range(count + 20):
                t0 = time.perf_counter()
                op = await client.submit("diagnostic", NOOP)
                done = await client.get(op.operation_id, wait_s=10)
                if done.status != "completed":
                    raise RuntimeError(f"round trip: {done.status}")
                if i >= 20:
                    samples.append(time.perf_counter() - t0)
        return {"round_trip": summary(samples)}
    finally:
        await cluster.stop()


def completed_count(metrics: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("workfleet_operations_completed_total{")
    )


async def bench_burst(
    root: Path, count: int, *, batched: bool, in_flight: int = 64
) -> dict[str, Any]:
    cluster = await fleet(root, workers=4, slots=4)
    try:
        async with cluster.client() as client:
            base = completed_count(await client.metrics())
            limit = asyncio.Semaphore(in_flight)

            async def submit() -> None:
                async with limit:
                    await client.submit("diagnostic", NOOP)

            start = time.perf_counter()
            if batched:
                await client.submit_many([("diagnostic", NOOP)] * count, chunk=500)
            else:
                await asyncio.gather(*(submit() for _ in range(count)))
            submitted = time.perf_counter() - start

            async def all_done() -> bool:
                return completed_count(await client.metrics()) - base >= count

            await wait_for(all_done, timeout_s=600, interval_s=0.05, what="the burst")
            total = time.perf_counter() - start
        return {
            "burst": {
                "n": count,
                "batched": batched,
                "in_flight": in_flight,
                "submit_s": submitted,
                "total_s": total,
                "ops_per_s": count / total,
                "submits_per_s": count / submitted,
            }
        }
    finally:
        await cluster.stop()


async def bench_failover(root: Path, trials: int) -> dict[str, Any]:
    cluster = new_cluster(root)
    await cluster.start_backend()
    quiet = {"WORKFLEET_LOG_LEVEL": "WARNING"}
    await cluster.start_worker("spare", env=quiet)
    samples = []
    try:
        async with cluster.client() as client:
            for trial in range(trials):
                victim = f"victim{trial}"
                await cluster.start_worker(victim, env=quiet)
                await cluster.wait_workers(victim, "spare")
                await client.drain("spare")
                op = await client.submit("diagnostic", {"action": "sleep", "seconds": 30})

                async def running(op_id: str = op.operation_id) -> bool:
                    return (await client.get(op_id)).status == "running"

                await wait_for(running, what="running")
                await client.drain("spare", undo=True)
                killed = time.time()
                cluster.workers[victim].signal(signal.SIGKILL)

                async def moved(op_id: str = op.operation_id) -> Any:
                    seen = await client.get(op_id)
                    running = seen.status == "running" and seen.attempt >= 2
                    return seen if running and seen.dispatched_at else None

                rerun = await wait_for(moved, timeout_s=120, interval_s=0.01, what="re-dispatch")
                samples.append(rerun.dispatched_at.timestamp() - killed)
                await client.cancel(op.operation_id)
                await client.wait(op.operation_id, timeout_s=30)
        return {"failover": {**summary(samples), "health_interval_s": DEFAULT.health_interval_s}}
    finally:
        await cluster.stop()


def table(results: dict[str, Any]) -> str:
    rows = []
    lat = results.get("latency")
    if lat:
        d, s = lat["dispatch_latency"], lat["submit_to_start"]
        rows.append(
            f"dispatch latency (dispatched_at - created_at), n={d['n']}: "
            f"p50 {d['p50_ms']:.2f} ms, p99 {d['p99_ms']:.2f} ms, max {d['max_ms']:.2f} ms"
        )
        rows.append(
            f"submit -> start at {lat['rate_per_s']:.0f}/s, n={s['n']}: "
            f"p50 {s['p50_ms']:.2f} ms, p99 {s['p99_ms']:.2f} ms"
        )
    if "round_trip" in results:
        r = results["round_trip"]["round_trip"]
        rows.append(
            f"no-op round trip, n={r['n']}: p50 {r['p50_ms']:.2f} ms, p99 {r['p99_ms']:.2f} ms"
        )
    for key in ("burst", "burst_batched"):
        if key in results:
            b = results[key]["burst"]
            how = "batches of 500" if b["batched"] else f"{b['in_flight']} submits in flight"
            rows.append(
                f"burst of {b['n']} no-ops (4 workers x 4 slots, {how}): "
                f"{b['ops_per_s']:.0f} ops/s end to end ({b['submits_per_s']:.0f} submits/s)"
            )
    if "failover" in results:
        f = results["failover"]["failover"]
        rows.append(
            f"failover after SIGKILL, {f['n']} trials: p50 {f['p50_ms']:.0f} ms, "
            f"max {f['max_ms']:.0f} ms (health interval {f['health_interval_s']} s)"
        )
    return "\n".join(rows)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/core.json"))
    parser.add_argument("--auth-mode", choices=["token", "mtls"], default="token")
    parser.add_argument("--db-sync", choices=["full", "normal"], default="full")
    parser.add_argument(
        "--only", choices=["latency", "round_trip", "burst", "burst_batched", "failover"]
    )
    args = parser.parse_args()
    AUTH_MODE[0] = args.auth_mode
    BACKEND_ENV["WORKFLEET_DB_SYNC"] = args.db_sync
    n_lat, n_rt, n_burst, n_fail = (100, 50, 500, 3) if args.quick else (600, 300, 5000, 12)
    results: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
        "quick": args.quick,
        "auth_mode": args.auth_mode,
        "db_sync": args.db_sync,
    }
    with tempfile.TemporaryDirectory(prefix="wf-bench-") as tmp:
        root = Path(tmp)
        steps = {
            "latency": lambda: bench_latency(root / "latency", n_lat, 50.0),
            "round_trip": lambda: bench_round_trip(root / "rt", n_rt),
            "burst": lambda: bench_burst(root / "burst", n_burst, batched=False),
            "burst_batched": lambda: bench_burst(root / "burst_b", n_burst, batched=True),
            "failover": lambda: bench_failover(root / "failover", n_fail),
        }
        for name, step in steps.items():
            if args.only in (None, name):
                results[name] = await step()
                print(table({name: results[name]}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print(f"written to {args.out}")


if __name__ == "__main__":
    asyncio.run(main())
