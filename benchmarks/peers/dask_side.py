"""Dask distributed side of the peers benchmark. Runs in benchmarks/results/peers-venv, started
by run.py; writes its figures as JSON to --out.

- `LocalCluster(n_workers=SLOTS, threads_per_worker=1, processes=True)`: a local scheduler and
  one worker process per slot, each under a Nanny (the defaults otherwise)
- latency, round trip, burst: one cluster; SIGKILL: a fresh cluster per trial, the worker
  process running the task is SIGKILLed (its Nanny restarts it), the scheduler reschedules
"""

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

SYSTEM = "dask"


def noop(t0: float) -> float:
    """The no-op: its first line is the start timestamp, returned to the client."""
    started = time.time()
    return started


def hold(tag: str, log_path: str, stop_path: str, max_s: float) -> float:
    """A long task for the SIGKILL step: records its start (first line), then waits for the stop
    file or max_s."""
    started = time.time()
    record = {"tag": tag, "t": started, "pid": os.getpid()}
    with open(log_path, "a") as log:
        log.write(json.dumps(record) + "\n")
    while time.time() < started + max_s and not os.path.exists(stop_path):
        time.sleep(0.01)
    return started


def cluster(slots: int) -> Any:
    from dask.distributed import LocalCluster

    return LocalCluster(
        n_workers=slots,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )


def warm_up(client: Any) -> None:
    for _ in range(20):
        client.submit(noop, 0.0, pure=False).result(timeout=30)


def bench_latency(client: Any, count: int, rate: float) -> dict[str, Any]:
    warm_up(client)
    sent = []
    start = time.monotonic()
    for i in range(count):  # open loop: each submit at its intended time
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        t0 = time.time()
        sent.append((t0, client.submit(noop, t0, pure=False)))
    return common.summary([future.result(timeout=60) - t0 for t0, future in sent])


def bench_round_trip(client: Any, count: int) -> dict[str, Any]:
    warm_up(client)
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        client.submit(noop, 0.0, pure=False).result(timeout=10)
        samples.append(time.perf_counter() - t0)
    return common.summary(samples)


def bench_burst(client: Any, count: int, *, batched: bool) -> dict[str, Any]:
    from dask.distributed import wait

    warm_up(client)
    wall_start, start = time.time(), time.perf_counter()
    if batched:
        futures = client.map(noop, [0.0] * count, pure=False)
    else:
        futures = [client.submit(noop, 0.0, pure=False) for _ in range(count)]
    submitted = time.perf_counter() - start
    wait(futures, timeout=600)
    total = time.perf_counter() - start
    if any(f.status != "finished" for f in futures):
        raise RuntimeError("dask burst: not every future finished")
    how = "client.map" if batched else "client.submit per task"
    last = max(client.gather(futures)) - wall_start  # when the last task started
    return common.burst_figures(
        count, submitted, total, batched=batched, submit=how, last_task_started_s=last
    )


def kill_trial(slots: int, tmp: Path, trial: int) -> dict[str, Any]:
    from dask.distributed import Client

    tag, log = f"kill-{trial}", tmp / "starts.jsonl"
    stop = tmp / f"stop-{tag}"
    with cluster(slots) as local, Client(local) as client:
        client.wait_for_workers(slots, timeout=60)
        try:
            future = client.submit(hold, tag, str(log), str(stop), 300.0, pure=False)
            first = common.wait_starts(log, tag, 1, timeout_s=30)[0]
            killed = time.time()
            os.kill(first["pid"], signal.SIGKILL)
            common.wait_starts(log, tag, 2, timeout_s=60)
            time.sleep(0.5)  # any further copy would show up here
            starts = common.read_starts(log, tag)
        finally:
            stop.touch()
        status = future.status
    rerun = starts[1] if len(starts) > 1 else None
    return {
        "rerun_after_s": rerun["t"] - killed if rerun else None,
        "first": first,
        "rerun": rerun,
        "starts_seen": len(starts),
        "future_status": status,
    }


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import dask
    import distributed
    from dask.distributed import Client

    results: dict[str, Any] = {
        "system": SYSTEM,
        "versions": {"dask": dask.__version__, "distributed": distributed.__version__},
        "config": {
            "cluster": f"LocalCluster(n_workers={args.slots}, threads_per_worker=1, "
            "processes=True, dashboard_address=None)",
            "allowed_failures": dask.config.get("distributed.scheduler.allowed-failures"),
            "kill_worker": "SIGKILL of the worker process running the task (not its Nanny); "
            "a fresh cluster for each trial",
        },
    }
    steps = [
        ("submit_to_start", lambda c: bench_latency(c, args.latency, args.rate)),
        ("round_trip", lambda c: bench_round_trip(c, args.round_trip)),
        ("burst", lambda c: bench_burst(c, args.burst, batched=False)),
        ("burst_batched", lambda c: bench_burst(c, args.burst, batched=True)),
    ]
    with cluster(args.slots) as local, Client(local) as client:
        client.wait_for_workers(args.slots, timeout=60)
        for name, step in steps:
            results[name] = step(client)
            common.progress(SYSTEM, common.describe(name, results[name]))
    samples = [kill_trial(args.slots, tmp, trial) for trial in range(args.kill_trials)]
    results["kill_worker"] = common.kill_figures(
        samples, "SIGKILL of the worker process running it"
    )
    common.progress(SYSTEM, common.describe("kill_worker", results["kill_worker"]))
    return results


def main() -> None:
    parser = common.side_parser(__doc__.split("\n\n")[0])
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the clusters close
    with tempfile.TemporaryDirectory(prefix="peers-dask-") as tmp:
        results = run(args, Path(tmp))
    args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
