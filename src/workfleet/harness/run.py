"""What every load and fault scenario shares (harness/scenarios/): the options, the result
and its report, and `Run`, one scenario's cluster with the client's history, the faults it
caused and the fleet's states over time, plus small steps scenarios are made of (start a fleet,
find a busy worker, heal everything).

A run passes when the ledger is clean (nothing lost, stuck, final twice, unexpected, and no
stale result accepted) and the scenario's own expectations hold (`checks`)."""

import asyncio
import contextlib
import json
import signal
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx

from workfleet.client import ApiError, BackendUnreachable
from workfleet.harness.cluster import Cluster, Process, wait_for
from workfleet.harness.ledger import (
    TERMINAL,
    BackendMetrics,
    History,
    Reconciliation,
    Record,
    executions,
    reconcile,
    terminal_transitions,
)
from workfleet.harness.nemesis import Schedule
from workfleet.harness.netns import Fabric
from workfleet.harness.proxy import Proxy
from workfleet.protocol import AuditRecordView, OperationView, WorkerHealth

T = TypeVar("T")


@dataclass
class Options:
    workers: int | None = None  # None: the scenario's default
    operations: int | None = None
    seed: int = 1
    duration_s: float = 60.0  # nemesis
    op_seconds: float | None = None
    schedule: Schedule | None = None  # nemesis: replay this instead of generating one
    max_losses: int | None = None  # the backend's attempt budget (None: its default, 3)
    rate: float | None = None  # open-loop scenarios: submits per second
    break_backend: str | None = None  # the checker's self-test: a harness/broken.py mode
    network: Literal["loopback", "netns"] = "loopback"  # netns: root, harness/netns.py
    latency_ms: float = 200.0  # jitter: each way of every link, delay ± jitter
    jitter_ms: float = 100.0
    flap_s: float = 20.0  # flapping: how long the link goes down and up
    loss_percent: int = 10  # packet-loss: of the packets on each lossy link, each way


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
    # named latency series, (seconds since start, latency in seconds), for the latency chart
    latencies: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
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
        self._background: list[asyncio.Task[Any]] = []

    def now(self) -> float:
        return time.time() - self.t0

    def mark(self, label: str) -> None:
        self.marks.append(Mark(self.now(), label))
        self.say(f"  [{self.now():7.2f} s] {label}")

    # ---- submitting ---------------------------------------------------------------------------

    async def submit(
        self,
        params: dict[str, Any],
        *,
        operation_type: str = "diagnostic",
        deadline_s: float = 60.0,
    ) -> str | None:
        """One submit with its own idempotency key, retried with the same key while the
        backend cannot answer (so an in-doubt submit never becomes a second operation)."""
        key = uuid.uuid4().hex
        self.history.invoke(key)
        give_up = time.monotonic() + deadline_s
        while True:
            try:
                op = await self.client.submit(operation_type, params, idempotency_key=key)
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

    def in_background(self, work: Coroutine[Any, Any, T]) -> "asyncio.Task[T]":
        """A task of this run (a feeder, a reviver): cancelled when the run ends, however it
        ends (run_scenario), so none outlives its fleet, nor restarts workers being stopped."""
        task = asyncio.create_task(work)
        self._background.append(task)
        return task

    async def stop_background(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

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

    async def audit_trail(self) -> list[AuditRecordView]:
        """The backend's whole audit log (all pages)."""
        found: list[AuditRecordView] = []
        after: int | None = 0
        while after is not None:
            page = await self.client.audit(after_seq=after)
            found += page.items
            after = page.next_after_seq
        return found

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

    async def worker_health(self, worker_id: str) -> WorkerHealth | None:
        """The worker's own /health, asked directly, not proxied (None: it does not answer)."""
        process = self.worker(worker_id)
        url = f"http://{process.host}:{process.port}/health"
        headers = {"Authorization": f"Bearer {self.cluster.token}"}
        try:
            async with httpx.AsyncClient(trust_env=False) as http:
                response = await http.get(url, headers=headers, timeout=5)
        except httpx.HTTPError:
            return None
        response.raise_for_status()
        return WorkerHealth.model_validate_json(response.content)

    def backend_events(self, event: str) -> list[dict[str, Any]]:
        """The backend's JSON log lines of one event, over all its restarts, in order."""
        assert self.cluster.backend is not None
        found = []
        for line in self.cluster.backend.log().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("event") == event:
                    found.append(record)
        return found

    def executions(self) -> list[dict[str, Any]]:
        """Every worker's execution log so far: what really started and ended, where."""
        return executions(self.cluster.execution_logs())

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

    def proxies(self, worker_id: str, direction: str = "both") -> tuple[Proxy, ...]:
        """A proxied worker's links: "in" carries the backend's calls to it (dispatch, health,
        cancel), "out" its calls to the backend (registration, session, reports)."""
        if self.cluster.fabric is not None:
            raise ValueError("network netns has no proxies: partitions only, no latency")
        inbound, outbound = self.worker(worker_id).extra["proxies"]
        chosen: tuple[Proxy, ...] = {
            "both": (inbound, outbound),
            "in": (inbound,),
            "out": (outbound,),
        }[direction]
        return chosen

    def partition(self, worker_id: str, direction: str = "both", *, heal: bool = False) -> None:
        """Through the worker's proxies, or under netns its nftables tables."""
        fabric = self.cluster.fabric
        if fabric is not None:
            fabric.heal(worker_id, direction) if heal else fabric.partition(worker_id, direction)
        else:
            for proxy in self.proxies(worker_id, direction):
                proxy.heal() if heal else proxy.partition()
        self.mark(f"{'heal' if heal else 'partition'} {worker_id} ({direction})")

    def lose_packets(self, worker_id: str, percent: int) -> None:
        """Drop `percent` % of the worker's packets each way (0: none), under netns only: the
        proxies relay a TCP stream, whose packets the kernel has already delivered."""
        self._fabric().lose(worker_id, percent)
        self.mark(f"{percent} % packet loss on {worker_id}" if percent else f"heal {worker_id}")

    def packets_lost(self, worker_id: str) -> tuple[int, int]:
        """The packets seen and dropped on the worker's lossy link (before it heals)."""
        return self._fabric().loss_counts(worker_id)

    def _fabric(self) -> Fabric:
        if self.cluster.fabric is None:
            raise ValueError("packet loss needs network netns (nftables rules)")
        return self.cluster.fabric

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
        transitions = terminal_transitions(await self.audit_trail())
        records = [Record.of(op) for op in ops]
        ledger = reconcile(self.history, runs, records, metrics, transitions)
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
        result.figures["ops"] = op_figures(ops)
        result.figures["not_completed"] = [
            f"{op.operation_id} {op.status} attempt {op.attempt}"
            + (f": {op.error.type}: {op.error.message}" if op.error else "")
            for op in ops
            if op.status != "completed"
        ][:10]
        return result


def op_figures(ops: list[OperationView]) -> dict[str, Any]:
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


@dataclass(frozen=True)
class Scenario:
    """`play` drives one scenario on a started backend; `backend_env` gives the backend's
    extra settings for these options (its timing is FAST unless the scenario says)."""

    play: Callable[[Run, Options], Awaitable[Result]]
    backend_env: Callable[[Options], dict[str, str]] = lambda _: {}
    netns: bool = False  # it also runs with --network netns (its link faults: partitions only)
    loopback: bool = True  # False: its faults exist under --network netns only


# ---- steps scenarios are made of -------------------------------------------------------


async def fleet(run: Run, count: int, *, proxied: bool = False, slots: int = 1) -> list[str]:
    names = [f"w{n:02d}" for n in range(1, count + 1)]
    for name in names:
        await run.cluster.start_worker(name, proxied=proxied, slots=slots)
    await run.cluster.wait_workers(*names, timeout_s=60)
    run.mark(f"{count} workers up")
    return names


async def busy_worker(run: Run, ids: list[str], names: list[str]) -> tuple[str, str]:
    """A worker running one of `ids`, and that operation."""

    async def running() -> tuple[str, str] | None:
        for op_id in ids:
            op = await run.operation(op_id)
            if op.status == "running" and op.worker_id in names:
                return op.worker_id, op_id
        return None

    found: tuple[str, str] = await run.wait_until(running, "an operation running", 30)
    return found


async def status_is(run: Run, worker_id: str, *statuses: str) -> bool:
    return await run.worker_status(worker_id) in statuses


def options_of(opts: Options, workers: int, count: int | None, op_s: float) -> dict[str, Any]:
    return {"workers": workers, "operations": count, "seed": opts.seed, "op_seconds": op_s}


async def heal_all(run: Run, names: list[str]) -> None:
    for name in names:
        process = run.worker(name)
        process.signal(signal.SIGCONT)
        for proxy in process.extra.get("proxies", []):
            proxy.heal()
        if run.cluster.fabric is not None:
            run.cluster.fabric.heal(name)
        if not process.alive():
            await run.restart(name, proxied=True)


async def unfinished(run: Run) -> int:
    try:
        page = await run.client.list(status=["pending", "running"], limit=1000)
    except BackendUnreachable:
        return 10**6
    return len(page.items)


async def keep_fed(run: Run, target: int, op_s: float, stop: asyncio.Event) -> None:
    """Keep about `target` operations queued or running until `stop` is set."""
    while not stop.is_set():
        for _ in range(max(0, target - await unfinished(run))):
            await run.submit(sleep_params(op_s), deadline_s=30)
        await asyncio.sleep(0.5)
