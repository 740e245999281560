"""The use cases of the backend. Imports nothing from HTTP frameworks.

The live state (unfinished operations, the pending queue, the worker registry with its slot
reservations) is held here in memory, in one asyncio thread, and written through to the Store.
An operation is acknowledged to its client only once its record is durable; every later
change of one operation is persisted in order (one chain of writes per operation).

Scheduling: the queue is a FairQueue (priority with aging, then fair share between
submitters); the placement policy (`config.placement`) picks the worker. The RuntimeModel that
`fastest` reads and the ShareLedger of fair share are kept current here: an operation is
`queued` whenever it enters the queue, `started` when a slot is reserved for it, `stopped` when
its slot is released, and each completed attempt's duration is `observe`d.
"""

import asyncio
import itertools
import json
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Protocol

import structlog

from workfleet.backend.admission import (
    Submission,
    check_satisfiable,
    replayed,
    request_hash,
    retry_after_s,
    validated_params,
)
from workfleet.backend.gateway import WorkerGateway
from workfleet.backend.writes import WriteChains
from workfleet.domain import operations as ops_domain
from workfleet.domain import workers as workers_domain
from workfleet.domain.audit import actor_of
from workfleet.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    QueueFull,
    StaleLease,
)
from workfleet.domain.fairness import DEFAULT_AGING_INTERVAL_S, Aging, FairQueue, ShareLedger
from workfleet.domain.operations import ErrorInfo, Lease, Operation, Outcome
from workfleet.domain.permissions import Principal, allowed, may_cancel
from workfleet.domain.placement import can_run_now, make_policy
from workfleet.domain.reconcile import Reported, reconcile
from workfleet.domain.runtime import RuntimeModel, size_hint
from workfleet.domain.workers import Capabilities, LivenessPolicy, Load, Worker
from workfleet.observability import tracing
from workfleet.observability.metrics import BackendMetrics
from workfleet.operations.registry import OperationType
from workfleet.store.base import OperationQuery, Store

log = structlog.get_logger(__name__)
RECENT_TERMINAL = 1000
# a finished operation larger than this (params and result as JSON) is read back from the store
# once it is durable instead of kept among the recent ones, so they hold at most
# RECENT_TERMINAL x this (~64 MB)
RECENT_MAX_BYTES = 64 << 10
REFUSAL_COOLDOWN_S = 1.0  # a worker that refused a dispatch is skipped this long
WAIT_RECHECK_S = 1.0  # an operation the policy holds back for a busy worker is looked at again


def kept_in_memory(op: Operation) -> bool:
    """Whether a finished operation is small enough to stay among the recent ones (a cache
    bounded by count must not be one of a thousand megabyte results)."""
    return len(json.dumps(dict(op.params))) + len(json.dumps(op.result)) <= RECENT_MAX_BYTES


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    liveness: LivenessPolicy = field(default_factory=LivenessPolicy)
    max_losses: int = 3
    max_pending: int = 10_000
    max_unfinished_per_owner: int = 10_000  # one key cannot fill the whole queue
    dispatch_timeout_s: float = 10.0
    placement: str = "round_robin"  # one of domain.placement.POLICY_NAMES
    aging_interval_s: float = DEFAULT_AGING_INTERVAL_S


@dataclass(frozen=True, slots=True)
class Registration:
    worker_id: str
    worker_type: str
    endpoint_url: str
    capabilities: Capabilities
    operation_types: frozenset[str]
    instance_id: str
    accepted_seq: int
    running: tuple[Reported, ...] = ()
    key_fingerprint: str | None = None  # mtls: the public key of the caller's certificate


class AuditTrail(Protocol):
    """Where scheduler decisions are noted (the backend's AuditLog): without waiting, in order."""

    def note(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        *,
        request_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None: ...


class _NoAudit:
    def note(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass(frozen=True, slots=True)
class HealthReport:
    healthy: bool
    worker_id: str
    instance_id: str
    accepted_seq: int
    load: Load
    running: tuple[Reported, ...]


class Orchestrator:
    def __init__(
        self,
        store: Store,
        gateway: WorkerGateway,
        *,
        operation_types: Mapping[str, OperationType],
        config: OrchestratorConfig,
        metrics: BackendMetrics,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.gateway = gateway
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.monotonic = monotonic  # for durations (grace periods, cooldowns): never jumps
        self.operation_types = operation_types
        self.runtime = RuntimeModel()
        self.ledger = ShareLedger()
        self.placement = make_policy(config.placement, self.runtime)
        self._may_wait = config.placement == "fastest"  # the others never leave a free slot
        self.active: dict[str, Operation] = {}
        self.queue = FairQueue(Aging(config.aging_interval_s))
        self.workers: dict[str, Worker] = {}
        self._worker_keys: dict[str, str] = {}  # mtls: worker id -> key it registered with
        self._unfinished_by_owner: dict[str, int] = {}
        self._keys: dict[tuple[str, str], str] = {}
        self._recent: OrderedDict[str, Operation] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[Operation]]] = {}
        self._writes = WriteChains(store)
        self._assigned_mono: dict[str, float] = {}
        self._dirty_progress: set[str] = set()
        self._finished_mono: deque[float] = deque(maxlen=4096)
        self._refused_until: dict[str, float] = {}
        self._dispatch_seq = itertools.count(1)
        self._recheck: asyncio.TimerHandle | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.on_work: Callable[[], None] = lambda: None  # the dispatcher wakes on this
        self.audit: AuditTrail = _NoAudit()
        self.on_worker_removed: Callable[[str], None] = lambda worker_id: None
        metrics.watch_workers(lambda: list(self.workers.values()))
        metrics.watch_queue(self.queue.depths)
        metrics.watch_operations(lambda: list(self.active.values()))
        metrics.known_types(
            operation_types, {kind for t in operation_types.values() for kind in t.worker_types}
        )
        metrics.placement_policy(config.placement)

    # ---- start and stop -----------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the live state after a (re)start: workers, then unfinished operations."""
        for worker in await self.store.load_workers():
            self.workers[worker.worker_id] = worker
        now_mono = self.monotonic()
        now = self.clock()
        for op in await self.store.unfinished_operations():
            self._remember(op)
            if op.lease is None:
                if op.cancel_requested_at is None:
                    self._enqueue(op)
                else:  # its cancel was requested and no attempt is out: it ends here
                    self._finish(ops_domain.transition(op, "cancelled", at=self.clock()))
                continue
            holder = self.workers.get(op.worker_id or "")
            if holder is None:  # its worker is forgotten: nobody can adopt it
                self._lose(op, "worker_forgotten")
                continue
            # adopted: expected to end as if it started when it was dispatched (our own clock)
            self._reserve(holder.worker_id, op, at=op.dispatched_at or now)
            self._assigned_mono[op.operation_id] = now_mono
        log.info("orchestrator_started", workers=len(self.workers), unfinished=len(self.active))
        self.on_work()

    async def stop(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
        await self.flush_progress()
        await self._writes.drain()

    # ---- clients ------------------------------------------------------------------------------

    async def submit(
        self,
        submission: Submission,
        *,
        owner: str,
        idempotency_key: str | None = None,
        actor: str | None = None,
    ) -> tuple[Operation, bool]:
        """Accept an operation durably. Returns (operation, created). `actor`: who, for the
        audit log (default: the owner). Tracing on: in a `submit` span, whose traceparent the
        operation keeps (its trace)."""
        with tracing.span("submit", attributes={"operation_type": submission.operation_type}):
            return await self._submit(
                submission, owner=owner, idempotency_key=idempotency_key, actor=actor
            )

    async def _submit(
        self,
        submission: Submission,
        *,
        owner: str,
        idempotency_key: str | None,
        actor: str | None,
    ) -> tuple[Operation, bool]:
        params = validated_params(submission, self.operation_types, self.workers.values())
        hashed = request_hash(submission, params)
        if idempotency_key is not None:
            existing = await self._live_by_key(owner, idempotency_key)
            if existing is not None:
                return replayed(existing, hashed), False
        self._check_satisfiable(submission)
        self._check_room(owner, 1)
        traceparent = tracing.current_traceparent()  # the submit span's (None: tracing off)
        op = Operation(
            operation_id=f"op_{secrets.token_hex(12)}",
            operation_type=submission.operation_type,
            params=params,
            owner=owner,
            created_at=self.clock(),
            priority=submission.priority,
            requirements=submission.requirements,
            idempotency_key=idempotency_key,
            request_hash=hashed,
            traceparent=traceparent,
            trace_id=tracing.trace_id_of(traceparent),
        )
        tracing.annotate(operation_id=op.operation_id)
        if idempotency_key is not None:
            self._keys[(owner, idempotency_key)] = op.operation_id
        self.active[op.operation_id] = op
        self._count_owner(owner, +1)
        try:
            await self._writes.insert(op)
        except Exception as exc:
            self.active.pop(op.operation_id, None)
            self._count_owner(owner, -1)
            if idempotency_key is None:
                raise
            self._keys.pop((owner, idempotency_key), None)
            # The store refuses a key used before by an operation no longer live: answer as
            # that first submit was answered. (No read on the fast path: the insert checks.)
            earlier = await self.store.find_operation_by_key(owner, idempotency_key)
            if not isinstance(exc, Conflict) or earlier is None:
                raise
            return replayed(earlier, hashed), False
        op = self.active[op.operation_id]  # a cancel may have raced the insert
        if op.dispatchable:
            self._enqueue(op)
            self.on_work()
        self.metrics.submitted.labels(op.operation_type).inc()
        self.audit.note(
            actor or owner,
            "operation.submit",
            f"operation:{op.operation_id}",
            "accepted",
            detail={"operation_type": op.operation_type, "priority": op.priority},
        )
        log.info(
            "operation_submitted",
            operation_id=op.operation_id,
            owner=owner,
            operation_type=op.operation_type,
        )
        return op, True

    async def submit_many(
        self,
        submissions: list[tuple[Submission, str | None]],
        *,
        owner: str,
        actor: str | None = None,
    ) -> list[Operation]:
        """All or nothing on validation and queue room; each then accepted as by submit()."""
        for index, (submission, _) in enumerate(submissions):
            try:
                validated_params(submission, self.operation_types, self.workers.values())
                self._check_satisfiable(submission)
            except InvalidRequest as exc:
                raise InvalidRequest(f"operations[{index}]: {exc}") from exc
        await self._check_batch_keys(submissions, owner)
        self._check_room(owner, len(submissions))
        accepted = await asyncio.gather(
            *(
                self.submit(s, owner=owner, idempotency_key=key, actor=actor)
                for s, key in submissions
            )
        )
        return [op for op, _ in accepted]

    def _check_satisfiable(self, submission: Submission) -> None:
        try:
            check_satisfiable(submission, self.workers.values())
        except InvalidRequest:
            self.metrics.rejected_submits.labels("unsatisfiable").inc()
            raise

    def _check_room(self, owner: str, wanted: int) -> None:
        if len(self.queue) + wanted > self.config.max_pending:
            self.metrics.rejected_submits.labels("queue_full").inc()
            raise QueueFull(len(self.queue), self._retry_after())
        unfinished = self._unfinished_by_owner.get(owner, 0)
        if unfinished + wanted > self.config.max_unfinished_per_owner:
            self.metrics.rejected_submits.labels("owner_limit").inc()
            raise QueueFull(unfinished, self._retry_after(), owner=owner)

    async def _check_batch_keys(
        self, submissions: list[tuple[Submission, str | None]], owner: str
    ) -> None:
        """Refuse the whole batch before anything is stored if one key is repeated in it or was
        used before for a different request."""
        seen: set[str] = set()
        for index, (submission, key) in enumerate(submissions):
            if key is None:
                continue
            if key in seen:
                raise InvalidRequest(f"operations[{index}]: Idempotency-Key {key!r} repeated")
            seen.add(key)
            hashed = request_hash(
                submission,
                validated_params(submission, self.operation_types, self.workers.values()),
            )
            earlier = await self._live_by_key(owner, key) or await self.store.find_operation_by_key(
                owner, key
            )
            if earlier is not None and earlier.request_hash != hashed:
                raise Conflict(
                    f"operations[{index}]: Idempotency-Key already used for a different request"
                )

    async def get(self, operation_id: str) -> Operation:
        found = self.active.get(operation_id) or self._recent.get(operation_id)
        if found is None:
            found = await self.store.get_operation(operation_id)
        if found is None:
            raise NotFound(f"no operation {operation_id}")
        return found

    async def wait(self, operation_id: str, timeout_s: float) -> Operation:
        """The operation once terminal, or as it is when the timeout passes (long poll)."""
        op = await self.get(operation_id)
        if op.is_terminal or timeout_s <= 0:
            return op
        future: asyncio.Future[Operation] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(operation_id, []).append(future)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return await self.get(operation_id)
        finally:
            waiting = self._waiters.get(operation_id, [])
            if future in waiting:
                waiting.remove(future)
            if not waiting:
                self._waiters.pop(operation_id, None)

    async def list_operations(self, query: OperationQuery) -> tuple[list[Operation], str | None]:
        items, cursor = await self.store.list_operations(query)
        # progress is persisted only every few seconds: show the live record where there is one
        return [self.active.get(op.operation_id, op) for op in items], cursor

    async def cancel(self, operation_id: str, *, by: Principal) -> Operation:
        op = await self.get(operation_id)
        if not may_cancel(by, op.owner):
            if allowed(by, "read"):
                raise Forbidden("operators may cancel only their own operations")
            raise NotFound(f"no operation {operation_id}")
        cancelled = ops_domain.cancel(op, at=self.clock())
        log.info("operation_cancel_requested", operation_id=operation_id, by=by.name)
        self.audit.note(
            actor_of(by), "operation.cancel", f"operation:{operation_id}", cancelled.status
        )
        if cancelled.is_terminal:
            self.queue.discard(operation_id)
            await self._finish(cancelled)
            return cancelled
        self.active[operation_id] = cancelled
        await self._persist(cancelled)
        worker = self.workers.get(cancelled.worker_id or "")
        if worker is not None and cancelled.lease is not None:
            self._spawn(self.gateway.cancel(worker, operation_id, cancelled.lease))
        return cancelled

    # ---- worker reports -----------------------------------------------------------------------

    async def report_progress(
        self,
        operation_id: str,
        lease: Lease,
        progress: Mapping[str, Any] | None,
        *,
        started_at: datetime | None,
    ) -> None:
        op = await self._current_for_report(operation_id, "progress")
        try:
            updated = ops_domain.record_progress(
                op, lease, progress, started_at=started_at, at=self.clock()
            )
        except StaleLease:
            self.metrics.stale_reports.labels("progress").inc()
            raise
        self._replace(op, updated)
        self._dirty_progress.add(operation_id)

    async def report_completion(
        self,
        operation_id: str,
        lease: Lease,
        outcome: Outcome,
        *,
        result: Any = None,
        error: ErrorInfo | None = None,
        started_at: datetime | None = None,
        progress: Mapping[str, Any] | None = None,
    ) -> Operation:
        op = self.active.get(operation_id)
        if op is None:
            recorded = await self.get(operation_id)
            if recorded.lease == lease and recorded.status == outcome:
                return recorded  # the same result delivered again: its first delivery counted
            self.metrics.stale_reports.labels("completion").inc()
            raise StaleLease(operation_id)
        try:
            finished = ops_domain.finish(
                op,
                lease,
                outcome,
                at=self.clock(),
                result=result,
                error=error,
                started_at=started_at,
                progress=progress,
            )
        except StaleLease:
            self.metrics.stale_reports.labels("completion").inc()
            log.warning(
                "stale_result_rejected",
                operation_id=operation_id,
                attempt=lease.attempt,
                current_attempt=op.attempt,
            )
            raise
        if op.status == "pending":
            self._count_dispatch(finished)
        traced: tracing.Attributes = {
            "operation_id": operation_id,
            "attempt": lease.attempt,
            "outcome": outcome,
        }
        with tracing.joined("complete", op.traceparent, traced) as span:
            if error is not None:
                tracing.set_error(span, f"{error.type}: {error.message}")
            await self._finish(finished)
        return finished

    def check_lease(self, operation_id: str, lease: Lease) -> None:
        """Uploads (artifacts) are accepted only under the current lease of a live operation."""
        op = self.active.get(operation_id)
        if op is None or op.lease != lease:
            self.metrics.stale_reports.labels("artifact").inc()
            raise StaleLease(operation_id)

    # ---- registry -----------------------------------------------------------------------------

    async def register(self, reg: Registration) -> tuple[Worker, list[Reported]]:
        """Idempotent; reconciles what the worker says it runs. Returns (worker, stop list)."""
        now = self.clock()
        existing = self.workers.get(reg.worker_id)
        self._check_same_key(reg, existing is not None)
        new_instance = existing is None or existing.instance_id != reg.instance_id
        worker = Worker(
            worker_id=reg.worker_id,
            worker_type=reg.worker_type,
            endpoint_url=reg.endpoint_url,
            capabilities=reg.capabilities,
            operation_types=reg.operation_types,
            instance_id=reg.instance_id,
            registered_at=existing.registered_at if existing else now,
            last_healthy_at=now,
            draining=existing.draining if existing else False,
            last_dispatch_seq=existing.last_dispatch_seq if existing else 0,
            reserved=existing.reserved if existing else frozenset(),
        )
        self.workers[reg.worker_id] = worker
        if new_instance:
            self.metrics.registrations.labels(reg.worker_type).inc()
        stop = self._reconcile(
            reg.worker_id, reg.running, reg.accepted_seq, same_instance=not new_instance
        )
        await self.store.save_worker(self.workers[reg.worker_id])
        self.audit.note(
            f"worker:{reg.worker_id}",
            "worker.register",
            f"worker:{reg.worker_id}",
            "accepted",
            detail={"endpoint_url": reg.endpoint_url, "new_instance": new_instance},
        )
        log.info(
            "worker_registered",
            worker_id=reg.worker_id,
            new_instance=new_instance,
            reported=len(reg.running),
            stop=len(stop),
        )
        self.on_work()
        return self.workers[reg.worker_id], stop

    async def deregister(self, worker_id: str) -> None:
        """The worker left on purpose: what it still held goes back to the queue."""
        worker = self._worker(worker_id)
        self._lose_worker_operations(worker, "worker_deregistered", count_loss=False)
        del self.workers[worker_id]
        self.gateway.keep_only(self.workers.keys())
        self.metrics.deregistrations.labels(worker.worker_type, "deregistered").inc()
        await self.store.delete_worker(worker_id)
        self.audit.note("system", "worker.deregister", f"worker:{worker_id}", "removed")
        log.info("worker_deregistered", worker_id=worker_id)

    async def set_draining(self, worker_id: str, draining: bool) -> Worker:
        worker = replace(self._worker(worker_id), draining=draining)
        self.workers[worker_id] = worker
        await self.store.save_worker(worker)
        action = "worker.drain" if draining else "worker.undrain"
        self.audit.note("system", action, f"worker:{worker_id}", "done")
        log.info("worker_drain_changed", worker_id=worker_id, draining=draining)
        if not draining:
            self.on_work()
        return worker

    def worker_known(self, worker_id: str) -> bool:
        return worker_id in self.workers

    def apply_health(self, worker_id: str, report: HealthReport | None) -> None:
        """A health check's outcome: None is a failure (no answer, or `healthy: false`)."""
        worker = self.workers.get(worker_id)
        if worker is None:
            return
        now = self.clock()
        if report is None or not report.healthy or report.worker_id != worker_id:
            self.metrics.health_checks.labels(worker.worker_type, "failure").inc()
            self._set_worker(workers_domain.health_failed(worker, self.config.liveness, at=now))
            return
        self.metrics.health_checks.labels(worker.worker_type, "success").inc()
        self._set_worker(workers_domain.health_succeeded(worker, load=report.load, at=now))
        same_instance = report.instance_id == worker.instance_id
        stop = self._reconcile(
            worker_id, report.running, report.accepted_seq, same_instance=same_instance
        )
        for item in stop:
            self._spawn(self.gateway.cancel(self.workers[worker_id], item.operation_id, item.lease))

    def declare_unreachable(self, worker_id: str) -> None:
        """Its session dropped and nothing answers at its address: lost, without waiting."""
        worker = self.workers.get(worker_id)
        if worker is not None:
            self._set_worker(
                workers_domain.declare_unreachable(worker, self.config.liveness, at=self.clock())
            )

    async def remove_expired_workers(self) -> list[str]:
        now = self.clock()
        expired = [
            w
            for w in self.workers.values()
            if workers_domain.removal_due(w, self.config.liveness, now=now)
        ]
        for worker in expired:
            self._lose_worker_operations(worker, "worker_removed", count_loss=True)
            del self.workers[worker.worker_id]
            self.metrics.deregistrations.labels(worker.worker_type, "removed").inc()
            self._refused_until.pop(worker.worker_id, None)
            await self.store.delete_worker(worker.worker_id)
            self.on_worker_removed(worker.worker_id)
            self.audit.note("system", "worker.remove", f"worker:{worker.worker_id}", "removed")
            log.warning("worker_removed", worker_id=worker.worker_id)
        self.gateway.keep_only(self.workers.keys())  # every round: stragglers' pools too
        return [w.worker_id for w in expired]

    # ---- dispatch (driven by the Dispatcher) ---------------------------------------------------

    def next_assignment(self) -> tuple[Operation, Worker] | None:
        """Take the first operation in queue order (priority with aging, then fair share) that
        the placement policy places now, and reserve its slot. An operation no worker can take
        now, or that the policy holds back for a busy worker, blocks only its own bucket."""
        if not self.queue:
            return None
        began = time.perf_counter()
        assignment, outcome = self._place()
        self.metrics.placement_seconds.observe(time.perf_counter() - began)
        self.metrics.placement_decisions.labels(self.config.placement, outcome).inc()
        if outcome == "waiting" and self._recheck is None:
            # the expected ends it waits for are estimates: look again even if nothing happens
            self._recheck = asyncio.get_running_loop().call_later(WAIT_RECHECK_S, self._rechecked)
        return assignment

    def _rechecked(self) -> None:
        self._recheck = None
        self.on_work()

    def _place(self) -> tuple[tuple[Operation, Worker] | None, str]:
        now = self.clock()
        now_mono = self.monotonic()
        workers = [
            w for w in self.workers.values() if self._refused_until.get(w.worker_id, 0) <= now_mono
        ]
        outcome = "none"
        stale = True
        while stale:  # a stale head hides its bucket's next operation: look again without it
            stale = False
            for key, queued, _ in self.queue.heads(now, self.ledger):
                op = self.active.get(queued.operation_id)
                if op is None or not op.dispatchable:
                    self.queue.discard(queued.operation_id)
                    stale = True
                    continue
                worker = self.placement(op, workers, now)
                if worker is not None:
                    self.queue.pop(key)
                    return self._assign(op, worker, now), "placed"
                if (
                    self._may_wait
                    and outcome == "none"
                    and any(can_run_now(op, w) for w in workers)
                ):
                    outcome = "waiting"  # a free worker could take it: the policy waits
        return None, outcome

    def _assign(self, op: Operation, worker: Worker, now: datetime) -> tuple[Operation, Worker]:
        assigned = ops_domain.assign(
            op, worker_id=worker.worker_id, token=secrets.token_urlsafe(16)
        )
        self._replace(op, assigned)
        self._reserve(worker.worker_id, assigned, at=now)
        self.workers[worker.worker_id] = replace(
            self.workers[worker.worker_id], last_dispatch_seq=next(self._dispatch_seq)
        )
        self._assigned_mono[op.operation_id] = self.monotonic()
        self._persist(assigned)
        self.audit.note(
            "system",
            "operation.dispatch",
            f"operation:{op.operation_id}",
            "assigned",
            detail={"worker_id": worker.worker_id, "attempt": assigned.attempt},
        )
        return assigned, self.workers[worker.worker_id]

    def dispatch_accepted(self, operation_id: str, lease: Lease, accepted_seq: int | None) -> None:
        op = self.active.get(operation_id)
        if op is None or op.lease != lease or op.status != "pending":
            return  # already reported, cancelled or lost meanwhile
        running = ops_domain.acknowledge(op, lease, accepted_seq=accepted_seq, at=self.clock())
        self._replace(op, running)
        self._persist(running)
        self._count_dispatch(running)

    def dispatch_failed(
        self, operation_id: str, lease: Lease, *, certain: bool, reason: str
    ) -> None:
        """certain: the worker did not take it (refused, unreachable); otherwise it may have."""
        op = self.active.get(operation_id)
        if op is None or op.lease != lease or op.status != "pending":
            return  # gone, superseded, or already confirmed running by the worker's own report
        self.metrics.dispatch_failures.labels(op.operation_type, reason).inc()
        worker_id = op.worker_id or ""
        if reason == "refused":  # our view of it is stale (full, draining): leave it alone a bit
            self._refused_until[worker_id] = self.monotonic() + REFUSAL_COOLDOWN_S
            asyncio.get_running_loop().call_later(REFUSAL_COOLDOWN_S, self.on_work)
        if certain:
            self._release(op)
            freed = ops_domain.unassign(op)
            self._replace(op, freed)
            self._persist(freed)
            if freed.cancel_requested_at is not None:
                self._finish(ops_domain.transition(freed, "cancelled", at=self.clock()))
            else:
                self._enqueue(freed)
        else:
            self._spawn_cancel(worker_id, op)
            self._lose(op, reason)
        self.on_work()

    # ---- internals ----------------------------------------------------------------------------

    def _check_same_key(self, reg: Registration, known: bool) -> None:
        """mtls: while a worker id is registered, only the key it registered with may register
        it again (a second key for an active id is someone else until the first is revoked
        and the worker removed)."""
        if reg.key_fingerprint is None:
            return
        held = self._worker_keys.get(reg.worker_id)
        if known and held is not None and held != reg.key_fingerprint:
            raise Forbidden(
                f"worker {reg.worker_id} is registered with another certificate key; revoke "
                "that certificate and let the worker be removed before registering a new one"
            )
        self._worker_keys[reg.worker_id] = reg.key_fingerprint

    def assigned_worker(self, operation_id: str) -> str | None:
        """The worker holding the operation's current attempt (None when it is not running)."""
        op = self.active.get(operation_id)
        return op.worker_id if op is not None else None

    async def _current_for_report(self, operation_id: str, kind: str) -> Operation:
        op = self.active.get(operation_id)
        if op is not None:
            return op
        await self.get(operation_id)  # NotFound if it never existed
        self.metrics.stale_reports.labels(kind).inc()
        raise StaleLease(operation_id)

    def _reconcile(
        self,
        worker_id: str,
        running: tuple[Reported, ...],
        accepted_seq: int,
        *,
        same_instance: bool,
    ) -> list[Reported]:
        """Apply domain.reconcile: adopt what is confirmed, lose what is gone; returns the
        reported attempts the worker must stop."""
        horizon = self.monotonic() - self.config.dispatch_timeout_s
        reserved = self.workers[worker_id].reserved
        answer = reconcile(
            worker_id,
            reserved=reserved,
            active=self.active,
            running=running,
            accepted_seq=accepted_seq,
            same_instance=same_instance,
            overdue=frozenset(o for o in reserved if self._assigned_mono.get(o, 0.0) < horizon),
        )
        for item in answer.confirmed:
            op = self.active[item.operation_id]
            if op.status == "pending":  # adopted: its acknowledgement was lost
                self.dispatch_accepted(item.operation_id, item.lease, None)
                op = self.active[item.operation_id]
            if item.progress is not None:
                self._replace(op, replace(op, progress=item.progress))
        for operation_id in answer.lost:
            self._lose(self.active[operation_id], answer.lost_reason)
        stopping = set(answer.stop)
        return [item for item in running if item.operation_id in stopping]

    def _set_worker(self, worker: Worker) -> None:
        before = self.workers[worker.worker_id]
        self.workers[worker.worker_id] = worker
        if before.status == worker.status:
            return
        log.info(
            "worker_status_changed",
            worker_id=worker.worker_id,
            before=before.status,
            after=worker.status,
        )
        if worker.status == "temporarily_unavailable":
            self._lose_worker_operations(worker, "worker_unreachable", count_loss=True)
        self._spawn(self.store.save_worker(self.workers[worker.worker_id]))
        self.on_work()

    def _lose_worker_operations(self, worker: Worker, reason: str, *, count_loss: bool) -> None:
        for operation_id in list(self.workers[worker.worker_id].reserved):
            op = self.active.get(operation_id)
            if op is not None:
                self._lose(op, reason, count_loss=count_loss)

    def _lose(self, op: Operation, reason: str, *, count_loss: bool = True) -> None:
        self._release(op)
        lost = ops_domain.lose_attempt(
            op,
            reason=reason,
            max_losses=self.config.max_losses,
            counted=count_loss,
            at=self.clock(),
        )
        self.metrics.attempts_lost.labels(reason).inc()
        self.audit.note(
            "system",
            "operation.requeue" if not lost.is_terminal else "operation.lost",
            f"operation:{op.operation_id}",
            lost.status,
            detail={"reason": reason, "worker_id": op.worker_id, "attempt": op.attempt},
        )
        traced: tracing.Attributes = {
            "operation_id": op.operation_id,
            "attempt": op.attempt,
            "reason": reason,
        }
        with tracing.joined("attempt_lost", op.traceparent, traced):
            log.warning(
                "operation_attempt_lost",
                operation_id=op.operation_id,
                reason=reason,
                worker_id=op.worker_id,
                attempt=op.attempt,
                outcome=lost.status,
            )
        if lost.is_terminal:
            self._finish(lost)
            return
        self._replace(op, lost)
        self._persist(lost)
        self._enqueue(lost)
        self.on_work()

    def _finish(self, op: Operation) -> "asyncio.Task[None]":
        """Record a terminal state now (so no later report can land on the old record), then
        persist it; the returned task ends once it is durable and waiters are told."""
        self._release(op)
        self.runtime.stopped(op.operation_id)  # queued, if it never left the queue
        if op.status == "completed":
            self._observe(op)
        if self.active.pop(op.operation_id, None) is not None:
            self._count_owner(op.owner, -1)
        self._assigned_mono.pop(op.operation_id, None)
        self._dirty_progress.discard(op.operation_id)
        if op.idempotency_key is not None:
            self._keys.pop((op.owner, op.idempotency_key), None)
        self._recent[op.operation_id] = op  # until durable, the store still has the old row
        while len(self._recent) > RECENT_TERMINAL:
            self._recent.popitem(last=False)
        self.audit.note(
            "system",
            "operation.complete",
            f"operation:{op.operation_id}",
            op.status,
            detail={"worker_id": op.worker_id, "attempt": op.attempt},
        )
        self.on_work()
        task = asyncio.get_running_loop().create_task(self._finished(op, self._persist(op)))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def _finished(self, op: Operation, persisted: "asyncio.Task[None]") -> None:
        await persisted
        if not kept_in_memory(op):  # durable now: the store answers for it
            self._recent.pop(op.operation_id, None)
        self._finished_mono.append(self.monotonic())
        self.metrics.finished(op)  # counted, and timed from submit
        log.info(
            "operation_finished",
            operation_id=op.operation_id,
            status=op.status,
            worker_id=op.worker_id,
            attempt=op.attempt,
        )
        for future in self._waiters.pop(op.operation_id, []):
            if not future.done():
                future.set_result(op)

    async def flush_progress(self) -> None:
        dirty, self._dirty_progress = self._dirty_progress, set()
        for operation_id in dirty:
            op = self.active.get(operation_id)
            if op is not None:
                self._persist(op)

    def _persist(self, op: Operation) -> "asyncio.Task[None]":
        return self._writes.save(op)

    def _remember(self, op: Operation) -> None:
        self.active[op.operation_id] = op
        self._count_owner(op.owner, +1)
        if op.idempotency_key is not None:
            self._keys[(op.owner, op.idempotency_key)] = op.operation_id

    def _count_owner(self, owner: str, delta: int) -> None:
        count = self._unfinished_by_owner.get(owner, 0) + delta
        if count > 0:
            self._unfinished_by_owner[owner] = count
        else:
            self._unfinished_by_owner.pop(owner, None)

    def _replace(self, before: Operation, after: Operation) -> None:
        assert before.operation_id == after.operation_id
        self.active[after.operation_id] = after

    def _enqueue(self, op: Operation) -> None:
        self.queue.push(op)
        self.runtime.queued(op)

    def _reserve(self, worker_id: str, op: Operation, *, at: datetime) -> None:
        """Hold a slot for the op's attempt: it runs (or will) there from `at`."""
        worker = self.workers[worker_id]
        worker = replace(worker, reserved=worker.reserved | {op.operation_id})
        self.workers[worker_id] = worker
        self.runtime.started(op, worker, at=at)
        self.ledger.started(op.owner)

    def _release(self, op: Operation) -> None:
        """The attempt ended (whatever its outcome): its slot is free."""
        worker = self.workers.get(op.worker_id or "")
        if worker is not None and op.operation_id in worker.reserved:
            self.workers[worker.worker_id] = replace(
                worker, reserved=worker.reserved - {op.operation_id}
            )
            self.runtime.stopped(op.operation_id)
            self.ledger.stopped(op.owner)
        self._assigned_mono.pop(op.operation_id, None)

    def _observe(self, op: Operation) -> None:
        """Teach the runtime model how long a completed attempt took where it ran."""
        began = op.started_at or op.dispatched_at
        if op.worker_id is None or began is None or op.finished_at is None:
            return
        if (began.tzinfo is None) != (op.finished_at.tzinfo is None):
            return  # a worker's clock without a zone: no duration to learn from
        seconds = (op.finished_at - began).total_seconds()
        size = size_hint(op.operation_type, op.params)
        self.runtime.observe(op.operation_type, op.worker_id, size, seconds)

    def _count_dispatch(self, op: Operation) -> None:
        worker = self.workers.get(op.worker_id or "")
        worker_type = worker.worker_type if worker is not None else "unknown"
        self.metrics.dispatched.labels(op.operation_type, worker_type).inc()
        if op.dispatched_at is not None:
            wait = (op.dispatched_at - op.created_at).total_seconds()
            self.metrics.queue_wait.labels(op.operation_type, str(op.priority)).observe(
                max(wait, 0.0)
            )

    def _worker(self, worker_id: str) -> Worker:
        worker = self.workers.get(worker_id)
        if worker is None:
            raise NotFound(f"no worker {worker_id}")
        return worker

    async def _live_by_key(self, owner: str, key: str) -> Operation | None:
        """The unfinished operation submitted with this key, if any (memory only)."""
        operation_id = self._keys.get((owner, key))
        if operation_id is None:
            return None
        pending_write = self._writes.pending(operation_id)
        if pending_write is not None:  # a concurrent submit with this key: share its fate
            await asyncio.shield(pending_write)
        return await self.get(operation_id)

    def _retry_after(self) -> int:
        horizon = self.monotonic() - 60.0
        return retry_after_s(sum(1 for t in self._finished_mono if t >= horizon))

    def _spawn_cancel(self, worker_id: str, op: Operation) -> None:
        worker = self.workers.get(worker_id)
        if worker is not None and op.lease is not None:
            self._spawn(self.gateway.cancel(worker, op.operation_id, op.lease))

    def _spawn(self, work: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
