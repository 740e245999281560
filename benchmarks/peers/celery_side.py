"""Celery side of the peers benchmark. Runs in benchmarks/results/peers-venv, started by run.py
with the URL of the Redis server run.py started; writes its figures as JSON to --out.

- latency, round trip, burst: one worker node, `-P prefork -c SLOTS`
- SIGKILL: two nodes of `-c 1` each (an idle slot elsewhere), fresh for every trial; the task
  records its start (pid, node) in a file; then either the pool child running it is SIGKILLed
  (`child`: task_reject_on_worker_lost requeues it) or the whole node, main process and pool
  (`node`: the message waits in Redis's unacked set for the visibility timeout)
"""

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent
SYSTEM = "celery"


class Node:
    """One `celery worker` process (and its prefork pool) in its own process group."""

    def __init__(self, name: str, concurrency: int, log_dir: Path) -> None:
        self.name = f"{name}@bench"
        self.log_path = log_dir / f"{name}.log"
        command = [sys.executable, "-m", "celery", "-A", "celery_app", "worker"]
        command += ["-P", "prefork", "-c", str(concurrency), "-n", self.name]
        command += ["--loglevel", "WARNING", "--without-gossip", "--without-mingle"]
        with self.log_path.open("ab") as log:
            self.popen = subprocess.Popen(
                command, cwd=HERE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self) -> None:
        """SIGKILL the node: the main process and its pool children (one process group)."""
        os.killpg(self.popen.pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=15)
        with contextlib.suppress(ProcessLookupError):  # a pool child outliving its parent
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait()


class Fleet:
    def __init__(self, app: Any, log_dir: Path) -> None:
        self.app = app
        self.log_dir = log_dir
        self.nodes: dict[str, Node] = {}

    def start(self, *specs: tuple[str, int]) -> None:
        for name, concurrency in specs:
            node = Node(name, concurrency, self.log_dir)
            self.nodes[node.name] = node
        self.wait_ready(list(self.nodes))

    def wait_ready(self, names: list[str], timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            replies = self.app.control.ping(destination=names, timeout=0.5)
            if set(names) <= {name for reply in replies for name in reply}:
                return
        logs = "\n".join(n.log_path.read_text()[-2000:] for n in self.nodes.values())
        raise RuntimeError(f"celery workers {names} not ready after {timeout_s} s:\n{logs}")

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        self.nodes.clear()


def warm_up(noop: Any) -> None:
    for _ in range(20):
        noop.delay(0.0).get(timeout=30)


def bench_latency(noop: Any, count: int, rate: float) -> dict[str, Any]:
    warm_up(noop)
    sent = []
    start = time.monotonic()
    for i in range(count):  # open loop: each submit at its intended time
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        t0 = time.time()
        sent.append((t0, noop.apply_async((t0,))))
    return common.summary([result.get(timeout=60) - t0 for t0, result in sent])


def bench_round_trip(noop: Any, count: int) -> dict[str, Any]:
    warm_up(noop)
    samples = []
    for _ in range(count):
        t0 = time.perf_counter()
        noop.delay(0.0).get(timeout=10)
        samples.append(time.perf_counter() - t0)
    return common.summary(samples)


def bench_burst(noop: Any, count: int, *, batched: bool) -> dict[str, Any]:
    from celery import group
    from celery.result import ResultSet

    warm_up(noop)
    wall_start, start = time.time(), time.perf_counter()
    if batched:
        results: Any = group(noop.s(0.0) for _ in range(count)).apply_async()
    else:
        results = ResultSet([noop.apply_async((0.0,)) for _ in range(count)])
    submitted = time.perf_counter() - start
    starts = results.get(timeout=600)  # a native join on the Redis backend
    total = time.perf_counter() - start
    how = "group(...).apply_async()" if batched else "apply_async per task"
    last = max(starts) - wall_start  # when the last task started: a check on the join's cost
    return common.burst_figures(
        count, submitted, total, batched=batched, submit=how, last_task_started_s=last
    )


def kill_trial(fleet: Fleet, hold: Any, tmp: Path, kind: str, trial: int, wait_s: float) -> dict:
    fleet.start((f"{kind}{trial}a", 1), (f"{kind}{trial}b", 1))
    tag, log = f"{kind}-{trial}", tmp / "starts.jsonl"
    stop = tmp / f"stop-{tag}"
    try:
        hold.apply_async((tag, str(log), str(stop), 300.0))
        first = common.wait_starts(log, tag, 1, timeout_s=30)[0]
        killed = time.time()
        if kind == "child":
            os.kill(first["pid"], signal.SIGKILL)
        else:
            fleet.nodes[first["node"]].kill()
        starts = common.wait_starts(log, tag, 2, timeout_s=wait_s)
        time.sleep(0.5)  # any further copy would show up here
        starts = common.read_starts(log, tag)
    finally:
        stop.touch()
        fleet.stop()
    rerun = starts[1] if len(starts) > 1 else None
    return {
        "rerun_after_s": rerun["t"] - killed if rerun else None,
        "first": first,
        "rerun": rerun,
        "starts_seen": len(starts),
    }


def flush(redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushall()


def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import celery
    import celery_app
    import kombu
    import redis

    results: dict[str, Any] = {
        "system": SYSTEM,
        "versions": {"celery": celery.__version__, "kombu": kombu.__version__},
        "config": {
            **celery_app.CONFIG,
            "redis_py": redis.__version__,
            "worker": f"-P prefork -c {args.slots} --without-gossip --without-mingle",
            "kill_worker": "2 nodes x -c 1, fresh for each trial",
        },
    }
    fleet = Fleet(celery_app.app, tmp)
    steps = [
        ("submit_to_start", lambda: bench_latency(celery_app.noop, args.latency, args.rate)),
        ("round_trip", lambda: bench_round_trip(celery_app.noop, args.round_trip)),
        ("burst", lambda: bench_burst(celery_app.noop, args.burst, batched=False)),
        ("burst_batched", lambda: bench_burst(celery_app.noop, args.burst, batched=True)),
    ]
    flush(args.redis_url)
    fleet.start(("perf", args.slots))
    try:
        for name, step in steps:
            results[name] = step()
            common.progress(SYSTEM, common.describe(name, results[name]))
    finally:
        fleet.stop()
    kinds = [
        ("kill_child", "child", args.kill_trials, 30.0, "SIGKILL of the pool child running it"),
        ("kill_node", "node", args.node_kill_trials, args.visibility_timeout + 60.0,
         "SIGKILL of the whole worker node (main process and pool)"),
    ]  # fmt: skip
    for name, kind, trials, wait_s, what in kinds:
        samples = []
        for trial in range(trials):
            flush(args.redis_url)
            samples.append(kill_trial(fleet, celery_app.hold, tmp, kind, trial, wait_s))
        results[name] = common.kill_figures(samples, what)
        common.progress(SYSTEM, common.describe(name, results[name]))
    return results


def main() -> None:
    parser = common.side_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--node-kill-trials", type=int, default=3)
    parser.add_argument("--visibility-timeout", type=float, default=10.0)
    args = parser.parse_args()
    os.environ["PEERS_REDIS_URL"] = args.redis_url
    os.environ["PEERS_VISIBILITY_TIMEOUT_S"] = str(args.visibility_timeout)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so `finally` stops the workers
    with tempfile.TemporaryDirectory(prefix="peers-celery-") as tmp:
        results = run(args, Path(tmp))
    args.out.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
