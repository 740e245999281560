"""The backend's use cases (backend/orchestrator.py), driven directly.

A MemoryStore, real metrics, the real operation registry, a clock the tests advance by hand and
an in-memory fleet behind the WorkerGateway protocol. The tests call what the Dispatcher and
the HealthMonitor would call, one step at a time: no background loop runs, nothing sleeps;
`asyncio.sleep(0)` only lets the orchestrator's write tasks run."""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workfleet.backend import orchestrator as orchestrator_module
from workfleet.backend.admission import Submission
from workfleet.backend.gateway import DispatchResult, HealthCheckFailed
from workfleet.backend.health import CheckResult, HealthMonitor
from workfleet.backend.orchestrator import (
    RECENT_MAX_BYTES,
    REFUSAL_COOLDOWN_S,
    Orchestrator,
    OrchestratorConfig,
    kept_in_memory,
)
from workfleet.domain.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    InvalidTransition,
    NotFound,
    QueueFull,
    StaleLease,
)
from workfleet.domain.operations import Lease, Operation, Requirements
from workfleet.domain.permissions import Principal
from workfleet.domain.reconcile import Reported
from workfleet.domain.workers import Capabilities, LivenessPolicy, Worker
from workfleet.observability.metrics import BackendMetrics
from workfleet.operations.registry import load_operation_types
from workfleet.protocol import DispatchRequest, LeaseModel, RunningOperation, WorkerHealth
from workfleet.store.base import OperationQuery
from workfleet.store.memory import MemoryStore

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOOP = Submission("diagnostic", {"action": "noop"})
ALICE = Principal(role="operator", name="alice")


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def mono(self) -> float:
        """The same fake time, as the orchestrator's monotonic seconds."""
        return (self.now - T0).total_seconds()


class FakeFleet:
    """An in-memory WorkerGateway: each worker accepts dispatches (unless told otherwise),
    remembers what it runs, answers /health from that, and records every call it receives."""

    def __init__(self) -> None:
        self.dispatches: list[tuple[str, DispatchRequest]] = []
        self.cancels: list[tuple[str, str, Lease]] = []
        self.next_results: dict[str, list[DispatchResult]] = {}
        self.running: dict[str, dict[str, Lease]] = {}
        self.accepted_seq: dict[str, int] = {}
        self.instances: dict[str, str] = {}
        self.down: dict[str, HealthCheckFailed] = {}
        self.unhealthy: set[str] = set()
        self.pooled: set[str] | None = None  # the workers it last was told to keep

    def answer_next_dispatch(self, worker_id: str, result: DispatchResult) -> None:
        self.next_results.setdefault(worker_id, []).append(result)

    async def dispatch(self, worker: Worker, request: DispatchRequest) -> DispatchResult:
        self.dispatches.append((worker.worker_id, request))
        queued = self.next_results.get(worker.worker_id)
        if queued:
            return queued.pop(0)
        seq = self.accepted_seq.get(worker.worker_id, 0) + 1
        self.accepted_seq[worker.worker_id] = seq
        lease = Lease(request.lease.attempt, request.lease.token)
        self.running.setdefault(worker.worker_id, {})[request.operation_id] = lease
        return DispatchResult("accepted", accepted_seq=seq)

    async def cancel(self, worker: Worker, operation_id: str, lease: Lease) -> None:
        self.cancels.append((worker.worker_id, operation_id, lease))

    async def health(self, worker: Worker, *, timeout_s: float) -> WorkerHealth:
        if worker.worker_id in self.down:
            raise self.down[worker.worker_id]
        running = self.running.get(worker.worker_id, {})
        return WorkerHealth(
            healthy=worker.worker_id not in self.unhealthy,
            worker_id=worker.worker_id,
            worker_type=worker.worker_type,
            instance_id=self.instances.get(worker.worker_id, "inst-1"),
            worker_status="busy" if running else "idle",
            current_load=len(running) / worker.capabilities.slots,
            active_operations=len(running),
            slots=worker.capabilities.slots,
            accepted_seq=self.accepted_seq.get(worker.worker_id, 0),
            running=[
                RunningOperation(
                    operation_id=op_id, lease=LeaseModel(attempt=lease.attempt, token=lease.token)
                )
                for op_id, lease in running.items()
            ],
            cpu_usage_ratio=0.1,
            memory_usage_ratio=0.2,
            uptime_seconds=100.0,
        )

    def keep_only(self, worker_ids: Collection[str]) -> None:
        self.pooled = set(worker_ids)

    async def close(self) -> None:
        return None


@dataclass
class Rig:
    orch: Orchestrator
    store: MemoryStore
    fleet: FakeFleet
    clock: FakeClock
    metrics: BackendMetrics
    config: OrchestratorConfig
    monitor: HealthMonitor = field(init=False)

    def __post_init__(self) -> None:
        self.monitor = HealthMonitor(
            self.orch, self.fleet, interval_s=10, timeout_s=5, probe_timeout_s=1, concurrency=4
        )

    async def register(
        self,
        worker_id: str = "w1",
        *,
        slots: int = 1,
        instance_id: str = "inst-1",
        worker_type: str = "cpu",
        types: frozenset[str] = frozenset({"diagnostic"}),
        gpu: bool = False,
        running: tuple[Reported, ...] = (),
        accepted_seq: int = 0,
        **capabilities: Any,
    ) -> list[str]:
        from workfleet.backend.orchestrator import Registration

        self.fleet.instances[worker_id] = instance_id
        _, stop = await self.orch.register(
            Registration(
                worker_id=worker_id,
                worker_type=worker_type,
                endpoint_url=f"http://{worker_id}.invalid:5003",
                capabilities=Capabilities(slots=slots, gpu=gpu, **capabilities),
                operation_types=types,
                instance_id=instance_id,
                accepted_seq=accepted_seq,
                running=running,
            )
        )
        return [item.operation_id for item in stop]  # the ids; leases are checked on the worker

    async def submit(
        self,
        submission: Submission = NOOP,
        *,
        owner: str = "alice",
        key: str | None = None,
    ) -> Operation:
        op, _ = await self.orch.submit(submission, owner=owner, idempotency_key=key)
        return op

    async def dispatch_next(self) -> Operation | None:
        """One turn of the Dispatcher: place, POST, record the answer."""
        assignment = self.orch.next_assignment()
        if assignment is None:
            return None
        op, worker = assignment
        assert op.lease is not None
        request = DispatchRequest(
            operation_id=op.operation_id,
            operation_type=op.operation_type,
            params=dict(op.params),
            lease=LeaseModel(attempt=op.lease.attempt, token=op.lease.token),
        )
        result = await self.fleet.dispatch(worker, request)
        if result.kind == "accepted":
            self.orch.dispatch_accepted(op.operation_id, op.lease, result.accepted_seq)
        else:
            certain = result.kind in ("refused", "unreachable")
            self.orch.dispatch_failed(
                op.operation_id, op.lease, certain=certain, reason=result.kind
            )
            if result.kind == "unreachable":
                self.orch.declare_unreachable(worker.worker_id)
        return await self.orch.get(op.operation_id)

    async def running_on(self, worker_id: str = "w1", submission: Submission = NOOP) -> Operation:
        """Submit one operation and have it accepted by `worker_id` (the only free worker)."""
        op = await self.submit(submission)
        dispatched = await self.dispatch_next()
        assert dispatched is not None
        assert (dispatched.operation_id, dispatched.status, dispatched.worker_id) == (
            op.operation_id,
            "running",
            worker_id,
        )
        return dispatched

    async def check_health(self, worker_id: str = "w1", times: int = 1) -> CheckResult:
        result: CheckResult = "failed"
        for _ in range(times):
            result = await self.monitor.check(worker_id, 5.0)
        return result

    async def settle(self) -> None:
        for _ in range(20):
            await asyncio.sleep(0)

    def sample(self, name: str, **labels: str) -> float:
        return self.metrics.registry.get_sample_value(name, labels) or 0.0

    def restarted(self) -> Orchestrator:
        """A second backend on the same store, as after a restart."""
        return Orchestrator(
            self.store,
            self.fleet,
            operation_types=load_operation_types(),
            config=self.config,
            metrics=BackendMetrics(),
            clock=self.clock,
        )


MakeRig = Callable[..., Rig]


@pytest.fixture
async def make_rig() -> AsyncIterator[MakeRig]:
    made: list[Rig] = []

    def _make(**config: Any) -> Rig:
        settings = OrchestratorConfig(**{"dispatch_timeout_s": 3600.0, **config})
        store, fleet, clock, metrics = MemoryStore(), FakeFleet(), FakeClock(), BackendMetrics()
        orch = Orchestrator(
            store,
            fleet,
            operation_types=load_operation_types(),
            config=settings,
            metrics=metrics,
            clock=clock,
            monotonic=clock.mono,
        )
        rig = Rig(orch, store, fleet, clock, metrics, settings)
        made.append(rig)
        return rig

    yield _make
    for rig in made:
        await rig.orch.stop()
        await rig.settle()


@pytest.fixture
def rig(make_rig: MakeRig) -> Rig:
    return make_rig()


def lease_of(op: Operation) -> Lease:
    assert op.lease is not None
    return op.lease


# ---- submit ------------------------------------------------------------------------------------


async def test_submit_stores_the_operation_before_it_returns(rig: Rig) -> None:
    op = await rig.submit()
    assert await rig.store.get_operation(op.operation_id) == op


async def test_submit_queues_the_operation_as_pending(rig: Rig) -> None:
    op = await rig.submit()
    assert (op.status, op.operation_id in rig.orch.queue) == ("pending", True)


async def test_submit_stores_the_params_normalised_with_their_defaults(rig: Rig) -> None:
    op = await rig.submit(Submission("diagnostic", {"action": "sleep", "seconds": 2}))
    normalised = {name: op.params[name] for name in ("action", "seconds", "steps", "payload")}
    assert normalised == {"action": "sleep", "seconds": 2.0, "steps": 1, "payload": None}
    assert isinstance(op.params["seconds"], float)


async def test_submit_records_owner_priority_requirements_and_creation_time(rig: Rig) -> None:
    rig.clock.advance(42)
    requirements = Requirements(gpu="preferred", min_memory_gb=2.0)
    op = await rig.submit(Submission("diagnostic", {}, 5, requirements), owner="bob")
    assert (op.owner, op.priority, op.requirements, op.created_at) == (
        "bob",
        5,
        requirements,
        T0 + timedelta(seconds=42),
    )


async def test_a_submit_repeated_with_its_idempotency_key_returns_the_same_operation(
    rig: Rig,
) -> None:
    first, created_first = await rig.orch.submit(NOOP, owner="alice", idempotency_key="k1")
    again, created_again = await rig.orch.submit(NOOP, owner="alice", idempotency_key="k1")
    assert (again.operation_id, created_first, created_again) == (first.operation_id, True, False)


async def test_a_repeated_submit_stores_nothing_new(rig: Rig) -> None:
    await rig.submit(key="k1")
    await rig.submit(key="k1")
    assert len(await rig.store.unfinished_operations()) == 1


async def test_the_same_idempotency_key_with_another_body_raises_conflict(rig: Rig) -> None:
    await rig.submit(key="k1")
    with pytest.raises(Conflict, match="Idempotency-Key"):
        await rig.submit(Submission("diagnostic", {"action": "sleep"}), key="k1")


async def test_the_same_idempotency_key_with_another_priority_raises_conflict(rig: Rig) -> None:
    await rig.submit(key="k1")
    with pytest.raises(Conflict):
        await rig.submit(Submission("diagnostic", {"action": "noop"}, priority=3), key="k1")


async def test_the_same_idempotency_key_of_another_owner_makes_a_new_operation(rig: Rig) -> None:
    mine = await rig.submit(owner="alice", key="k1")
    theirs = await rig.submit(owner="bob", key="k1")
    assert theirs.operation_id != mine.operation_id


async def test_the_idempotency_key_still_answers_after_the_operation_finished(rig: Rig) -> None:
    await rig.register()
    op = await rig.submit(key="k1")
    running = await rig.dispatch_next()
    assert running is not None
    await rig.orch.report_completion(op.operation_id, lease_of(running), "completed", result=1)
    again = await rig.submit(key="k1")
    assert (again.operation_id, again.status) == (op.operation_id, "completed")


async def test_submit_of_an_unknown_operation_type_raises_invalid_request_naming_it(
    rig: Rig,
) -> None:
    with pytest.raises(InvalidRequest, match=r"unknown operation type 'warp_drive'.*diagnostic"):
        await rig.submit(Submission("warp_drive", {}))


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"action": "explode"}, "action"),
        ({"actoin": "noop"}, "actoin"),
        ({"action": "sleep", "seconds": -1}, "seconds"),
        ({"action": "sleep", "steps": 0}, "steps"),
    ],
    ids=["unknown-action", "misspelt-field", "negative-seconds", "zero-steps"],
)
async def test_submit_with_bad_diagnostic_params_raises_invalid_request_naming_the_field(
    rig: Rig, params: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidRequest, match=f"invalid params for diagnostic: {named}"):
        await rig.submit(Submission("diagnostic", params))


async def test_a_refused_submit_stores_nothing(rig: Rig) -> None:
    with contextlib.suppress(InvalidRequest):
        await rig.submit(Submission("diagnostic", {"action": "explode"}))
    assert await rig.store.unfinished_operations() == []


async def test_a_type_only_a_registered_worker_knows_is_accepted_with_its_params_as_given(
    rig: Rig,
) -> None:
    await rig.register(types=frozenset({"diagnostic", "pricing"}))
    op = await rig.submit(Submission("pricing", {"book": "EU", "paths": 10}))
    assert (op.operation_type, op.params) == ("pricing", {"book": "EU", "paths": 10})


async def test_submit_to_a_full_queue_raises_queue_full_with_retry_after_of_a_second_or_more(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(max_pending=2)
    await rig.submit()
    await rig.submit()
    with pytest.raises(QueueFull) as caught:
        await rig.submit()
    assert caught.value.retry_after_s >= 1


async def test_one_owner_cannot_fill_the_queue_past_its_limit(make_rig: MakeRig) -> None:
    """Per-key limit: alice's backlog gets 429 while bob still gets in; a finished operation
    frees alice's room again."""
    rig = make_rig(max_unfinished_per_owner=2)
    first = await rig.submit(owner="alice")
    await rig.submit(owner="alice")
    with pytest.raises(QueueFull, match="alice has 2 unfinished operations") as caught:
        await rig.submit(owner="alice")
    with pytest.raises(QueueFull):
        await rig.orch.submit_many([(NOOP, None)], owner="alice")
    await rig.submit(owner="bob")
    await rig.orch.cancel(first.operation_id, by=ALICE)  # pending: cancelled at once
    await rig.submit(owner="alice")
    assert caught.value.retry_after_s >= 1
    assert rig.sample("workfleet_operations_rejected_total", reason="owner_limit") == 2.0


async def test_a_submit_refused_for_a_full_queue_is_not_stored_and_is_counted(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(max_pending=1)
    await rig.submit()
    with contextlib.suppress(QueueFull):
        await rig.submit()
    stored = len(await rig.store.unfinished_operations())
    rejected = rig.sample("workfleet_operations_rejected_total", reason="queue_full")
    assert (stored, rejected) == (1, 1.0)


async def test_a_retried_submit_is_answered_from_its_key_even_when_the_queue_is_full(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(max_pending=1)
    op = await rig.submit(key="k1")
    again = await rig.submit(key="k1")
    assert again.operation_id == op.operation_id


async def test_operations_running_on_workers_do_not_count_towards_a_full_queue(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(max_pending=1)
    await rig.register()
    await rig.running_on("w1")
    assert (await rig.submit()).status == "pending"


# ---- dispatch ----------------------------------------------------------------------------------


async def test_next_assignment_reserves_a_slot_on_the_chosen_worker(rig: Rig) -> None:
    await rig.register("w1", slots=2)
    op = await rig.submit()
    assignment = rig.orch.next_assignment()
    assert assignment is not None
    assert (assignment[1].worker_id, rig.orch.workers["w1"].reserved) == (
        "w1",
        frozenset({op.operation_id}),
    )


async def test_next_assignment_leases_attempt_one_and_leaves_the_operation_pending(
    rig: Rig,
) -> None:
    await rig.register()
    await rig.submit()
    assignment = rig.orch.next_assignment()
    assert assignment is not None
    op = assignment[0]
    assert (op.status, op.worker_id, lease_of(op).attempt) == ("pending", "w1", 1)


async def test_next_assignment_never_fills_a_worker_beyond_its_slots(rig: Rig) -> None:
    await rig.register("w1", slots=2)
    for _ in range(3):
        await rig.submit()
    placed = [rig.orch.next_assignment() for _ in range(3)]
    assert (
        [a is not None for a in placed],
        len(rig.orch.workers["w1"].reserved),
        rig.orch.workers["w1"].status,
    ) == ([True, True, False], 2, "busy")


async def test_next_assignment_returns_none_when_no_worker_can_run_the_operation(
    rig: Rig,
) -> None:
    await rig.register(types=frozenset({"training"}))
    await rig.submit()
    assert rig.orch.next_assignment() is None


async def test_next_assignment_takes_the_highest_priority_operation_first(rig: Rig) -> None:
    await rig.register()
    await rig.submit(Submission("diagnostic", {}, priority=1))
    urgent = await rig.submit(Submission("diagnostic", {}, priority=9))
    assignment = rig.orch.next_assignment()
    assert assignment is not None
    assert assignment[0].operation_id == urgent.operation_id


async def test_an_operation_no_worker_can_run_now_does_not_block_the_others(rig: Rig) -> None:
    await rig.register(gpu=False)
    await rig.register("gpu", gpu=True)
    await rig.orch.set_draining("gpu", True)  # the only worker that could run it takes nothing
    await rig.submit(Submission("diagnostic", {}, 9, Requirements(gpu="required")))
    cpu = await rig.submit(Submission("diagnostic", {}, 0))
    assignment = rig.orch.next_assignment()
    assert assignment is not None
    assert assignment[0].operation_id == cpu.operation_id


async def test_round_robin_spreads_operations_over_equal_workers(rig: Rig) -> None:
    await rig.register("w1", slots=4)
    await rig.register("w2", slots=4)
    chosen = []
    for _ in range(4):
        await rig.submit()
        dispatched = await rig.dispatch_next()
        assert dispatched is not None
        chosen.append(dispatched.worker_id)
        rig.clock.advance(1)
    assert chosen == ["w1", "w2", "w1", "w2"]


async def test_round_robin_spreads_operations_placed_within_one_clock_tick(rig: Rig) -> None:
    await rig.register("w1", slots=4)
    await rig.register("w2", slots=4)
    for _ in range(4):
        await rig.submit()
    placed = [rig.orch.next_assignment() for _ in range(4)]
    chosen = [a[1].worker_id for a in placed if a is not None]
    assert sorted(chosen) == ["w1", "w1", "w2", "w2"]


async def test_an_accepted_dispatch_makes_the_operation_running(rig: Rig) -> None:
    await rig.register()
    await rig.submit()
    rig.clock.advance(3)
    op = await rig.dispatch_next()
    assert op is not None
    assert (op.status, op.dispatched_at, op.accepted_seq) == (
        "running",
        T0 + timedelta(seconds=3),
        1,
    )


async def test_an_accepted_dispatch_is_counted(rig: Rig) -> None:
    await rig.register()
    await rig.running_on("w1")
    dispatched = {"operation_type": "diagnostic", "worker_type": "cpu"}
    assert rig.sample("workfleet_operations_dispatched_total", **dispatched) == 1


async def test_a_refused_dispatch_frees_the_slot_and_requeues_without_a_loss(rig: Rig) -> None:
    await rig.register()
    rig.fleet.answer_next_dispatch("w1", DispatchResult("refused", "HTTP 409"))
    await rig.submit()
    op = await rig.dispatch_next()
    assert op is not None
    assert (op.status, op.lease, op.losses, op.operation_id in rig.orch.queue) == (
        "pending",
        None,
        0,
        True,
    )
    assert rig.orch.workers["w1"].reserved == frozenset()


async def test_an_unconfirmed_dispatch_counts_a_loss_and_cancels_it_on_the_worker(
    rig: Rig,
) -> None:
    await rig.register()
    rig.fleet.answer_next_dispatch("w1", DispatchResult("unconfirmed", "timeout"))
    await rig.submit()
    assignment_lease = None
    op = await rig.dispatch_next()
    assert op is not None
    await rig.settle()
    assignment_lease = rig.fleet.dispatches[0][1].lease
    assert (op.status, op.losses) == ("pending", 1)
    assert rig.fleet.cancels == [
        ("w1", op.operation_id, Lease(assignment_lease.attempt, assignment_lease.token))
    ]


async def test_an_unreachable_worker_gets_no_more_dispatches(rig: Rig) -> None:
    await rig.register("w1")
    rig.fleet.answer_next_dispatch("w1", DispatchResult("unreachable", "connection refused"))
    await rig.submit()
    await rig.dispatch_next()
    assert (rig.orch.workers["w1"].status, rig.orch.next_assignment()) == (
        "temporarily_unavailable",
        None,
    )


# ---- reports -----------------------------------------------------------------------------------


async def test_completion_with_the_current_lease_records_the_outcome(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    rig.clock.advance(10)
    done = await rig.orch.report_completion(
        op.operation_id, lease_of(op), "completed", result={"answer": 42}
    )
    assert (done.status, done.result, done.finished_at) == (
        "completed",
        {"answer": 42},
        T0 + timedelta(seconds=10),
    )


async def test_a_large_result_is_read_back_from_the_store_not_kept_in_memory(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    big = {"rows": "x" * RECENT_MAX_BYTES}
    done = await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result=big)
    assert not kept_in_memory(done) and kept_in_memory(replace(done, result={"answer": 42}))
    assert op.operation_id not in rig.orch._recent  # durable when acknowledged, so let go
    assert (await rig.orch.get(op.operation_id)).result == big


async def test_completion_is_stored_before_it_is_acknowledged(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    done = await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result=1)
    assert await rig.store.get_operation(op.operation_id) == done


async def test_completion_frees_the_workers_slot(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.report_completion(op.operation_id, lease_of(op), "completed")
    assert (rig.orch.workers["w1"].reserved, rig.orch.workers["w1"].status) == (
        frozenset(),
        "available",
    )


async def test_completion_is_counted_once_by_type_and_status(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.report_completion(op.operation_id, lease_of(op), "failed")
    assert (
        rig.sample(
            "workfleet_operations_completed_total", operation_type="diagnostic", status="failed"
        )
        == 1
    )


async def test_a_completion_with_a_stale_lease_raises_stale_lease(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    with pytest.raises(StaleLease):
        await rig.orch.report_completion(op.operation_id, Lease(1, "not-the-token"), "completed")


async def test_a_completion_with_a_stale_lease_is_counted_as_a_stale_report(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    with contextlib.suppress(StaleLease):
        await rig.orch.report_completion(op.operation_id, Lease(1, "not-the-token"), "completed")
    assert rig.sample("workfleet_stale_reports_total", kind="completion") == 1


async def test_a_completion_with_a_stale_lease_leaves_the_operation_running(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    with contextlib.suppress(StaleLease):
        await rig.orch.report_completion(op.operation_id, Lease(1, "not-the-token"), "completed")
    assert (await rig.orch.get(op.operation_id)).status == "running"


async def test_a_duplicate_delivery_of_a_recorded_completion_is_accepted_idempotently(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    first = await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result=1)
    rig.clock.advance(5)
    again = await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result=1)
    assert again == first


async def test_a_duplicate_delivery_is_neither_counted_as_stale_nor_as_a_second_outcome(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    for _ in range(2):
        await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result=1)
    completed = rig.sample(
        "workfleet_operations_completed_total", operation_type="diagnostic", status="completed"
    )
    assert (completed, rig.sample("workfleet_stale_reports_total", kind="completion")) == (1, 0)


async def test_a_duplicate_delivery_never_overwrites_the_recorded_result(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result="first")
    await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result="second")
    await rig.settle()
    stored = await rig.store.get_operation(op.operation_id)
    assert stored is not None
    assert stored.result == "first"


async def test_a_second_completion_with_another_outcome_is_refused(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.report_completion(op.operation_id, lease_of(op), "completed")
    with pytest.raises(StaleLease):
        await rig.orch.report_completion(op.operation_id, lease_of(op), "failed")


async def test_a_completion_for_an_unknown_operation_raises_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound):
        await rig.orch.report_completion("op_nope", Lease(1, "whatever-token"), "completed")


async def test_a_completion_that_overtakes_the_dispatch_acknowledgement_is_recorded(
    rig: Rig,
) -> None:
    await rig.register()
    await rig.submit()
    assignment = rig.orch.next_assignment()
    assert assignment is not None
    op = assignment[0]
    done = await rig.orch.report_completion(op.operation_id, lease_of(op), "completed")
    assert (done.status, done.dispatched_at) == ("completed", T0)


async def test_reported_progress_is_visible_at_once(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.report_progress(
        op.operation_id, lease_of(op), {"percentage": 50.0}, started_at=T0
    )
    assert (await rig.orch.get(op.operation_id)).progress == {"percentage": 50.0}


async def test_reported_progress_reaches_the_store_when_progress_is_flushed(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.report_progress(
        op.operation_id, lease_of(op), {"percentage": 50.0}, started_at=T0
    )
    await rig.settle()
    before = await rig.store.get_operation(op.operation_id)
    await rig.orch.flush_progress()
    await rig.settle()
    after = await rig.store.get_operation(op.operation_id)
    assert before is not None
    assert after is not None
    assert (before.progress, after.progress) == (None, {"percentage": 50.0})


async def test_progress_with_a_stale_lease_raises_stale_lease_and_is_counted(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    with pytest.raises(StaleLease):
        await rig.orch.report_progress(
            op.operation_id, Lease(1, "not-the-token"), {"percentage": 1.0}, started_at=None
        )
    assert rig.sample("workfleet_stale_reports_total", kind="progress") == 1


async def test_progress_for_a_finished_operation_raises_stale_lease(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.report_completion(op.operation_id, lease_of(op), "completed")
    with pytest.raises(StaleLease):
        await rig.orch.report_progress(op.operation_id, lease_of(op), None, started_at=None)


async def test_wait_returns_the_operation_once_it_is_terminal(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    waiter = asyncio.ensure_future(rig.orch.wait(op.operation_id, timeout_s=60))
    await asyncio.sleep(0)
    await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result=7)
    assert (await waiter).result == 7


# ---- worker liveness ---------------------------------------------------------------------------


async def test_two_failed_health_checks_leave_the_operation_running_on_its_worker(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    rig.fleet.down["w1"] = HealthCheckFailed("timed out", refused=False)
    await rig.check_health("w1", times=2)
    now = await rig.orch.get(op.operation_id)
    assert (now.status, now.lease, rig.orch.workers["w1"].status) == (
        "running",
        op.lease,
        "busy",
    )


async def test_the_failure_threshold_makes_the_workers_operations_pending_again(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    rig.fleet.down["w1"] = HealthCheckFailed("timed out", refused=False)
    await rig.check_health("w1", times=3)
    now = await rig.orch.get(op.operation_id)
    assert (now.status, now.lease, now.losses, op.operation_id in rig.orch.queue) == (
        "pending",
        None,
        1,
        True,
    )


async def test_the_failure_threshold_makes_the_worker_temporarily_unavailable(
    rig: Rig,
) -> None:
    await rig.register()
    rig.fleet.down["w1"] = HealthCheckFailed("timed out", refused=False)
    await rig.check_health("w1", times=3)
    assert rig.orch.workers["w1"].status == "temporarily_unavailable"


async def test_a_lost_operation_gets_a_higher_attempt_on_its_next_assignment(rig: Rig) -> None:
    await rig.register("w1")
    op = await rig.running_on("w1")
    await rig.register("w2")
    rig.fleet.down["w1"] = HealthCheckFailed("timed out", refused=False)
    await rig.check_health("w1", times=3)
    again = await rig.dispatch_next()
    assert again is not None
    assert (again.operation_id, again.worker_id, lease_of(again).attempt) == (
        op.operation_id,
        "w2",
        2,
    )


async def test_the_lost_attempts_completion_is_refused_after_the_operation_moved_on(
    rig: Rig,
) -> None:
    await rig.register("w1")
    op = await rig.running_on("w1")
    await rig.register("w2")
    rig.fleet.down["w1"] = HealthCheckFailed("timed out", refused=False)
    await rig.check_health("w1", times=3)
    await rig.dispatch_next()
    with pytest.raises(StaleLease):
        await rig.orch.report_completion(op.operation_id, lease_of(op), "completed")


async def test_a_lost_attempt_is_counted_by_reason(rig: Rig) -> None:
    await rig.register()
    await rig.running_on("w1")
    rig.orch.declare_unreachable("w1")
    assert rig.sample("workfleet_operation_attempts_lost_total", reason="worker_unreachable") == 1


async def test_max_losses_losses_fail_the_operation_as_worker_lost(make_rig: MakeRig) -> None:
    rig = make_rig(max_losses=2)
    await rig.register("w1")
    await rig.register("w2")
    op = await rig.running_on("w1")
    rig.orch.declare_unreachable("w1")
    again = await rig.dispatch_next()
    assert again is not None
    assert again.worker_id == "w2"
    rig.orch.declare_unreachable("w2")
    await rig.settle()
    stored = await rig.store.get_operation(op.operation_id)
    assert stored is not None
    assert stored.error is not None
    assert (stored.status, stored.error.type, stored.losses) == ("failed", "worker_lost", 2)


async def test_an_operation_lost_for_good_is_no_longer_queued_or_active(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(max_losses=1)
    await rig.register()
    op = await rig.running_on("w1")
    rig.orch.declare_unreachable("w1")
    await rig.settle()
    assert (op.operation_id in rig.orch.queue, op.operation_id in rig.orch.active) == (
        False,
        False,
    )


async def test_an_operation_lost_for_good_records_one_outcome_even_if_a_completion_races_it(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(max_losses=1)
    await rig.register()
    op = await rig.running_on("w1")
    rig.orch.declare_unreachable("w1")  # the last attempt is lost: worker_lost
    with contextlib.suppress(StaleLease):  # the worker's completion arrives in the same tick
        await rig.orch.report_completion(op.operation_id, lease_of(op), "completed", result=1)
    await rig.settle()
    outcomes = sum(
        rig.sample(
            "workfleet_operations_completed_total", operation_type="diagnostic", status=status
        )
        for status in ("completed", "failed", "cancelled")
    )
    assert outcomes == 1


async def test_deregister_requeues_the_workers_operations_without_counting_a_loss(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.deregister("w1")
    now = await rig.orch.get(op.operation_id)
    assert (now.status, now.lease, now.losses, op.operation_id in rig.orch.queue) == (
        "pending",
        None,
        0,
        True,
    )


async def test_deregister_forgets_the_worker_here_in_the_store_and_in_the_gateway(rig: Rig) -> None:
    await rig.register()
    await rig.orch.deregister("w1")
    assert (rig.orch.worker_known("w1"), await rig.store.load_workers()) == (False, [])
    assert rig.fleet.pooled == set()  # its connection pool is closed


async def test_deregister_of_an_unknown_worker_raises_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound):
        await rig.orch.deregister("nobody")


async def test_registration_is_stored(rig: Rig) -> None:
    await rig.register("w1", slots=3)
    (stored,) = await rig.store.load_workers()
    assert (stored.worker_id, stored.capabilities.slots, stored.instance_id) == ("w1", 3, "inst-1")


async def test_re_registration_with_a_new_instance_loses_the_operations_it_does_not_report(
    rig: Rig,
) -> None:
    await rig.register("w1", instance_id="inst-1")
    op = await rig.running_on("w1")
    await rig.register("w1", instance_id="inst-2")
    now = await rig.orch.get(op.operation_id)
    assert (now.status, now.lease, now.losses) == ("pending", None, 1)


async def test_re_registration_of_the_same_instance_keeps_the_operation_it_reports(
    rig: Rig,
) -> None:
    await rig.register("w1")
    op = await rig.running_on("w1")
    stop = await rig.register(
        "w1", running=(Reported(op.operation_id, lease_of(op)),), accepted_seq=1
    )
    now = await rig.orch.get(op.operation_id)
    assert (stop, now.status, now.lease, rig.orch.workers["w1"].reserved) == (
        [],
        "running",
        op.lease,
        frozenset({op.operation_id}),
    )


async def test_the_same_instance_reporting_an_operation_with_a_stale_lease_must_stop_it(
    rig: Rig,
) -> None:
    await rig.register("w1")
    op = await rig.running_on("w1")
    await rig.register("w2")
    rig.orch.declare_unreachable("w1")
    moved = await rig.dispatch_next()  # attempt 2, on w2
    assert moved is not None
    stop = await rig.register("w1", running=(Reported(op.operation_id, lease_of(op)),))
    assert stop == [op.operation_id]


async def test_a_stale_report_at_registration_leaves_the_current_attempt_alone(rig: Rig) -> None:
    await rig.register("w1")
    op = await rig.running_on("w1")
    await rig.register("w2")
    rig.orch.declare_unreachable("w1")
    moved = await rig.dispatch_next()
    assert moved is not None
    await rig.register("w1", running=(Reported(op.operation_id, lease_of(op)),))
    now = await rig.orch.get(op.operation_id)
    assert (now.worker_id, now.lease, now.status) == ("w2", moved.lease, "running")


async def test_re_registration_reports_an_operation_unknown_here_in_the_stop_list(
    rig: Rig,
) -> None:
    stop = await rig.register("w1", running=(Reported("op_ghost", Lease(1, "ghost-token")),))
    assert stop == ["op_ghost"]


async def test_a_health_report_with_healthy_false_counts_as_a_failure(rig: Rig) -> None:
    await rig.register()
    rig.fleet.unhealthy.add("w1")
    await rig.check_health("w1")
    assert (
        rig.orch.workers["w1"].consecutive_failures,
        rig.sample("workfleet_worker_health_checks_total", worker_type="cpu", result="failure"),
    ) == (1, 1)


async def test_three_health_reports_with_healthy_false_make_the_worker_lose_its_operations(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    rig.fleet.unhealthy.add("w1")
    await rig.check_health("w1", times=3)
    now = await rig.orch.get(op.operation_id)
    assert (rig.orch.workers["w1"].status, now.status) == ("temporarily_unavailable", "pending")


async def test_one_successful_health_check_brings_an_unavailable_worker_back(rig: Rig) -> None:
    await rig.register()
    rig.fleet.down["w1"] = HealthCheckFailed("timed out", refused=False)
    await rig.check_health("w1", times=3)
    del rig.fleet.down["w1"]
    await rig.check_health("w1")
    worker = rig.orch.workers["w1"]
    assert (worker.status, worker.consecutive_failures) == ("available", 0)


async def test_a_successful_health_check_records_the_workers_load(rig: Rig) -> None:
    await rig.register()
    await rig.check_health("w1")
    load = rig.orch.workers["w1"].load
    assert (load.cpu_usage_ratio, load.memory_usage_ratio) == (0.1, 0.2)


async def test_a_health_report_adopts_an_operation_whose_acknowledgement_was_lost(
    rig: Rig,
) -> None:
    await rig.register()
    await rig.submit()
    assignment = rig.orch.next_assignment()  # the POST reached the worker; its answer did not
    assert assignment is not None
    op = assignment[0]
    rig.fleet.running["w1"] = {op.operation_id: lease_of(op)}
    await rig.check_health("w1")
    assert (await rig.orch.get(op.operation_id)).status == "running"


async def test_a_health_report_of_an_operation_being_cancelled_sends_the_cancel_again(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.cancel(op.operation_id, by=ALICE)
    await rig.settle()
    await rig.check_health("w1")
    await rig.settle()
    assert rig.fleet.cancels == [("w1", op.operation_id, lease_of(op))] * 2


async def test_declare_unreachable_makes_the_workers_operations_pending_at_once(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    rig.orch.declare_unreachable("w1")
    assert (await rig.orch.get(op.operation_id)).status == "pending"


async def test_a_worker_unavailable_for_removal_s_is_removed(make_rig: MakeRig) -> None:
    rig = make_rig(liveness=LivenessPolicy(failure_threshold=3, removal_s=300))
    await rig.register()
    rig.orch.declare_unreachable("w1")
    rig.clock.advance(300)
    removed = await rig.orch.remove_expired_workers()
    assert (removed, rig.orch.worker_known("w1"), await rig.store.load_workers()) == (
        ["w1"],
        False,
        [],
    )
    assert rig.fleet.pooled == set()


async def test_a_worker_unavailable_for_less_than_removal_s_is_kept(make_rig: MakeRig) -> None:
    rig = make_rig(liveness=LivenessPolicy(failure_threshold=3, removal_s=300))
    await rig.register()
    rig.orch.declare_unreachable("w1")
    rig.clock.advance(299)
    assert (await rig.orch.remove_expired_workers(), rig.orch.worker_known("w1")) == ([], True)


# ---- cancel ------------------------------------------------------------------------------------


async def test_cancel_of_a_pending_operation_cancels_it_at_once(rig: Rig) -> None:
    op = await rig.submit()
    cancelled = await rig.orch.cancel(op.operation_id, by=ALICE)
    stored = await rig.store.get_operation(op.operation_id)
    assert stored is not None
    assert (cancelled.status, stored.status) == ("cancelled", "cancelled")


async def test_cancel_of_a_pending_operation_takes_it_out_of_the_queue(rig: Rig) -> None:
    op = await rig.submit()
    await rig.orch.cancel(op.operation_id, by=ALICE)
    await rig.register()
    assert (op.operation_id in rig.orch.queue, rig.orch.next_assignment()) == (False, None)


async def test_cancel_of_a_pending_operation_sends_nothing_to_any_worker(rig: Rig) -> None:
    await rig.register()
    op = await rig.submit()
    await rig.orch.cancel(op.operation_id, by=ALICE)
    await rig.settle()
    assert rig.fleet.cancels == []


async def test_cancel_of_a_running_operation_marks_the_request_without_finishing_it(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    rig.clock.advance(7)
    marked = await rig.orch.cancel(op.operation_id, by=ALICE)
    assert (marked.status, marked.cancel_requested_at, marked.finished_at) == (
        "running",
        T0 + timedelta(seconds=7),
        None,
    )


async def test_cancel_of_a_running_operation_sends_a_cancel_to_its_worker(rig: Rig) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.cancel(op.operation_id, by=ALICE)
    await rig.settle()
    assert rig.fleet.cancels == [("w1", op.operation_id, lease_of(op))]


async def test_a_running_operation_being_cancelled_ends_cancelled_when_its_worker_confirms(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.cancel(op.operation_id, by=ALICE)
    done = await rig.orch.report_completion(op.operation_id, lease_of(op), "cancelled")
    assert done.status == "cancelled"


async def test_a_running_operation_being_cancelled_ends_cancelled_if_its_worker_is_lost(
    rig: Rig,
) -> None:
    await rig.register()
    op = await rig.running_on("w1")
    await rig.orch.cancel(op.operation_id, by=ALICE)
    rig.orch.declare_unreachable("w1")
    await rig.settle()
    assert (await rig.orch.get(op.operation_id)).status == "cancelled"


async def test_cancel_of_a_finished_operation_raises_invalid_transition(rig: Rig) -> None:
    op = await rig.submit()
    await rig.orch.cancel(op.operation_id, by=ALICE)
    with pytest.raises(InvalidTransition):
        await rig.orch.cancel(op.operation_id, by=ALICE)


async def test_an_operator_may_not_cancel_another_owners_operation(rig: Rig) -> None:
    op = await rig.submit(owner="alice")
    with pytest.raises(Forbidden):
        await rig.orch.cancel(op.operation_id, by=Principal(role="operator", name="bob"))


async def test_a_viewer_may_not_cancel_an_operation(rig: Rig) -> None:
    op = await rig.submit(owner="alice")
    with pytest.raises(Forbidden):
        await rig.orch.cancel(op.operation_id, by=Principal(role="viewer", name="alice"))


async def test_an_admin_may_cancel_another_owners_operation(rig: Rig) -> None:
    op = await rig.submit(owner="alice")
    cancelled = await rig.orch.cancel(op.operation_id, by=Principal(role="admin", name="root"))
    assert cancelled.status == "cancelled"


async def test_cancel_of_an_unknown_operation_raises_not_found(rig: Rig) -> None:
    with pytest.raises(NotFound):
        await rig.orch.cancel("op_nope", by=ALICE)


# ---- restart -----------------------------------------------------------------------------------


async def _one_running_one_pending(rig: Rig) -> tuple[Operation, Operation]:
    await rig.register("w1")
    running = await rig.running_on("w1")
    pending = await rig.submit(key="k-pending")
    await rig.settle()
    return running, pending


async def test_after_a_restart_the_unfinished_operations_are_known(rig: Rig) -> None:
    running, pending = await _one_running_one_pending(rig)
    second = rig.restarted()
    await second.start()
    assert set(second.active) == {running.operation_id, pending.operation_id}


async def test_after_a_restart_pending_operations_are_queued_again(rig: Rig) -> None:
    running, pending = await _one_running_one_pending(rig)
    second = rig.restarted()
    await second.start()
    assert (pending.operation_id in second.queue, running.operation_id in second.queue) == (
        True,
        False,
    )


async def test_after_a_restart_a_running_operation_holds_a_slot_on_its_persisted_worker(
    rig: Rig,
) -> None:
    running, _ = await _one_running_one_pending(rig)
    second = rig.restarted()
    await second.start()
    assert second.workers["w1"].reserved == frozenset({running.operation_id})


async def test_after_a_restart_the_running_operation_keeps_its_lease(rig: Rig) -> None:
    running, _ = await _one_running_one_pending(rig)
    second = rig.restarted()
    await second.start()
    done = await second.report_completion(running.operation_id, lease_of(running), "completed")
    assert done.status == "completed"


async def test_after_a_restart_the_worker_re_registering_keeps_its_running_operation(
    rig: Rig,
) -> None:
    running, _ = await _one_running_one_pending(rig)
    second = rig.restarted()
    await second.start()
    from workfleet.backend.orchestrator import Registration

    _, stop = await second.register(
        Registration(
            worker_id="w1",
            worker_type="cpu",
            endpoint_url="http://w1.invalid:5003",
            capabilities=Capabilities(),
            operation_types=frozenset({"diagnostic"}),
            instance_id="inst-1",
            accepted_seq=1,
            running=(Reported(running.operation_id, lease_of(running)),),
        )
    )
    assert (stop, second.active[running.operation_id].status) == ([], "running")


async def test_after_a_restart_an_operation_of_a_forgotten_worker_is_requeued_with_a_loss(
    rig: Rig,
) -> None:
    running, _ = await _one_running_one_pending(rig)
    await rig.store.delete_worker("w1")
    second = rig.restarted()
    await second.start()
    now = second.active[running.operation_id]
    assert (now.status, now.losses, running.operation_id in second.queue) == ("pending", 1, True)


async def test_after_a_restart_the_idempotency_key_of_an_unfinished_operation_answers(
    rig: Rig,
) -> None:
    _, pending = await _one_running_one_pending(rig)
    second = rig.restarted()
    await second.start()
    again, created = await second.submit(NOOP, owner="alice", idempotency_key="k-pending")
    assert (again.operation_id, created) == (pending.operation_id, False)


async def test_after_a_restart_a_cancel_requested_operation_without_a_lease_is_cancelled(
    rig: Rig,
) -> None:
    await rig.store.add_operation(
        Operation(
            operation_id="op_half_cancelled",
            operation_type="diagnostic",
            params={"action": "noop"},
            owner="alice",
            created_at=T0,
            attempt=1,
            cancel_requested_at=T0 + timedelta(seconds=1),
        )
    )
    await rig.orch.start()
    await rig.settle()
    assert (await rig.orch.get("op_half_cancelled")).status == "cancelled"


async def test_a_worker_that_refused_a_dispatch_is_skipped_until_its_cooldown_passes(
    rig: Rig,
) -> None:
    await rig.register("w1")
    await rig.submit()
    rig.fleet.next_results["w1"] = [DispatchResult("refused", "HTTP 409: no free slot")]
    await rig.dispatch_next()
    assert rig.orch.next_assignment() is None  # the only worker cools down
    rig.clock.advance(REFUSAL_COOLDOWN_S + 0.01)
    assignment = rig.orch.next_assignment()
    assert assignment is not None and assignment[1].worker_id == "w1"


async def test_a_lost_dispatch_answer_does_not_undo_an_attempt_the_worker_already_confirmed(
    rig: Rig,
) -> None:
    """The worker's own progress report made it running; the dispatch POST then timed out."""
    await rig.register("w1")
    await rig.submit()
    op, _ = rig.orch.next_assignment()  # type: ignore[misc]
    await rig.orch.report_progress(
        op.operation_id, lease_of(op), {"percentage": 5.0}, started_at=None
    )
    rig.orch.dispatch_failed(op.operation_id, lease_of(op), certain=False, reason="unconfirmed")
    after = rig.orch.active[op.operation_id]
    assert after.status == "running" and after.lease == op.lease and after.losses == 0
    assert rig.fleet.cancels == []


async def test_a_batch_repeating_an_idempotency_key_is_refused_whole(rig: Rig) -> None:
    with pytest.raises(InvalidRequest, match="repeated"):
        await rig.orch.submit_many([(NOOP, "k1"), (NOOP, "k2"), (NOOP, "k1")], owner="alice")
    assert (await rig.store.list_operations(OperationQuery()))[0] == []


async def test_a_batch_reusing_a_key_for_another_request_is_refused_whole(rig: Rig) -> None:
    await rig.submit(key="used")
    other = Submission("diagnostic", {"action": "fail"})
    with pytest.raises(Conflict):
        await rig.orch.submit_many([(NOOP, "fresh"), (other, "used")], owner="alice")
    assert len((await rig.store.list_operations(OperationQuery()))[0]) == 1


async def test_a_cancelled_outcome_nobody_asked_for_is_refused(rig: Rig) -> None:
    await rig.register("w1")
    await rig.submit()
    op = await rig.dispatch_next()
    assert op is not None
    with pytest.raises(Conflict):
        await rig.orch.report_completion(op.operation_id, lease_of(op), "cancelled")
    assert rig.orch.active[op.operation_id].status == "running"


# ---- scheduling: queue order, placement policies, the runtime model, admission ---------------


def sleep_of(seconds: float, priority: int = 0, **requirements: Any) -> Submission:
    return Submission(
        "diagnostic",
        {"action": "sleep", "seconds": seconds},
        priority,
        Requirements(**requirements),
    )


async def complete(rig: Rig, op: Operation, *, after_s: float) -> Operation:
    """The worker reports `op` completed `after_s` seconds after it started (now)."""
    started = rig.clock.now
    rig.clock.advance(after_s)
    return await rig.orch.report_completion(
        op.operation_id, lease_of(op), "completed", started_at=started
    )


async def test_a_second_submitters_operation_goes_before_the_first_submitters_backlog(
    rig: Rig,
) -> None:
    await rig.register("w1")
    alices = [await rig.submit(owner="alice") for _ in range(5)]
    rig.clock.advance(1)
    bobs = await rig.submit(owner="bob")
    first = await rig.dispatch_next()
    assert first is not None and first.operation_id == alices[0].operation_id
    await complete(rig, first, after_s=1)
    second = await rig.dispatch_next()
    assert second is not None and second.operation_id == bobs.operation_id


async def test_the_submitter_with_fewer_running_operations_gets_the_free_slot(rig: Rig) -> None:
    await rig.register("w1", slots=3)
    for _ in range(4):
        await rig.submit(owner="alice")
    assert [(await rig.dispatch_next()) is not None for _ in range(2)] == [True, True]
    bobs = await rig.submit(owner="bob")
    third = await rig.dispatch_next()
    assert third is not None and third.operation_id == bobs.operation_id
    assert (rig.orch.ledger.running("alice"), rig.orch.ledger.running("bob")) == (2, 1)


async def test_an_operation_that_waited_long_enough_overtakes_a_newer_higher_priority_one(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(aging_interval_s=60.0)
    await rig.register("w1")
    old = await rig.submit(sleep_of(1, priority=0))
    rig.clock.advance(121)  # two levels gained
    await rig.submit(sleep_of(1, priority=1))
    assignment = rig.orch.next_assignment()
    assert assignment is not None and assignment[0].operation_id == old.operation_id


async def test_the_runtime_model_follows_an_operation_through_queue_run_and_completion(
    rig: Rig,
) -> None:
    await rig.register("w1")
    op = await rig.submit(sleep_of(2))
    runtime = rig.orch.runtime
    assert (runtime.is_queued(op.operation_id), runtime.queued_size("diagnostic")) == (True, 2.0)
    running = await rig.dispatch_next()
    assert running is not None
    assert (runtime.is_queued(op.operation_id), runtime.next_release("w1")) == (
        False,
        T0 + timedelta(seconds=2),  # cold start: 1 s per unit per core, 1 core
    )
    await complete(rig, running, after_s=3)
    assert (runtime.next_release("w1"), runtime.rates("diagnostic")) == (None, {"w1": 1.5})
    assert rig.orch.ledger.running("alice") == 0


async def test_a_lost_attempt_goes_back_to_the_runtime_models_queue(rig: Rig) -> None:
    await rig.register("w1")
    op = await rig.running_on("w1", sleep_of(2))
    rig.orch.declare_unreachable("w1")
    runtime = rig.orch.runtime
    assert (runtime.is_queued(op.operation_id), runtime.next_release("w1")) == (True, None)
    assert rig.orch.ledger.running("alice") == 0


async def test_a_refused_dispatch_goes_back_to_the_runtime_models_queue(rig: Rig) -> None:
    await rig.register("w1")
    rig.fleet.answer_next_dispatch("w1", DispatchResult("refused", "HTTP 409"))
    op = await rig.submit(sleep_of(2))
    await rig.dispatch_next()
    assert (rig.orch.runtime.is_queued(op.operation_id), rig.orch.ledger.running("alice")) == (
        True,
        0,
    )


async def test_a_cancelled_pending_operation_leaves_the_runtime_models_queue(rig: Rig) -> None:
    op = await rig.submit(sleep_of(2))
    await rig.orch.cancel(op.operation_id, by=ALICE)
    assert rig.orch.runtime.queued_size("diagnostic") == 0.0


async def test_after_a_restart_the_runtime_model_and_the_ledger_know_what_runs_and_waits(
    rig: Rig,
) -> None:
    _, pending = await _one_running_one_pending(rig)
    second = rig.restarted()
    await second.start()
    assert second.runtime.is_queued(pending.operation_id)
    assert second.runtime.next_release("w1") is not None
    assert second.ledger.running("alice") == 1


async def test_fastest_first_places_by_declared_cores(make_rig: MakeRig) -> None:
    rig = make_rig(placement="fastest")
    await rig.register("weak", cores=2)
    await rig.register("strong", cores=16)
    await rig.submit(sleep_of(1))
    assignment = rig.orch.next_assignment()
    assert assignment is not None and assignment[1].worker_id == "strong"


async def test_fastest_learns_a_workers_speed_from_completed_operations(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(placement="fastest")
    await rig.register("a", cores=4, slots=2)
    await rig.register("b", cores=4, slots=2)
    first = await rig.running_on("a", sleep_of(1))
    second = await rig.running_on("b", sleep_of(1))
    await complete(rig, first, after_s=4.0)  # a: 4 s per unit
    await complete(rig, second, after_s=1.0)  # b: 1 s per unit
    await rig.submit(sleep_of(1))
    assignment = rig.orch.next_assignment()
    assert assignment is not None and assignment[1].worker_id == "b"


async def test_fastest_leaves_the_last_operation_waiting_for_a_much_faster_busy_worker(
    make_rig: MakeRig,
) -> None:
    rig = make_rig(placement="fastest")
    await rig.register("slow", cores=1)
    await rig.register("fast", cores=16)
    first = await rig.running_on("fast", sleep_of(10))
    last = await rig.submit(sleep_of(10))
    assert rig.orch.next_assignment() is None  # 10 s on slow, ~1.25 s waiting for fast
    assert (
        rig.sample("workfleet_placement_decisions_total", policy="fastest", outcome="waiting") == 1
    )
    await complete(rig, first, after_s=0.625)
    assignment = rig.orch.next_assignment()
    assert assignment is not None
    assert (assignment[0].operation_id, assignment[1].worker_id) == (last.operation_id, "fast")


async def test_an_operation_held_back_for_a_busy_worker_is_looked_at_again_soon(
    make_rig: MakeRig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(orchestrator_module, "WAIT_RECHECK_S", 0.01)
    rig = make_rig(placement="fastest")
    await rig.register("slow", cores=1)
    await rig.register("fast", cores=16)
    await rig.running_on("fast", sleep_of(10))
    await rig.submit(sleep_of(10))
    woken: list[bool] = []
    rig.orch.on_work = lambda: woken.append(True)
    assert rig.orch.next_assignment() is None
    await asyncio.sleep(0.05)
    assert woken == [True]


async def test_placement_decisions_and_time_are_counted(rig: Rig) -> None:
    await rig.register("w1")
    await rig.submit()
    await rig.submit()
    assert rig.orch.next_assignment() is not None
    assert rig.orch.next_assignment() is None  # the only slot is taken
    decisions = {
        outcome: rig.sample(
            "workfleet_placement_decisions_total", policy="round_robin", outcome=outcome
        )
        for outcome in ("placed", "waiting", "none")
    }
    assert decisions == {"placed": 1, "waiting": 0, "none": 1}
    assert rig.sample("workfleet_placement_seconds_count") == 2


async def test_queue_wait_is_observed_by_type_and_priority(rig: Rig) -> None:
    await rig.register("w1")
    await rig.submit(sleep_of(1, priority=7))
    rig.clock.advance(3)
    await rig.dispatch_next()
    labels = {"operation_type": "diagnostic", "priority": "7"}
    assert rig.sample("workfleet_operation_queue_wait_seconds_sum", **labels) == 3.0


async def test_queue_depth_is_shown_by_priority_and_by_submitter(rig: Rig) -> None:
    for i in range(22):
        await rig.submit(sleep_of(1, priority=i % 2), owner=f"user{i:02d}")
    await rig.submit(owner="user00")
    assert rig.sample("workfleet_queue_depth", priority="0") == 12
    assert rig.sample("workfleet_queue_depth", priority="1") == 11
    assert rig.sample("workfleet_queue_depth", priority="9") == 0
    assert rig.sample("workfleet_queue_depth_by_submitter", submitter="user00") == 2
    assert rig.sample("workfleet_queue_depth_by_submitter", submitter="other") == 2


async def test_an_operation_no_registered_worker_can_ever_run_is_refused_naming_why(
    rig: Rig,
) -> None:
    await rig.register("w1", cores=2, labels={"disk": "nvme"})
    await rig.register("w2", cores=16, labels={"zone": "eu"})
    with pytest.raises(InvalidRequest, match="min_cores 32") as refused:
        await rig.submit(sleep_of(1, min_cores=32))
    assert "w1 [cpu, 2 cores" in str(refused.value)
    with pytest.raises(InvalidRequest, match="label zone=us"):
        await rig.submit(sleep_of(1, labels={"zone": "us"}))
    with pytest.raises(InvalidRequest, match="none meets all of them at once") as refused:
        await rig.submit(sleep_of(1, min_cores=4, labels={"disk": "nvme"}))
    assert "(w1 lacks min_cores 4; w2 lacks label disk=nvme)" in str(refused.value)
    assert rig.sample("workfleet_operations_rejected_total", reason="unsatisfiable") == 3
    assert (await rig.store.list_operations(OperationQuery()))[0] == []


async def test_an_operation_only_a_busy_worker_can_run_waits_for_it(rig: Rig) -> None:
    await rig.register("small", cores=2)
    await rig.register("big", cores=16, labels={"zone": "eu"})
    await rig.running_on("big")  # round robin, both never used: by name
    await rig.running_on("small")
    op = await rig.submit(sleep_of(1, min_cores=8, labels={"zone": "eu"}))
    assert op.status == "pending" and rig.orch.next_assignment() is None


async def test_an_operation_of_a_type_no_registered_worker_runs_yet_is_accepted(
    rig: Rig,
) -> None:
    await rig.register("w1", types=frozenset({"backtesting"}))
    op = await rig.submit(sleep_of(1, min_cores=64))
    assert op.status == "pending"


async def test_a_batch_with_one_operation_no_worker_can_run_is_refused_whole(rig: Rig) -> None:
    await rig.register("w1", cores=2)
    with pytest.raises(InvalidRequest, match=r"operations\[1\]: .*min_cores 4"):
        await rig.orch.submit_many([(NOOP, None), (sleep_of(1, min_cores=4), None)], owner="a")
    assert (await rig.store.list_operations(OperationQuery()))[0] == []


async def test_requirements_with_cores_and_labels_are_stored_and_hashed(rig: Rig) -> None:
    await rig.register("w1", cores=8, labels={"zone": "eu", "disk": "nvme"})
    op = await rig.submit(sleep_of(1, min_cores=8, labels={"zone": "eu"}), key="k")
    assert (await rig.store.get_operation(op.operation_id)) == op
    assert op.requirements.labels == (("zone", "eu"),)
    with pytest.raises(Conflict):
        await rig.submit(sleep_of(1, min_cores=8, labels={"zone": "eu", "disk": "nvme"}), key="k")
