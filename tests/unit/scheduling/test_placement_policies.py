"""Placement policies (domain/placement.py): capacity, fastest, and what they share.

Hand-made fleets; the clock is a datetime the tests set, the model is told what happened."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workfleet.domain.operations import GpuRequirement, Operation, Requirements
from workfleet.domain.placement import (
    POLICIES,
    POLICY_NAMES,
    capacity,
    fastest,
    free_capacity,
    make_policy,
    round_robin,
)
from workfleet.domain.runtime import RuntimeModel
from workfleet.domain.workers import Capabilities, Load, Worker

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_worker(
    worker_id: str,
    *,
    cores: int = 2,
    memory_gb: float = 4.0,
    slots: int = 1,
    gpu: bool = False,
    running: int = 0,
    **changes: Any,
) -> Worker:
    worker = Worker(
        worker_id=worker_id,
        worker_type="gpu" if gpu else "cpu",
        endpoint_url=f"http://{worker_id}.invalid:5003",
        capabilities=Capabilities(cores=cores, memory_gb=memory_gb, slots=slots, gpu=gpu),
        operation_types=frozenset({"backtesting", "training"}),
        registered_at=T0,
        reserved=frozenset(f"{worker_id}-op{i}" for i in range(running)),
    )
    return replace(worker, **changes)


def make_op(
    operation_id: str = "op",
    *,
    operation_type: str = "backtesting",
    bars: float = 100.0,
    gpu: GpuRequirement = "none",
    min_memory_gb: float = 0.0,
) -> Operation:
    return Operation(
        operation_id=operation_id,
        operation_type=operation_type,
        params={"bars": bars} if operation_type == "backtesting" else {"samples": bars},
        owner="alice",
        created_at=T0,
        requirements=Requirements(gpu=gpu, min_memory_gb=min_memory_gb),
    )


def chosen(worker: Worker | None) -> str | None:
    return worker.worker_id if worker else None


WEAK = make_worker("weak", cores=2, memory_gb=4)
STRONG = make_worker("strong", cores=16, memory_gb=64)


# ---- one interface -----------------------------------------------------------------------------


def test_every_policy_name_builds_a_policy_with_the_one_interface() -> None:
    model = RuntimeModel()
    for name in POLICY_NAMES:
        policy = make_policy(name, model)
        assert chosen(policy(make_op(), [WEAK], at(0))) == "weak"


def test_the_stateless_policies_stay_reachable_by_name_as_the_orchestrator_looks_them_up() -> None:
    assert POLICIES["round_robin"] is round_robin
    assert POLICIES["capacity"] is capacity


def test_an_unknown_policy_name_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="round_robin, capacity, fastest"):
        make_policy("random", RuntimeModel())


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_no_policy_places_on_a_full_draining_or_unavailable_worker(name: str) -> None:
    workers = [
        make_worker("full", running=1),
        make_worker("draining", draining=True),
        make_worker("gone", unavailable_since=T0),
    ]
    assert make_policy(name, RuntimeModel())(make_op(), workers, at(0)) is None


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_honours_hard_requirements(name: str) -> None:
    op = make_op(gpu="required", min_memory_gb=32)
    workers = [
        make_worker("small-gpu", gpu=True, memory_gb=16),
        make_worker("big-cpu", memory_gb=64),
        make_worker("big-gpu", gpu=True, memory_gb=64),
    ]
    assert chosen(make_policy(name, RuntimeModel())(op, workers, at(0))) == "big-gpu"


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_prefers_a_free_gpu_worker_when_the_gpu_is_preferred(name: str) -> None:
    op = make_op(operation_type="training", gpu="preferred")
    workers = [make_worker("cpu", cores=32, memory_gb=128), make_worker("gpu", gpu=True)]
    assert chosen(make_policy(name, RuntimeModel())(op, workers, at(0))) == "gpu"


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_every_policy_falls_back_to_a_cpu_worker_when_the_gpu_ones_are_busy(name: str) -> None:
    op = make_op(operation_type="training", gpu="preferred")
    workers = [make_worker("gpu", gpu=True, running=1), make_worker("cpu")]
    assert chosen(make_policy(name, RuntimeModel())(op, workers, at(0))) == "cpu"


# ---- capacity ----------------------------------------------------------------------------------


def test_capacity_scores_what_is_free_not_the_size() -> None:
    big = make_worker("big", cores=16, memory_gb=64, slots=4, running=3)
    assert free_capacity(big) == pytest.approx(16 * 0.25 * 64 * 0.25)


def test_capacity_counts_the_reported_load_when_it_is_higher_than_the_reservations() -> None:
    busy_host = make_worker("w", cores=8, memory_gb=16, load=Load(cpu_usage_ratio=0.5))
    assert free_capacity(busy_host) == pytest.approx(8 * 0.5 * 16)


def test_capacity_picks_the_partly_busy_big_worker_while_it_has_the_most_free() -> None:
    big = make_worker("big", cores=16, memory_gb=64, slots=4, running=1)  # 12 x 48 free
    medium = make_worker("medium", cores=8, memory_gb=32, slots=4)  # 8 x 32 free
    assert chosen(capacity(make_op(), [medium, big], at(0))) == "big"


def test_capacity_moves_on_once_the_big_worker_has_less_left_than_an_idle_one() -> None:
    big = make_worker("big", cores=16, memory_gb=64, slots=4, running=3)  # 4 x 16 free
    medium = make_worker("medium", cores=8, memory_gb=32, slots=4)  # 8 x 32 free
    assert chosen(capacity(make_op(), [big, medium], at(0))) == "medium"


def test_capacity_rotates_between_equal_workers_least_recently_used_first() -> None:
    a = make_worker("a", last_dispatch_seq=2)
    b = make_worker("b", last_dispatch_seq=1)
    assert chosen(capacity(make_op(), [a, b], at(0))) == "b"


def test_capacity_still_uses_the_weak_worker_when_the_strong_one_is_full() -> None:
    strong = replace(STRONG, reserved=frozenset({"x"}))
    assert chosen(capacity(make_op(), [strong, WEAK], at(0))) == "weak"


# ---- fastest -----------------------------------------------------------------------------------


def test_fastest_starts_cold_from_the_declared_cores() -> None:
    assert chosen(fastest(make_op(), [WEAK, STRONG], at(0), model=RuntimeModel())) == "strong"


def test_fastest_cold_start_counts_cores_per_slot() -> None:
    shared = make_worker("shared", cores=16, slots=16)  # 1 core per operation
    alone = make_worker("alone", cores=4, slots=1)
    assert chosen(fastest(make_op(), [shared, alone], at(0), model=RuntimeModel())) == "alone"


def test_fastest_learns_that_a_worker_is_slower_and_routes_away_from_it() -> None:
    model = RuntimeModel()
    model.observe("backtesting", "strong", size=100, seconds=400)  # 4 s per bar: slow after all
    model.observe("backtesting", "weak", size=100, seconds=100)
    assert chosen(fastest(make_op(), [WEAK, STRONG], at(0), model=model)) == "weak"


def test_fastest_learning_is_per_operation_type() -> None:
    model = RuntimeModel()
    model.observe("training", "strong", size=100, seconds=400)
    model.observe("training", "weak", size=100, seconds=100)
    assert chosen(fastest(make_op(), [WEAK, STRONG], at(0), model=model)) == "strong"


def test_fastest_scales_an_unmeasured_worker_from_the_measured_ones_by_capacity() -> None:
    model = RuntimeModel()
    model.started(make_op("first"), WEAK, at=at(0))
    model.observe("backtesting", "weak", size=100, seconds=100)  # 1 s/bar on 2 cores
    other = make_worker("other", cores=4)  # expected 0.5 s/bar
    assert model.seconds_per_unit("backtesting", other, gpu_asked=False) == pytest.approx(0.5)
    measured_slow = make_worker("slow", cores=4)
    model.observe("backtesting", "slow", size=100, seconds=300)
    assert chosen(fastest(make_op(), [measured_slow, WEAK, other], at(0), model=model)) == "other"


def queued_model(*ops: Operation) -> RuntimeModel:
    model = RuntimeModel()
    for op in ops:
        model.queued(op)
    return model


def test_fastest_waits_for_a_much_faster_busy_worker_at_the_end_of_the_queue() -> None:
    model = queued_model(op := make_op(bars=100))
    model.observe("backtesting", "weak", size=1, seconds=1.0)  # 100 s here
    model.observe("backtesting", "strong", size=1, seconds=0.1)  # 10 s there
    model.started(make_op("running", bars=100), STRONG, at=at(0))  # ends at 10 s
    strong = replace(STRONG, reserved=frozenset({"running"}))
    assert fastest(op, [WEAK, strong], at(5), model=model) is None


def test_fastest_uses_the_slow_worker_while_the_queue_behind_is_long() -> None:
    op = make_op("head", bars=100)
    model = queued_model(op, *(make_op(f"behind-{i}", bars=100) for i in range(50)))
    model.observe("backtesting", "weak", size=1, seconds=1.0)
    model.observe("backtesting", "strong", size=1, seconds=0.1)
    model.started(make_op("running", bars=100), STRONG, at=at(0))
    strong = replace(STRONG, reserved=frozenset({"running"}))
    assert chosen(fastest(op, [WEAK, strong], at(5), model=model)) == "weak"


def test_fastest_does_not_wait_for_a_busy_worker_that_is_only_a_little_faster() -> None:
    model = queued_model(op := make_op(bars=100))
    model.observe("backtesting", "weak", size=1, seconds=1.0)
    model.observe("backtesting", "strong", size=1, seconds=0.9)
    model.started(make_op("running", bars=100), STRONG, at=at(0))
    strong = replace(STRONG, reserved=frozenset({"running"}))
    assert chosen(fastest(op, [WEAK, strong], at(0), model=model)) == "weak"


def test_fastest_never_waits_when_the_caller_does_not_track_the_queue() -> None:
    model = RuntimeModel()  # `op` was never queued: no idea what is behind it
    model.observe("backtesting", "weak", size=1, seconds=1.0)
    model.observe("backtesting", "strong", size=1, seconds=0.1)
    model.started(make_op("running", bars=100), STRONG, at=at(0))
    strong = replace(STRONG, reserved=frozenset({"running"}))
    assert chosen(fastest(make_op(), [WEAK, strong], at(5), model=model)) == "weak"


def test_fastest_waits_for_a_busy_gpu_when_training_there_ends_much_sooner() -> None:
    op = make_op("train", operation_type="training", bars=1000, gpu="preferred")
    model = queued_model(op)
    gpu = make_worker("gpu", gpu=True, cores=8)
    model.started(make_op("running", operation_type="training", gpu="preferred"), gpu, at=at(0))
    gpu = replace(gpu, reserved=frozenset({"running"}))
    cpu = make_worker("cpu", cores=8)  # cold: the GPU counts as 4 times faster
    assert fastest(op, [cpu, gpu], at(0), model=model) is None
