"""Load and fault scenarios on real processes (`workfleet loadtest NAME`): each starts a
backend and workers (harness.cluster), submits diagnostic operations while recording the
client's history, hurts the fleet on a schedule, drains, and reconciles the client's
history, every worker's execution log and the backend's records (harness.ledger).

A run passes when the ledger is clean (nothing lost, stuck, final twice, unexpected, and no
stale result accepted) and the scenario's own expectations hold (`checks`)."""

import asyncio
import contextlib
import json
import random
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workfleet.client import ApiError, BackendUnreachable
from workfleet.harness.cluster import FAST, Cluster, Process, wait_for
from workfleet.harness.ledger import (
    TERMINAL,
    BackendMetrics,
    History,
    Reconciliation,
    Record,
    executions,
    reconcile,
)
from workfleet.harness.nemesis import Schedule, Step, generate
from workfleet.protocol import OperationView


@dataclass
class Options:
    workers: int | None = None  # None: the scenario's default
    operations: int | None = None
    seed: int = 1
    duration_s: float = 60.0  # nemesis
    op_seconds: float | None = None
    schedule: Schedule | None = None  # nemesis: replay this instead of generating one
    max_losses: int | None = None  # the backend's attempt budget (None: its default, 3)


@dataclass
class Mark:
    t: float  # seconds since the run started
    label: str


@dataclass
class Result:
    scenario: str
    options: dict[str, Any]
    ledger: Reconciliation
    figures: dict[str, Any] = field(default_factory=dict)
    checks: dict[str, bool] = field(default_factory=dict)
    marks: list[Mark] = field(default_factory=list)
    samples: list[tuple[float, dict[str, str] | None]] = field(default_factory=list)
    finished_at: list[float] = field(default_factory=list)  # per completed op, since start
    schedule: Schedule | None = None

    @property
    def passed(self) -> bool:
        return self.ledger.valid and all(self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "passed": self.passed,
            "options": self.options,
            "figures": self.figures,
            "checks": self.checks,
            "ledger": self.ledger.to_dict(),
            "faults": [{"t": round(m.t, 3), "label": m.label} for m in self.marks],
            "schedule": None if self.schedule is None else _schedule_dict(self.schedule),
        }


def _schedule_dict(schedule: Schedule) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(schedule.to_json())
    return data


def sleep_params(seconds: float, tag: str | None = None) -> dict[str, Any]:
    steps = max(1, min(10, round(seconds / 0.25)))
    return {"action": "sleep", "seconds": seconds, "steps": steps, "payload": tag}


class Run:
    """One scenario's cluster and records: the client's history, the faults it caused, the
    fleet's states sampled over time."""

    def __init__(self, cluster: Cluster, say: Callable[[str], None]) -> None:
        self.cluster = cluster
        self.say = say
        self.history = History()
        self.marks: list[Mark] = []
        self.samples: list[tuple[float, dict[str, str] | None]] = []
        self.t0 = time.time()
        self.backend_restarts = 0
        self.client = cluster.client()
        self._sampler: asyncio.Task[None] | None = None

    def now(self) -> float:
        return time.time() - self.t0

    def mark(self, label: str) -> None:
        self.marks.append(Mark(self.now(), label))
        self.say(f"  [{self.now():7.2f} s] {label}")

    # ---- submitting ---------------------------------------------------------------------------

    async def submit(self, params: dict[str, Any], *, deadline_s: float = 60.0) -> str | None:
        """One submit with its own idempotency key, retried with the same key while the
        backend cannot answer (so an in-doubt submit never becomes a second operation)."""
        key = uuid.uuid4().hex
        self.history.invoke(key)
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                op = await self.client.submit("diagnostic", params, idempotency_key=key)
            except BackendUnreachable as exc:
                self.history.info(key, str(exc)[:200])
            except ApiError as exc:
                if exc.status < 500 and exc.status != 429:
                    self.history.fail(key, f"{exc.status} {exc}")
                    return None
                self.history.info(key, f"{exc.status} {exc}")
            else:
                self.history.ok(key, op.operation_id)
                return op.operation_id
            if time.monotonic() > give_up:
                return None
            await asyncio.sleep(0.2)

    async def submit_all(self, count: int, params: dict[str, Any]) -> list[str]:
        ids = []
        for _ in range(count):
            op_id = await self.submit(params)
            if op_id is not None:
                ids.append(op_id)
        return ids

    # ---- watching -----------------------------------------------------------------------------

    async def start_sampling(self, interval_s: float = 0.25) -> None:
        async def sample() -> None:
            while True:
                try:
                    page = await self.client.workers()
                    states: dict[str, str] | None = {w.worker_id: w.status for w in page.items}
                except (BackendUnreachable, ApiError):
                    states = None
                self.samples.append((self.now(), states))
                await asyncio.sleep(interval_s)

        self._sampler = asyncio.create_task(sample())

    async def records(self) -> list[OperationView]:
        """Every operation the backend lists (all pages); final states are observed."""
        ops: list[OperationView] = []
        cursor: str | None = None
        while True:
            page = await self.client.list(limit=1000, cursor=cursor)
            ops += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        for op in ops:
            self.history.observe(op.operation_id, op.status, op.attempt)
        return ops

    async def drain(self, timeout_s: float) -> bool:
        """Until every acknowledged operation is final (False at the deadline)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with contextlib.suppress(BackendUnreachable):
                ops = {op.operation_id: op for op in await self.records()}
                if all(
                    ops.get(op_id) is not None and ops[op_id].status in TERMINAL
                    for op_id in self.history.acknowledged()
                ):
                    return True
            await asyncio.sleep(0.5)
        return False

    async def operation(self, op_id: str) -> OperationView:
        return await self.client.get(op_id)

    async def wait_until(
        self, check: Callable[[], Awaitable[Any]], what: str, timeout_s: float = 30.0
    ) -> Any:
        async def tolerant() -> Any:
            try:
                return await check()
            except BackendUnreachable:
                return None

        return await wait_for(tolerant, timeout_s=timeout_s, interval_s=0.05, what=what)

    async def worker_status(self, worker_id: str) -> str | None:
        page = await self.client.workers()
        return next((w.status for w in page.items if w.worker_id == worker_id), None)

    # ---- hurting ------------------------------------------------------------------------------

    def worker(self, worker_id: str) -> Process:
        return self.cluster.workers[worker_id]

    def kill(self, worker_id: str) -> None:
        process = self.worker(worker_id)
        process.signal(signal.SIGKILL)
        process.popen.wait(timeout=10)
        self.mark(f"kill {worker_id}")

    async def restart(self, worker_id: str, *, proxied: bool = False, slots: int = 1) -> None:
        await self.cluster.start_worker(worker_id, proxied=proxied, slots=slots)
        self.mark(f"restart {worker_id}")

    def pause(self, worker_id: str) -> None:
        self.worker(worker_id).signal(signal.SIGSTOP)
        self.mark(f"pause {worker_id}")

    def resume(self, worker_id: str) -> None:
        self.worker(worker_id).signal(signal.SIGCONT)
        self.mark(f"resume {worker_id}")

    def partition(self, worker_id: str, direction: str = "both", *, heal: bool = False) -> None:
        inbound, outbound = self.worker(worker_id).extra["proxies"]
        chosen = {"both": (inbound, outbound), "in": (inbound,), "out": (outbound,)}[direction]
        for proxy in chosen:
            proxy.heal() if heal else proxy.partition()
        self.mark(f"{'heal' if heal else 'partition'} {worker_id} ({direction})")

    async def restart_backend(self) -> None:
        self.mark("kill backend")
        await self.cluster.restart_backend()
        self.backend_restarts += 1
        self.mark("backend back")

    # ---- the end ------------------------------------------------------------------------------

    async def finish(self, scenario: str, options: dict[str, Any], drain_s: float) -> Result:
        drained = await self.drain(drain_s)
        await asyncio.sleep(1.0)  # late and zombie results get their chance to do harm
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        ops = await self.records()
        counters = BackendMetrics.parse(await self.client.metrics())
        metrics = counters if self.backend_restarts == 0 else None  # they restart with it
        runs = executions(self.cluster.execution_logs())
        ledger = reconcile(self.history, runs, [Record.of(op) for op in ops], metrics)
        if metrics is None:
            ledger.stale_rejected = counters.stale.get("completion", 0.0)  # since the restart
        finished = sorted(
            op.finished_at.timestamp() - self.t0 for op in ops if op.finished_at is not None
        )
        result = Result(
            scenario,
            options,
            ledger,
            marks=self.marks,
            samples=self.samples,
            finished_at=finished,
        )
        result.checks["drained"] = drained
        result.figures["wall_s"] = round(self.now(), 2)
        result.figures["backend_restarts"] = self.backend_restarts
        result.figures["stale_reports_by_kind"] = counters.stale
        result.figures["ops"] = _op_figures(ops)
        result.figures["not_completed"] = [
            f"{op.operation_id} {op.status} attempt {op.attempt}"
            + (f": {op.error.type}: {op.error.message}" if op.error else "")
            for op in ops
            if op.status != "completed"
        ][:10]
        return result


def _op_figures(ops: list[OperationView]) -> dict[str, Any]:
    if not ops:
        return {}
    created = min(op.created_at.timestamp() for op in ops)
    done = [op.finished_at.timestamp() for op in ops if op.finished_at is not None]
    makespan = (max(done) - created) if done else 0.0
    attempts = [op.attempt for op in ops]
    return {
        "count": len(ops),
        "makespan_s": round(makespan, 3),
        "max_attempt": max(attempts),
        "retried": sum(1 for a in attempts if a > 1),
    }


# ---- the scenarios ------------------------------------------------------------------------------

Scenario = Callable[[Run, Options], Awaitable[Result]]


async def baseline(run: Run, opts: Options) -> Result:
    """Throughput with N one-slot workers and the queue kept full: ops/hour and efficiency
    against the ideal (every slot busy all the time: ops x duration / workers)."""
    workers, count = opts.workers or 10, opts.operations or 200
    op_s = opts.op_seconds or 1.0
    await _fleet(run, workers)
    run.mark(f"submit {count} x sleep {op_s:g} s")
    started = time.time()
    await run.submit_all(count, sleep_params(op_s))
    submit_s = time.time() - started
    result = await run.finish("baseline", _opts(opts, workers, count, op_s), drain_s=count * op_s)
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


async def cascading(run: Run, opts: Options) -> Result:
    """Kill half the workers (5 of 10 by default) one by one while the operations run: every
    operation completes, on the survivors."""
    workers, count = opts.workers or 10, opts.operations or 100
    op_s = opts.op_seconds or 1.0
    names = await _fleet(run, workers)
    await run.submit_all(count, sleep_params(op_s))
    rng = random.Random(opts.seed)
    victims = rng.sample(names, workers // 2)
    for victim in victims:
        await asyncio.sleep(rng.uniform(1.0, 2.0))
        run.kill(victim)
    result = await run.finish("cascading", _opts(opts, workers, count, op_s), drain_s=120)
    result.figures["killed"] = victims
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def partition(run: Run, opts: Options) -> Result:
    """Cut a worker off (both directions) while it runs an operation: unavailable after the
    failure threshold; heal: available again, and everything completes once."""
    workers, count = opts.workers or 3, opts.operations or 12
    op_s = opts.op_seconds or 1.0
    names = await _fleet(run, workers, proxied=True)
    ids = await run.submit_all(count, sleep_params(op_s))
    victim, _ = await _busy_worker(run, ids, names)
    run.partition(victim)
    cut = time.monotonic()
    await run.wait_until(
        lambda: _status_is(run, victim, "temporarily_unavailable"), "unavailable", 30
    )
    detected_s = time.monotonic() - cut
    run.mark(f"{victim} unavailable")
    await asyncio.sleep(1.0)
    run.partition(victim, heal=True)
    healed = time.monotonic()
    await run.wait_until(lambda: _status_is(run, victim, "available", "busy"), "back", 30)
    back_s = time.monotonic() - healed
    run.mark(f"{victim} available")
    result = await run.finish("partition", _opts(opts, workers, count, op_s), drain_s=90)
    timing = run.cluster.timing
    result.figures |= {
        "victim": victim,
        "unavailable_after_s": round(detected_s, 2),
        "threshold_s": timing.health_interval_s * timing.failure_threshold,
        "available_after_heal_s": round(back_s, 2),
    }
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def frozen(run: Run, opts: Options) -> Result:
    """SIGSTOP a worker running an operation; once the operation runs again elsewhere (and
    the frozen attempt has ended in its executor), SIGCONT: the frozen attempt's late report
    is refused as stale and counted, and the re-run's outcome stands. Which report arrives
    first is a race: its result (a refused completion), or a progress report whose refusal
    makes the worker drop the attempt before it sends the result."""
    workers, count = opts.workers or 2, opts.operations or 1
    op_s = opts.op_seconds or 2.0
    names = await _fleet(run, workers)
    ids = await run.submit_all(count, sleep_params(op_s))
    victim, op_id = await _busy_worker(run, ids, names)
    run.pause(victim)
    paused = time.monotonic()

    async def rerun() -> bool:
        op = await run.operation(op_id)
        return op.attempt >= 2 and op.worker_id != victim

    await run.wait_until(rerun, "the re-dispatch", 30)
    run.mark(f"{op_id[:8]} re-dispatched")
    await asyncio.sleep(max(0.0, op_s + 0.2 - (time.monotonic() - paused)))
    run.resume(victim)

    async def refused() -> bool:
        return sum(BackendMetrics.parse(await run.client.metrics()).stale.values()) >= 1

    with contextlib.suppress(TimeoutError):
        await run.wait_until(refused, "the late report to be refused", 15)
    result = await run.finish("frozen", _opts(opts, workers, count, op_s), drain_s=60)
    result.figures["victim"] = victim
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    result.checks["late_report_refused"] = (
        sum(result.figures["stale_reports_by_kind"].values()) >= 1
    )
    result.checks["ran_twice"] = result.ledger.duplicate_executions >= 1
    return result


async def poison(run: Run, opts: Options) -> Result:
    """An operation that takes its worker down every time it runs (emulated: the harness
    SIGKILLs whichever worker process starts it, then starts that worker again): it fails
    after the backend's attempt budget, the other operations complete."""
    workers, count = opts.workers or 4, opts.operations or 20
    op_s = opts.op_seconds or 0.5
    await _fleet(run, workers)
    poisoned = await run.submit(sleep_params(30.0, "poison"))
    assert poisoned is not None
    await run.submit_all(count, sleep_params(op_s))
    killed: list[str] = []

    async def killer() -> None:
        attempts_hit: set[int] = set()
        while True:
            with contextlib.suppress(BackendUnreachable):
                op = await run.operation(poisoned)
                if op.status in TERMINAL:
                    return
                if op.status == "running" and op.worker_id and op.attempt not in attempts_hit:
                    attempts_hit.add(op.attempt)
                    killed.append(op.worker_id)
                    run.kill(op.worker_id)
                    await run.restart(op.worker_id)
            await asyncio.sleep(0.05)

    await asyncio.wait_for(killer(), timeout=120)
    result = await run.finish("poison", _opts(opts, workers, count, op_s), drain_s=90)
    final = await run.operation(poisoned)
    result.figures |= {
        "poison_status": final.status,
        "poison_error": final.error.message if final.error else None,
        "workers_killed": len(killed),
    }
    result.checks["poison_failed"] = final.status == "failed"
    result.checks["others_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def backend_kill(run: Run, opts: Options) -> Result:
    """SIGKILL the backend twice while operations are submitted and running, restart it on
    the same database: no acknowledged operation is lost, every one ends once; submits that
    met the dead backend are retried with their idempotency key."""
    workers, count = opts.workers or 4, opts.operations or 60
    op_s = opts.op_seconds or 0.4
    await _fleet(run, workers, slots=2)
    rng = random.Random(opts.seed)

    async def submitter() -> None:
        for _ in range(count):
            await run.submit(sleep_params(op_s), deadline_s=90)
            await asyncio.sleep(0.05)

    feeding = asyncio.create_task(submitter())
    for _ in range(2):
        await asyncio.sleep(rng.uniform(1.5, 3.0))
        await run.restart_backend()
    await feeding
    result = await run.finish("backend-kill", _opts(opts, workers, count, op_s), drain_s=120)
    result.figures["indeterminate_submits_retried"] = sum(
        1 for e in run.history.events if e["kind"] == "info"
    )
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == count
    return result


async def nemesis(run: Run, opts: Options) -> Result:
    """A seeded random schedule of kills (then restarts), pauses (then resumes) and
    partitions of one or both directions (then heals) while operations keep arriving; then
    heal everything, drain and check the ledger. Replay with --schedule FILE."""
    workers = opts.workers or 6
    op_s = opts.op_seconds or 1.0
    names = await _fleet(run, workers, proxied=True)
    schedule = opts.schedule or generate(opts.seed, names, opts.duration_s)
    run.say(schedule.describe())
    stop = asyncio.Event()

    async def feed() -> None:  # keep about two operations per worker queued or running
        while not stop.is_set():
            pending = await _unfinished(run)
            for _ in range(max(0, 2 * workers - pending)):
                await run.submit(sleep_params(op_s), deadline_s=30)
            await asyncio.sleep(0.5)

    feeding = asyncio.create_task(feed())
    began = time.monotonic()
    for step in schedule.steps:
        await asyncio.sleep(max(0.0, step.at_s - (time.monotonic() - began)))
        await _apply(run, step)
    await asyncio.sleep(max(0.0, schedule.duration_s - (time.monotonic() - began)))
    stop.set()
    await feeding
    await _heal_all(run, names)
    options = _opts(opts, workers, None, op_s) | {"duration_s": schedule.duration_s}
    result = await run.finish("nemesis", options, drain_s=120)
    result.schedule = schedule
    result.figures["steps"] = len(schedule.steps)
    result.checks["all_completed"] = result.ledger.outcomes.get("completed", 0) == len(
        run.history.acknowledged()
    )
    return result


async def _apply(run: Run, step: Step) -> None:
    if step.action == "kill":
        run.kill(step.target)
    elif step.action == "restart":
        await run.restart(step.target, proxied=True)
    elif step.action == "pause":
        run.pause(step.target)
    elif step.action == "resume":
        run.resume(step.target)
    else:
        run.partition(step.target, step.direction or "both", heal=step.action == "heal")


async def _heal_all(run: Run, names: list[str]) -> None:
    for name in names:
        process = run.worker(name)
        process.signal(signal.SIGCONT)
        for proxy in process.extra.get("proxies", []):
            proxy.heal()
        if not process.alive():
            await run.restart(name, proxied=True)


async def _unfinished(run: Run) -> int:
    try:
        page = await run.client.list(status=["pending", "running"], limit=1000)
    except BackendUnreachable:
        return 10**6
    return len(page.items)


SCENARIOS: dict[str, Scenario] = {
    "baseline": baseline,
    "cascading": cascading,
    "partition": partition,
    "frozen": frozen,
    "poison": poison,
    "backend-kill": backend_kill,
    "nemesis": nemesis,
}


async def run_scenario(
    name: str, opts: Options, root: Path, say: Callable[[str], None] = lambda _: None
) -> Result:
    max_losses = opts.max_losses
    if max_losses is None and name == "cascading":
        # each kill may cost an operation one attempt (it ran there, or was sent there before
        # the death was noticed): a budget above the kills, so no unlucky operation runs out
        max_losses = (opts.workers or 10) // 2 + 1
    env = {"WORKFLEET_MAX_LOSSES": str(max_losses)} if max_losses is not None else {}
    cluster = Cluster(root, timing=FAST, backend_env=env)
    await cluster.start_backend()
    run = Run(cluster, say)
    try:
        await run.start_sampling()
        result = await SCENARIOS[name](run, opts)
        result.options["max_losses"] = max_losses or 3
        return result
    finally:
        await run.client.close()
        await cluster.stop()


# ---- helpers --------------------------------------------------------------------------------


async def _fleet(run: Run, count: int, *, proxied: bool = False, slots: int = 1) -> list[str]:
    names = [f"w{n:02d}" for n in range(1, count + 1)]
    for name in names:
        await run.cluster.start_worker(name, proxied=proxied, slots=slots)
    await run.cluster.wait_workers(*names, timeout_s=60)
    run.mark(f"{count} workers up")
    return names


async def _busy_worker(run: Run, ids: list[str], names: list[str]) -> tuple[str, str]:
    """A worker running one of `ids`, and that operation."""

    async def running() -> tuple[str, str] | None:
        for op_id in ids:
            op = await run.operation(op_id)
            if op.status == "running" and op.worker_id in names:
                return op.worker_id, op_id
        return None

    found: tuple[str, str] = await run.wait_until(running, "an operation running", 30)
    return found


async def _status_is(run: Run, worker_id: str, *statuses: str) -> bool:
    return await run.worker_status(worker_id) in statuses


def _opts(opts: Options, workers: int, count: int | None, op_s: float) -> dict[str, Any]:
    return {"workers": workers, "operations": count, "seed": opts.seed, "op_seconds": op_s}
