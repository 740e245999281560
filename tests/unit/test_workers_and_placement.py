"""Worker liveness (domain/workers.py) and placement (domain/placement.py).

The clock is a datetime the tests advance by hand; nothing here sleeps."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workfleet.domain.operations import GpuRequirement, Operation, Requirements
from workfleet.domain.placement import POLICIES, can_ever_run, round_robin
from workfleet.domain.workers import (
    Capabilities,
    LivenessPolicy,
    Load,
    Worker,
    declare_unreachable,
    health_failed,
    health_succeeded,
    removal_due,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POLICY = LivenessPolicy(failure_threshold=3, removal_s=300.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_worker(
    worker_id: str = "w1",
    *,
    worker_type: str = "cpu",
    types: frozenset[str] = frozenset({"diagnostic"}),
    slots: int = 1,
    gpu: bool = False,
    memory_gb: float = 8.0,
    **changes: Any,
) -> Worker:
    worker = Worker(
        worker_id=worker_id,
        worker_type=worker_type,
        endpoint_url=f"http://{worker_id}.invalid:5003",
        capabilities=Capabilities(slots=slots, gpu=gpu, memory_gb=memory_gb),
        operation_types=types,
        registered_at=T0,
    )
    return replace(worker, **changes)


def make_op(
    operation_type: str = "diagnostic",
    *,
    gpu: GpuRequirement = "none",
    min_memory_gb: float = 0.0,
    worker_type: str | None = None,
) -> Operation:
    return Operation(
        operation_id="op_1",
        operation_type=operation_type,
        params={},
        owner="alice",
        created_at=T0,
        requirements=Requirements(gpu=gpu, min_memory_gb=min_memory_gb, worker_type=worker_type),
    )


def fail(worker: Worker, times: int, start: float = 0.0) -> Worker:
    for i in range(times):
        worker = health_failed(worker, POLICY, at=at(start + 10 * i))
    return worker


def picked(op: Operation, *workers: Worker) -> str | None:
    chosen = round_robin(op, list(workers), at(1000))
    return chosen.worker_id if chosen else None


# ---- liveness ----------------------------------------------------------------------------------


def test_two_failed_health_checks_leave_the_worker_available() -> None:
    worker = fail(make_worker(), 2)
    assert (worker.status, worker.consecutive_failures, worker.unavailable_since) == (
        "available",
        2,
        None,
    )


def test_three_consecutive_failed_health_checks_make_the_worker_temporarily_unavailable() -> None:
    assert fail(make_worker(), 3).status == "temporarily_unavailable"


def test_unavailable_since_is_the_time_of_the_failure_that_crossed_the_threshold() -> None:
    assert fail(make_worker(), 3, start=0).unavailable_since == at(20)


def test_further_failures_keep_the_first_unavailable_since() -> None:
    worker = fail(make_worker(), 3)
    worker = health_failed(worker, POLICY, at=at(500))
    assert (worker.unavailable_since, worker.consecutive_failures) == (at(20), 4)


def test_the_failure_threshold_is_a_setting() -> None:
    worker = health_failed(make_worker(), LivenessPolicy(failure_threshold=1), at=at(0))
    assert worker.status == "temporarily_unavailable"


def test_one_successful_health_check_brings_an_unavailable_worker_back() -> None:
    worker = health_succeeded(fail(make_worker(), 3), load=Load(), at=at(40))
    assert (worker.status, worker.consecutive_failures, worker.unavailable_since) == (
        "available",
        0,
        None,
    )


def test_a_successful_health_check_records_the_time_and_the_load() -> None:
    load = Load(current_load=0.5, cpu_usage_ratio=0.25, memory_usage_ratio=0.75)
    worker = health_succeeded(make_worker(), load=load, at=at(40))
    assert (worker.last_healthy_at, worker.load) == (at(40), load)


def test_failures_must_be_consecutive_a_success_resets_the_count() -> None:
    worker = fail(make_worker(), 2)
    worker = health_succeeded(worker, load=Load(), at=at(25))
    worker = fail(worker, 2, start=30)
    assert worker.status == "available"


def test_an_unavailable_worker_is_not_due_for_removal_before_removal_s() -> None:
    worker = fail(make_worker(), 3)  # unavailable since at(20)
    assert not removal_due(worker, POLICY, now=at(20 + 299.999))


def test_an_unavailable_worker_is_due_for_removal_once_removal_s_has_passed() -> None:
    worker = fail(make_worker(), 3)
    assert removal_due(worker, POLICY, now=at(20 + 300))


def test_an_available_worker_is_never_due_for_removal() -> None:
    worker = make_worker(last_healthy_at=T0)
    assert not removal_due(worker, POLICY, now=at(10_000))


def test_declare_unreachable_makes_the_worker_unavailable_at_once() -> None:
    worker = declare_unreachable(make_worker(), POLICY, at=at(5))
    assert (worker.status, worker.unavailable_since, worker.consecutive_failures) == (
        "temporarily_unavailable",
        at(5),
        3,
    )


def test_declare_unreachable_keeps_an_earlier_unavailable_since() -> None:
    worker = declare_unreachable(fail(make_worker(), 4), POLICY, at=at(999))
    assert (worker.unavailable_since, worker.consecutive_failures) == (at(20), 4)


# ---- derived status ----------------------------------------------------------------------------


def test_a_worker_with_a_free_slot_is_available() -> None:
    worker = make_worker(slots=2, reserved=frozenset({"op_a"}))
    assert (worker.status, worker.free_slots) == ("available", 1)


def test_a_worker_whose_reservations_fill_every_slot_is_busy() -> None:
    worker = make_worker(slots=2, reserved=frozenset({"op_a", "op_b"}))
    assert (worker.status, worker.free_slots) == ("busy", 0)


def test_a_draining_worker_is_draining_even_with_free_slots() -> None:
    assert make_worker(slots=4, draining=True).status == "draining"


def test_a_draining_worker_with_every_slot_used_is_still_draining() -> None:
    worker = make_worker(draining=True, reserved=frozenset({"op_a"}))
    assert worker.status == "draining"


def test_unavailability_wins_over_draining_and_busy() -> None:
    worker = make_worker(draining=True, reserved=frozenset({"op_a"}), unavailable_since=T0)
    assert worker.status == "temporarily_unavailable"


# ---- placement: round robin --------------------------------------------------------------------


def test_round_robin_is_the_registered_policy_name() -> None:
    assert POLICIES["round_robin"] is round_robin


def test_round_robin_picks_the_least_recently_dispatched_worker() -> None:
    recent = make_worker("a", last_dispatch_seq=50)
    older = make_worker("b", last_dispatch_seq=10)
    assert picked(make_op(), recent, older) == "b"


def test_round_robin_picks_a_never_dispatched_worker_first() -> None:
    used = make_worker("a", last_dispatch_seq=1)
    fresh = make_worker("z")
    assert picked(make_op(), used, fresh) == "z"


def test_round_robin_breaks_ties_by_worker_id() -> None:
    assert picked(make_op(), make_worker("b"), make_worker("a")) == "a"


def test_round_robin_skips_a_busy_worker() -> None:
    busy = make_worker("a", reserved=frozenset({"op_x"}))
    assert picked(make_op(), busy, make_worker("b", last_dispatch_seq=5)) == "b"


def test_round_robin_skips_a_draining_worker() -> None:
    draining = make_worker("a", draining=True)
    assert picked(make_op(), draining, make_worker("b", last_dispatch_seq=5)) == "b"


def test_round_robin_skips_an_unavailable_worker() -> None:
    down = make_worker("a", unavailable_since=T0)
    assert picked(make_op(), down, make_worker("b", last_dispatch_seq=5)) == "b"


def test_round_robin_skips_a_worker_that_does_not_run_the_operation_type() -> None:
    other = make_worker("a", types=frozenset({"training"}))
    assert picked(make_op(), other, make_worker("b", last_dispatch_seq=5)) == "b"


def test_round_robin_honours_a_worker_type_requirement() -> None:
    cpu = make_worker("a", worker_type="cpu")
    box = make_worker("b", worker_type="gpu-box", last_dispatch_seq=5)
    assert picked(make_op(worker_type="gpu-box"), cpu, box) == "b"


def test_round_robin_gives_a_gpu_required_operation_only_to_a_gpu_worker() -> None:
    cpu = make_worker("a")
    gpu = make_worker("b", gpu=True, last_dispatch_seq=5)
    assert picked(make_op(gpu="required"), cpu, gpu) == "b"


def test_round_robin_finds_nobody_for_a_gpu_required_operation_without_gpu_workers() -> None:
    assert picked(make_op(gpu="required"), make_worker("a"), make_worker("b")) is None


def test_round_robin_skips_a_worker_with_less_memory_than_required() -> None:
    small = make_worker("a", memory_gb=4.0)
    large = make_worker("b", memory_gb=16.0, last_dispatch_seq=5)
    assert picked(make_op(min_memory_gb=8.0), small, large) == "b"


def test_round_robin_accepts_a_worker_with_exactly_the_required_memory() -> None:
    assert picked(make_op(min_memory_gb=8.0), make_worker("a", memory_gb=8.0)) == "a"


def test_gpu_preferred_picks_a_free_gpu_worker_over_a_less_recently_used_cpu_worker() -> None:
    cpu = make_worker("a")  # never used: first choice if GPU were not preferred
    gpu = make_worker("b", gpu=True, last_dispatch_seq=500)
    assert picked(make_op(gpu="preferred"), cpu, gpu) == "b"


def test_gpu_preferred_falls_back_to_a_cpu_worker_when_no_gpu_worker_is_free() -> None:
    cpu = make_worker("a", last_dispatch_seq=500)
    gpu = make_worker("b", gpu=True, reserved=frozenset({"op_x"}))
    assert picked(make_op(gpu="preferred"), cpu, gpu) == "a"


def test_gpu_preferred_falls_back_to_a_cpu_worker_when_there_is_no_gpu_worker() -> None:
    assert picked(make_op(gpu="preferred"), make_worker("a")) == "a"


def test_round_robin_returns_none_when_no_worker_can_run_the_operation() -> None:
    workers = (
        make_worker("a", reserved=frozenset({"op_x"})),
        make_worker("b", draining=True),
        make_worker("c", unavailable_since=T0),
        make_worker("d", types=frozenset({"training"})),
    )
    assert picked(make_op(), *workers) is None


def test_round_robin_returns_none_without_workers() -> None:
    assert picked(make_op()) is None


@pytest.mark.parametrize(
    "worker",
    [
        make_worker("busy", reserved=frozenset({"op_x"})),
        make_worker("draining", draining=True),
        make_worker("down", unavailable_since=T0),
    ],
    ids=["busy", "draining", "unavailable"],
)
def test_can_ever_run_ignores_whether_the_worker_is_free_now(worker: Worker) -> None:
    assert can_ever_run(make_op(), worker)
