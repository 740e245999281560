"""Load scenarios: how much the fleet does and how fast, with no faults. Throughput with the
queue kept full (baseline), dispatch latency under an open-loop arrival rate (latency), what
health checks cost (health-overhead), a burst of concurrent submits (concurrent), and memory
and file descriptors over a long mixed run (soak)."""

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from typing import Any

import psutil
from prometheus_client.parser import text_string_to_metric_families

from workfleet.backend.orchestrator import RECENT_TERMINAL
from workfleet.harness.cluster import Cluster, wait_for
from workfleet.harness.run import (
    Options,
    Result,
    Run,
    Scenario,
    fleet,
    options_of,
    sleep_params,
    unfinished,
)
from workfleet.harness.stats import distribution, peak_overlap, trend
from workfleet.protocol import OperationView

SLO_S = 0.1  # submit -> start with an idle slot (DESIGN §9: the brief's bound)
FAST_CHECKS_S = 0.1  # health-overhead: the amplified side
CHECKS_OFF_S = 3600.0  # the health loop cannot be switched off (interval > 0): never in a run
PRODUCTION_CHECKS_S = 10.0
OVERHEAD_LIMIT_PCT = 5.0
SOAK_WAVE = 100  # soak: memory and fds are read after each wave of this many operations
# ...and fitted once the backend's memory of recent final operations (params and results
# included) is full: until then RSS rises by design, after it a rise is a leak
SOAK_WARMUP = RECENT_TERMINAL
SOAK_MEASURED = 1000  # operations after the warm-up
RSS_SLOPE_LIMIT_KB = 2.0  # per operation; a leak fails both this and the growth limit
RSS_GROWTH_LIMIT_MB = 5.0
FD_TOLERANCE = 10  # connections in the pools come and go
# glibc raises its mmap threshold once a large block is freed, so later 1 MB payloads land on
# the heap, and RSS keeps what the allocator holds rather than what is live. Measured here
# (2,000 operations, RSS over the last 1,000): +5.4 MB with the default allocator, +0.4 MB with
# this fixed threshold, +0.7 MB without large payloads. Fixed, RSS follows live memory.
STEADY_MALLOC = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}


async def baseline(run: Run, opts: Options) -> Result:
    """Throughput with N one-slot workers and the queue kept full: ops/hour and efficiency
    against the ideal (every slot busy all the time: ops x duration / workers)."""
    workers, count = opts.workers or 10, opts.operations or 200
    op_s = opts.op_seconds or 1.0
    await fleet(run, workers)
    run.mark(f"submit {count} x sleep {op_s:g} s")
    started = time.time()
    await run.submit_all(count, sleep_params(op_s))
    submit_s = time.time() - started
    result = await run.finish(
        "baseline", options_of(opts, workers, count, op_s), drain_s=count * op_s
    )
    makespan = result.figures["ops"]["makespan_s"]
    ideal = count * op_s / workers
    result.figures |= {
        "submit_s": round(submit_s, 3),
        "ideal_s": round(ideal, 3),
        "efficiency": round(ideal / makespan, 3) if makespan else 0.0,
        "ops_per_hour": round(count / makespan * 3600) if makespan else 0,
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


# ---- latency (open loop) -----------------------------------------------------------------


async def open_loop(
    count: int, rate: float, send: Callable[[float], Coroutine[Any, Any, None]]
) -> None:
    """`count` sends at `rate` per second, each started at its own time whatever the earlier
    ones are doing: a slow answer never holds back the next send (no coordinated omission).
    `send` gets its intended time (wall clock, comparable with the backend's timestamps);
    returns once every send has returned."""
    start = time.time()
    sends: list[asyncio.Task[None]] = []
    for n in range(count):
        intended = start + n / rate
        await asyncio.sleep(max(0.0, intended - time.time()))
        sends.append(asyncio.create_task(send(intended)))
    await asyncio.gather(*sends)


async def timed_submit(
    run: Run, params: dict[str, Any], intended: float, answers: list[tuple[float, float]]
) -> str | None:
    """run.submit, its latency from the intended send time appended to `answers` as
    (seconds since the run started, seconds)."""
    op_id = await run.submit(params)
    answers.append((intended - run.t0, time.time() - intended))
    return op_id


async def latency(run: Run, opts: Options) -> Result:
    """Open loop: submits sent on a fixed schedule (5/s, 200 of them by default) on a fleet
    with idle slots. Latencies run from each submit's *intended* send time, so a slow answer
    shows in the figures instead of delaying the sends after it. Reports, with the count:
    the submit's answer, submit -> start as the backend saw it (started_at - created_at) and
    as the client saw it (started_at - intended send time, DESIGN §9's protocol)."""
    workers, count, rate = opts.workers or 4, opts.operations or 200, opts.rate or 5.0
    op_s = opts.op_seconds or 0.0
    params = sleep_params(op_s) if op_s else {"action": "noop"}
    await fleet(run, workers)
    run.mark(f"open loop: {count} submits at {rate:g}/s")
    intended: dict[str, float] = {}  # operation id -> its intended send time
    answers: list[tuple[float, float]] = []

    async def send(at: float) -> None:
        op_id = await timed_submit(run, params, at, answers)
        if op_id is not None:
            intended[op_id] = at

    await open_loop(count, rate, send)
    result = await run.finish(
        "latency", options_of(opts, workers, count, op_s) | {"rate": rate}, drain_s=60
    )
    ops = [op for op in await run.records() if op.operation_id in intended]
    starts = {
        op.operation_id: (op.created_at.timestamp(), op.started_at.timestamp())
        for op in ops
        if op.started_at is not None
    }
    server = [(created - run.t0, start - created) for created, start in starts.values()]
    client = [(intended[i] - run.t0, start - intended[i]) for i, (_, start) in starts.items()]
    result.latencies = {
        "submit answered": answers,
        "submit -> start (backend)": server,
        "submit -> start (client)": client,
    }
    peak = peak_running(ops)
    server_figures = distribution([value for _, value in server])
    result.figures |= {
        "rate_per_s": rate,
        "slots": workers,
        "peak_running": peak,  # below `slots`: a slot was idle at every moment
        "submit_latency": distribution([value for _, value in answers]),
        "submit_to_start_backend": server_figures,
        "submit_to_start_client": distribution([value for _, value in client]),
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    result.checks["idle_capacity"] = peak < workers
    result.checks["submit_to_start_p99_under_100ms"] = server_figures.get("p99_ms", 0.0) < (
        SLO_S * 1000
    )
    return result


def peak_running(ops: Iterable[OperationView]) -> int:
    """The most operations running at one instant (from started_at and finished_at)."""
    return peak_overlap(
        [
            (op.started_at.timestamp(), op.finished_at.timestamp())
            for op in ops
            if op.started_at is not None and op.finished_at is not None
        ]
    )


# ---- health-check overhead (amplified A/B) ----------------------------------------------


def checks_every(seconds: float) -> dict[str, str]:
    return {"WORKFLEET_HEALTH_INTERVAL_S": str(seconds)}


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU of these processes and every descendant (a worker's forkserver and
    executors), counting children that already exited and were waited for."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(pid)
            for process in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.NoSuchProcess):
                    times = process.cpu_times()
                    total += times.user + times.system + times.children_user + times.children_system
    return total


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of a Prometheus text exposition's samples called `name` with these labels."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


async def health_checks_done(run: Run) -> float:
    return metric_total(await run.client.metrics(), "workfleet_worker_health_checks_total")


async def cpu_per_operation(run: Run, workers: int, count: int, op_s: float) -> dict[str, Any]:
    """Start the fleet, then run `count` sleeps and measure, from the first submit until all
    are final, the CPU of the backend and the workers (all, and the backend's alone: its
    share is what grows with the fleet) and the health checks made."""
    names = await fleet(run, workers)
    assert run.cluster.backend is not None
    backend = [run.cluster.backend.pid]
    pids = backend + [run.worker(name).pid for name in names]
    checks, began = await health_checks_done(run), time.monotonic()
    cpu, backend_cpu = cpu_seconds(pids), cpu_seconds(backend)
    await run.submit_all(count, sleep_params(op_s))
    await run.drain(count * op_s + 60)
    cpu, window = cpu_seconds(pids) - cpu, time.monotonic() - began
    backend_cpu = cpu_seconds(backend) - backend_cpu
    checks = await health_checks_done(run) - checks
    completed = sum(1 for op in await run.records() if op.status == "completed")
    return {
        "cpu_s": round(cpu, 3),
        "backend_cpu_s": round(backend_cpu, 3),
        "window_s": round(window, 2),
        "health_checks": int(checks),
        "completed": completed,
        "cpu_ms_per_op": round(cpu / max(1, completed) * 1000, 3),
    }


def extrapolated_overhead_pct(
    with_checks: float, without: float, interval_s: float, production_s: float
) -> float:
    """The CPU per operation that checks every `interval_s` add, scaled to checks every
    `production_s` (their cost goes with their rate), as a share of the CPU without checks."""
    return 100 * (with_checks - without) * (interval_s / production_s) / without


def core_pct(workers: int, cpu_ms_per_check: float) -> float:
    """DESIGN §9's figure: checking `workers` at the production interval, in % of one core."""
    checks_per_s = workers / PRODUCTION_CHECKS_S
    return checks_per_s * cpu_ms_per_check / 1000 * 100


@contextlib.asynccontextmanager
async def second_run(run: Run, name: str, backend_env: dict[str, str]) -> AsyncIterator[Run]:
    """Another cluster for an A/B scenario, in its own subdirectory of the run's root (its
    logs and data next to the first one's), stopped on the way out."""
    cluster = Cluster(run.cluster.root / name, timing=run.cluster.timing, backend_env=backend_env)
    await cluster.start_backend()
    other = Run(cluster, run.say)
    other.t0 = run.t0  # one timeline: its marks and samples follow the first run's
    try:
        yield other
    finally:
        await other.client.close()
        await cluster.stop()


async def health_overhead(run: Run, opts: Options) -> Result:
    """Amplified A/B (anchors §5): the same workload with health checks every 0.1 s, then on a
    fresh cluster with checks off (an interval of an hour: the loop cannot be switched off);
    CPU-seconds of the backend and the workers per completed operation on each side. The
    difference, scaled to the production interval (10 s), is the overhead: under 5 %."""
    workers, count = opts.workers or 10, opts.operations or 100
    op_s = opts.op_seconds or 1.0
    fast = await cpu_per_operation(run, workers, count, op_s)
    result = await run.finish("health-overhead", options_of(opts, workers, count, op_s), drain_s=60)
    await run.cluster.stop()  # its checks must not cost CPU while the other side runs
    run.mark("checks off: a second cluster")
    async with second_run(run, "checks-off", checks_every(CHECKS_OFF_S)) as quiet_run:
        off = await cpu_per_operation(quiet_run, workers, count, op_s)
        quiet = await quiet_run.finish("health-overhead", result.options, drain_s=60)
    extra_ms = fast["cpu_ms_per_op"] - off["cpu_ms_per_op"]
    checks = max(1, fast["health_checks"])
    per_check_ms = (fast["cpu_s"] - off["cpu_s"]) * 1000 / checks
    backend_per_check_ms = (fast["backend_cpu_s"] - off["backend_cpu_s"]) * 1000 / checks
    overhead = extrapolated_overhead_pct(
        fast["cpu_ms_per_op"], off["cpu_ms_per_op"], FAST_CHECKS_S, PRODUCTION_CHECKS_S
    )
    result.figures |= {
        "wall_s": round(run.now(), 2),  # both sides (finish gave the first one's)
        f"checks_every_{FAST_CHECKS_S:g}s": fast,
        "checks_off": off | {"interval_s": CHECKS_OFF_S},
        "extra_cpu_ms_per_op": round(extra_ms, 3),
        "cpu_ms_per_check": round(per_check_ms, 3),
        "backend_cpu_ms_per_check": round(backend_per_check_ms, 3),
        f"overhead_pct_at_{PRODUCTION_CHECKS_S:g}s": round(overhead, 3),
        "backend_core_pct_100_workers": round(core_pct(100, backend_per_check_ms), 3),
    }
    result.checks["checks_off_ledger_clean"] = quiet.passed
    result.checks["all_completed"] = fast["completed"] == off["completed"] == count
    result.checks["overhead_under_5pct"] = overhead < OVERHEAD_LIMIT_PCT
    return result


# ---- concurrent submits ------------------------------------------------------------------


def workers_seen(samples: list[tuple[float, dict[str, str] | None]], state: str) -> list[str]:
    return sorted(
        {name for _, states in samples if states for name, s in states.items() if s == state}
    )


async def concurrent(run: Run, opts: Options) -> Result:
    """100 submits at once (asyncio.gather) on 10 one-slot workers: every submit answered the
    first time (no 5xx, no retry), every operation final exactly once, no worker ever seen
    unavailable (the load must not make health checks fail)."""
    workers, count = opts.workers or 10, opts.operations or 100
    op_s = opts.op_seconds or 0.5
    await fleet(run, workers)
    run.mark(f"{count} submits at once")
    answers: list[tuple[float, float]] = []
    burst = time.time()  # every submit is meant to go at this instant
    await asyncio.gather(
        *(timed_submit(run, sleep_params(op_s), burst, answers) for _ in range(count))
    )
    result = await run.finish(
        "concurrent", options_of(opts, workers, count, op_s), drain_s=count * op_s + 30
    )
    # all were meant for one instant: over time, what shows is when each answer came
    result.latencies["submit, by answer time"] = [(t + wait, wait) for t, wait in answers]
    retried = [e for e in run.history.events if e["kind"] in ("info", "fail")]
    unavailable = workers_seen(run.samples, "temporarily_unavailable")
    failed_checks = metric_total(
        await run.client.metrics(), "workfleet_worker_health_checks_total", result="failure"
    )
    result.figures |= {
        "submit_latency": distribution([value for _, value in answers]),
        "submits_not_answered_first_time": [e.get("reason") for e in retried][:10],
        "workers_seen_unavailable": unavailable,
        "failed_health_checks": int(failed_checks),
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    result.checks["every_submit_answered_first_time"] = not retried
    result.checks["no_worker_unavailable"] = not unavailable
    return result


# ---- soak --------------------------------------------------------------------------------

LARGE_PAYLOAD = 1 << 20  # characters, echoed back: 1 MB in the params, 1 MB in the result
DATASET = ("SOAK", "1h")  # symbol, timeframe: 1,000 synthetic bars, put before the soak
BACKTEST = {
    "symbol": DATASET[0],
    "timeframe": DATASET[1],
    "strategy": "sma_crossover",
    "strategy_params": {"fast": 5, "slow": 20},
}


def soak_mix(count: int, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """The soak's operations in submit order, (operation type, params): one designed failure
    in 20, a 1 MB payload in 250, a short backtest in 100, and otherwise short sleeps, CPU
    burns and no-ops drawn from `seed`."""
    rng = random.Random(seed)
    mix: list[tuple[str, dict[str, Any]]] = []
    for n in range(count):
        roll = rng.random()
        if n % 20 == 10:
            mix.append(("diagnostic", {"action": "fail", "payload": n}))
        elif n % 250 == 125:
            mix.append(("diagnostic", {"action": "noop", "payload": "x" * LARGE_PAYLOAD}))
        elif n % 100 == 60:
            mix.append(("backtesting", BACKTEST))
        elif roll < 0.6:
            mix.append(("diagnostic", sleep_params(round(rng.uniform(0.05, 0.3), 3))))
        elif roll < 0.85:
            mix.append(
                ("diagnostic", {"action": "cpu", "seconds": round(rng.uniform(0.01, 0.05), 3)})
            )
        else:
            mix.append(("diagnostic", {"action": "noop"}))
    return mix


def kind_of(operation: tuple[str, dict[str, Any]]) -> str:
    operation_type, params = operation
    if operation_type != "diagnostic":
        return operation_type
    large = len(str(params.get("payload") or "")) >= LARGE_PAYLOAD
    return "large" if large else str(params["action"])


async def put_soak_dataset(run: Run) -> None:
    from workfleet.operations.marketdata import generate, to_csv  # numpy, pandas: soak only

    symbol, timeframe = DATASET
    await run.client.put_dataset(
        symbol, timeframe, to_csv(generate(bars=1000, timeframe=timeframe, seed=1))
    )


async def all_final(run: Run) -> bool:
    return await unfinished(run) == 0


def rss_figures(readings: list[tuple[int, int, int]], warmup: int) -> dict[str, Any]:
    """From (operations done, RSS bytes, open fds) read after each wave: the RSS trend from
    `warmup` operations on in KB per operation and MB over the window, and the fds' spread."""
    fitted = [r for r in readings if r[0] >= warmup]
    slope, growth = trend([(done, rss) for done, rss, _ in fitted])
    fds = [fd for _, _, fd in fitted]
    return {
        "rss_fitted_from_op": warmup,
        "rss_mb": [round(rss / 2**20, 1) for _, rss, _ in readings],
        "rss_slope_kb_per_op": round(slope / 1024, 3),
        "rss_growth_mb": round(growth / 2**20, 2),
        "fds": [fd for _, _, fd in readings],
        "fds_spread": max(fds) - min(fds) if fds else 0,
    }


async def in_waves(
    run: Run, mix: list[tuple[str, dict[str, Any]]]
) -> tuple[set[str], list[tuple[int, int, int]]]:
    """Submit `mix` SOAK_WAVE operations at a time, each wave drained before the next; after
    each, read the backend's RSS and open fds. Returns the ids of the designed failures and
    the readings (operations done, RSS bytes, fds)."""
    assert run.cluster.backend is not None
    backend = psutil.Process(run.cluster.backend.pid)
    designed: set[str] = set()
    readings: list[tuple[int, int, int]] = []
    for start in range(0, len(mix), SOAK_WAVE):
        wave = mix[start : start + SOAK_WAVE]
        for operation_type, params in wave:
            op_id = await run.submit(params, operation_type=operation_type)
            if op_id is not None and params.get("action") == "fail":
                designed.add(op_id)
        await wait_for(lambda: all_final(run), timeout_s=300, interval_s=0.25, what="a wave")
        readings.append((start + len(wave), backend.memory_info().rss, backend.num_fds()))
    return designed, readings


async def soak(run: Run, opts: Options) -> Result:
    """2,000 mixed operations (short sleeps, CPU burns, no-ops, designed failures, 1 MB
    payloads, short backtests) in waves of 100, the backend's RSS and open fds read after
    each. Over the last 1,000 (the first fill the backend's memory of recent operations) the
    RSS must be flat, a slope under 2 KB per operation or growth under 5 MB (anchors §6), and
    so must the fds; the failures must be exactly the designed ones. The backend runs with a
    fixed mmap threshold (STEADY_MALLOC) so that its RSS measures live memory."""
    workers, count = opts.workers or 6, opts.operations or SOAK_WARMUP + SOAK_MEASURED
    await fleet(run, workers, slots=2)
    await put_soak_dataset(run)
    mix = soak_mix(count, opts.seed)
    designed, readings = await in_waves(run, mix)
    result = await run.finish("soak", options_of(opts, workers, count, 0.0), drain_s=60)
    ops = await run.records()
    failed = {op.operation_id for op in ops if op.status == "failed"}
    queued = [
        (op.created_at.timestamp() - run.t0, (op.started_at - op.created_at).total_seconds())
        for op in ops
        if op.started_at is not None
    ]
    result.latencies["submit -> start (backend, queueing included)"] = queued
    memory = rss_figures(readings, warmup=min(SOAK_WARMUP, count // 2))
    result.figures |= {
        "mix": dict(Counter(map(kind_of, mix))),
        "designed_failures": len(designed),
        "failed": len(failed),
        "submit_to_start_backend": distribution([value for _, value in queued]),
        **memory,
    }
    slope_ok = memory["rss_slope_kb_per_op"] < RSS_SLOPE_LIMIT_KB
    result.checks["all_final"] = result.ledger.terminal == count
    result.checks["failed_exactly_the_designed"] = failed == designed
    result.checks["rss_flat"] = slope_ok or memory["rss_growth_mb"] < RSS_GROWTH_LIMIT_MB
    result.checks["fds_flat"] = memory["fds_spread"] <= FD_TOLERANCE
    return result


SCENARIOS = {
    "baseline": Scenario(baseline),
    "latency": Scenario(latency),
    "health-overhead": Scenario(health_overhead, lambda _: checks_every(FAST_CHECKS_S)),
    "concurrent": Scenario(concurrent),
    "soak": Scenario(soak, lambda _: dict(STEADY_MALLOC)),
}
