"""workfleet, Celery (+ Redis) and Dask distributed side by side: the same no-op protocol.

    .venv/bin/python benchmarks/peers/run.py [--quick] [--only workfleet,celery,dask]
        [--slots 2] [--burst N] [--visibility-timeout 10] [--note TEXT]
        [--out benchmarks/results/peers.json]

Installs what the peers need where it is missing: Debian's `redis-server` (apt-get, with sudo
when not root) and `celery[redis] redis dask distributed` into their own virtual environment,
benchmarks/results/peers-venv (never into the project's). Starts a Redis server on a free port
with a temporary directory for the Celery run and stops it after. Runs the systems one at a
time, each side in its own process (workfleet_side.py, celery_side.py, dask_side.py), then
prints one table (figure x system, with the DESIGN §9 target) and writes everything to JSON.

Figures (DESIGN §9's protocol): submit -> first line of the task at 50/s open loop, p50/p99;
no-op round trip (submit -> result seen by the client), p50; burst of N no-ops (submit all, wait
for all), one submit per task and batched; SIGKILL of the worker running a long task -> the task
running again (an idle slot elsewhere). `--quick` keeps the whole run under ~3 minutes.
"""

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "benchmarks" / "results"
PEER_PACKAGES = ["celery[redis]", "redis", "dask", "distributed"]
SYSTEMS = ("workfleet", "celery", "dask")

QUICK = {"latency": 100, "round_trip": 50, "burst": 500, "kill_trials": 2, "node_kill_trials": 1}
FULL = {"latency": 600, "round_trip": 300, "burst": 5000, "kill_trials": 5, "node_kill_trials": 3}

# DESIGN §9 "our target" column
TARGETS = {
    "start_p50": "-",
    "start_p99": "<= 3.5 (must <= 20)",
    "rt_p50": "<= 5",
    "burst": ">= 900",
    "burst_batched": ">= 900",
    "kill_worker": "<= 1 (must <= 5)",
    "kill_node": "<= 1 (must <= 5)",
    "kill_child": "-",
}
# DESIGN §9's measurements of the peers, kept in the JSON for comparison with this run
DESIGN_PEERS = {
    "celery_redis_acks_late": {
        "submit_to_start_p50_p99_ms": [2.4, 3.5],
        "round_trip_p50_ms": 1.5,
        "burst_ops_per_s": 900,
        "sigkill": "never (default: lost; safe: waits for the 1 h visibility timeout)",
    },
    "dask": {
        "submit_to_start_p50_p99_ms": [2.2, 5.1],
        "round_trip_p50_ms": 10.6,
        "burst_ops_per_s": 570,
        "sigkill_s": 0.01,
    },
}


# ---------------------------------------------------------------- installing and starting


def run_checked(command: list[str], what: str) -> None:
    print(f"$ {' '.join(command)}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")


def ensure_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    print("redis-server is missing: installing the Debian package redis-server", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    if sudo and not shutil.which("sudo"):
        raise RuntimeError("redis-server is missing, and we are neither root nor have sudo")
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    try:
        run_checked([*sudo, *env_prefix, "apt-get", "install", "-y", "redis-server"], "apt-get")
    except RuntimeError:
        run_checked([*sudo, "apt-get", "update"], "apt-get update")
        run_checked([*sudo, *env_prefix, "apt-get", "install", "-y", "redis-server"], "apt-get")
    found = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not Path(found).exists():
        raise RuntimeError("apt-get installed redis-server, but it is not on PATH")
    return found


def ensure_peers_venv(venv: Path) -> Path:
    """The peers' own virtual environment; (re)installs when the package list changed."""
    python = venv / "bin" / "python"
    stamp = venv / "peers-packages.txt"
    wanted = "\n".join(PEER_PACKAGES)
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    print(f"creating {venv} and installing {' '.join(PEER_PACKAGES)} into it", flush=True)
    run_checked([sys.executable, "-m", "venv", str(venv)], "venv")
    run_checked([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], "pip install")
    stamp.write_text(wanted)
    return python


def pip_freeze(python: Path) -> list[str]:
    done = subprocess.run(
        [str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=False
    )
    return done.stdout.split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """`redis-server` on a free loopback port, no persistence, in a temporary directory."""

    def __init__(self, binary: str) -> None:
        self.dir = tempfile.TemporaryDirectory(prefix="peers-redis-")
        self.port = free_port()
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        command += ["--dir", self.dir.name, "--save", "", "--appendonly", "no"]
        command += ["--logfile", str(Path(self.dir.name) / "redis.log")]
        self.popen = subprocess.Popen(command, start_new_session=True)
        self.wait_ready()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.popen.returncode}")
            if self.ping():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not answer PING within 20 s")

    def version(self) -> str:
        done = subprocess.run([self.popen.args[0], "--version"], capture_output=True, text=True)
        return done.stdout.strip()

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.dir.cleanup()


# ---------------------------------------------------------------- running the sides


def side_command(system: str, python: Path, out: Path, counts: dict[str, int], args: Any) -> list:
    command = [str(python), str(HERE / f"{system}_side.py"), "--out", str(out)]
    command += ["--slots", str(args.slots), "--latency", str(counts["latency"])]
    command += ["--round-trip", str(counts["round_trip"]), "--burst", str(counts["burst"])]
    command += ["--kill-trials", str(counts["kill_trials"])]
    if system == "celery":
        command += ["--node-kill-trials", str(counts["node_kill_trials"])]
        command += ["--visibility-timeout", str(args.visibility_timeout)]
    return command


def run_side(command: list[str], timeout_s: float) -> None:
    """A side in its own process group; SIGTERM on timeout (it stops its workers), then KILL."""
    popen = subprocess.Popen(command, cwd=REPO, start_new_session=True)
    try:
        rc = popen.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(popen.pid, signal.SIGTERM)
        try:
            popen.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(popen.pid, signal.SIGKILL)
        raise RuntimeError(f"timed out after {timeout_s:.0f} s") from None
    except BaseException:
        os.killpg(popen.pid, signal.SIGTERM)
        popen.wait(timeout=30)
        raise
    if rc != 0:
        raise RuntimeError(f"exited with {rc}")


def project_python() -> Path:
    venv_python = REPO / ".venv" / "bin" / "python"
    return venv_python if venv_python.exists() else Path(sys.executable)


def measure(system: str, args: Any, counts: dict[str, int], tmp: Path) -> dict[str, Any]:
    out = tmp / f"{system}.json"
    python = project_python() if system == "workfleet" else ensure_peers_venv(args.venv)
    loadavg_before = list(os.getloadavg())
    started = time.monotonic()
    redis = None
    if system == "celery":
        redis = RedisServer(ensure_redis_server())
    try:
        command = side_command(system, python, out, counts, args)
        if redis:
            command += ["--redis-url", redis.url]
        run_side(command, timeout_s=args.side_timeout)
        result: dict[str, Any] = json.loads(out.read_text())
        if redis:
            result["versions"]["redis_server"] = redis.version()
    finally:
        if redis:
            redis.stop()
    result["wall_s"] = time.monotonic() - started
    result["loadavg_before"] = loadavg_before
    if system != "workfleet":
        result["pip_freeze"] = pip_freeze(python)
    return result


# ---------------------------------------------------------------- the table


def cell(result: dict[str, Any] | None, row: str) -> str:
    if result is None:
        return "failed"
    key, field = {
        "start_p50": ("submit_to_start", "p50_ms"),
        "start_p99": ("submit_to_start", "p99_ms"),
        "rt_p50": ("round_trip", "p50_ms"),
        "burst": ("burst", "ops_per_s"),
        "burst_batched": ("burst_batched", "ops_per_s"),
        "kill_worker": ("kill_worker", "p50_s"),
        "kill_node": ("kill_node", "p50_s"),
        "kill_child": ("kill_child", "p50_s"),
    }[row]
    if key not in result:
        return "n/a"
    figures = result[key]
    if row.startswith("kill"):
        if figures["p50_s"] is None:
            return f"never ({figures['n']})"
        return f"{figures['p50_s']:.3f} / {figures['max_s']:.3f}"
    value = figures[field]
    return f"{value:.0f}" if row.startswith("burst") else f"{value:.2f}"


def kill_rows(results: dict[str, Any]) -> dict[str, Any]:
    """Celery's two SIGKILL cases; workfleet's and Dask's worker is one process to kill."""
    by_system = dict(results)
    celery = by_system.get("celery")
    if celery:
        by_system["celery"] = {**celery, "kill_worker": celery.get("kill_node")}
        if celery.get("kill_node") is None:
            del by_system["celery"]["kill_worker"]
    return by_system


def table(results: dict[str, Any], counts: dict[str, int], args: Any) -> str:
    n = counts["burst"]
    rows = [
        ("start_p50", f"submit -> start at {args.rate:.0f}/s, p50 (ms)"),
        ("start_p99", f"submit -> start at {args.rate:.0f}/s, p99 (ms)"),
        ("rt_p50", "no-op round trip, p50 (ms)"),
        ("burst", f"burst of {n} no-ops, one submit each (ops/s)"),
        ("burst_batched", f"burst of {n} no-ops, batched submit (ops/s)"),
        ("kill_worker", "SIGKILL busy worker -> runs again, p50 / max (s)"),
        ("kill_child", "SIGKILL Celery pool child -> runs again, p50 / max (s)"),
    ]
    shown = kill_rows(results)
    columns = [s for s in SYSTEMS if s in results]
    widths = [56, *[17] * len(columns), 20]
    header = ["figure", *columns, "DESIGN §9 target"]
    lines = ["".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("-" * sum(widths))
    for row, label in rows:
        cells = [label, *[cell(shown[s], row) for s in columns], TARGETS[row]]
        lines.append("".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def notes(args: Any) -> list[str]:
    return [
        f"{args.slots} execution slots per system: workfleet {args.slots} workers x 1 slot; "
        f"Celery one node -P prefork -c {args.slots}; Dask LocalCluster("
        f"n_workers={args.slots}, threads_per_worker=1)",
        "Celery runs its safe configuration: acks_late, prefetch 1, reject_on_worker_lost, "
        f"visibility_timeout {args.visibility_timeout:g} s (default 3600 s), unacked restore "
        "sweep every 1 s (default ~100 s)",
        "SIGKILL busy worker: workfleet's worker process; Celery's whole node (main process "
        "and pool) -> redelivery after the visibility timeout; Dask's worker process",
        "SIGKILL Celery pool child: only the prefork child running the task; "
        "reject_on_worker_lost requeues it once the pool marks the job lost",
        "workfleet's re-run is measured to its new dispatched_at; the peers' to the task's "
        "first line; workfleet's one-submit burst has 64 async submits in flight, the peers "
        "submit from one thread; burst ops/s = N / (first submit -> last result seen by the "
        "client); the peers' JSON also has last_task_started_s",
    ]


# ---------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts: under ~3 minutes")
    parser.add_argument("--only", default=",".join(SYSTEMS), help="comma-separated systems")
    parser.add_argument("--slots", type=int, default=2, help="execution slots per system")
    parser.add_argument("--rate", type=float, default=50.0, help="open-loop submits per second")
    parser.add_argument("--burst", type=int, help="burst size (default 5,000; --quick 500)")
    parser.add_argument("--visibility-timeout", type=float, default=10.0, help="Celery, s")
    parser.add_argument("--venv", type=Path, default=RESULTS / "peers-venv")
    parser.add_argument("--out", type=Path, default=RESULTS / "peers.json")
    parser.add_argument("--note", action="append", default=[], help="a caveat for the JSON")
    parser.add_argument("--side-timeout", type=float, help="seconds per system")
    args = parser.parse_args()
    args.systems = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    if args.side_timeout is None:
        args.side_timeout = 240.0 if args.quick else 1800.0
    return args


def caveats(args: Any, results: dict[str, Any]) -> list[str]:
    loads = {s: r.get("loadavg_before") for s, r in results.items() if r}
    return [
        f"{os.cpu_count()} CPU cores shared by client, broker/scheduler and workers; "
        f"load average (1, 5, 15 min) before each system: {loads}",
        *(["--quick: small counts, p99 rests on few samples"] if args.quick else []),
        *args.note,
    ]


def main() -> None:
    args = parse_args()
    counts = dict(QUICK if args.quick else FULL)
    if args.burst:
        counts["burst"] = args.burst
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        for system in args.systems:
            print(f"--- {system}", flush=True)
            try:
                results[system] = measure(system, args, counts, Path(tmp))
            except Exception as exc:
                print(f"[{system}] failed: {exc}", flush=True)
                errors[system] = str(exc)
                results[system] = None
    text = table(results, counts, args)
    print()
    print(text)
    for line in notes(args):
        print(f"- {line}")
    report = {
        "when": datetime.now(UTC).isoformat(),
        "host": platform.node(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "quick": args.quick,
        "counts": {**counts, "rate_per_s": args.rate, "slots": args.slots},
        "caveats": caveats(args, results),
        "notes": notes(args),
        "table": text.splitlines(),
        "design_targets": TARGETS,
        "design_peers": DESIGN_PEERS,
        "errors": errors,
        "systems": results,
    }
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"written to {args.out}")
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
