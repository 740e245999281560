"""Size hints and the runtime model (domain/runtime.py)."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from workfleet.domain.operations import Operation, Requirements
from workfleet.domain.runtime import MIN_SIZE, RuntimeModel, declared_capacity, size_hint
from workfleet.domain.workers import Capabilities, Worker

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def make_worker(worker_id: str, *, cores: int = 2, slots: int = 1, gpu: bool = False) -> Worker:
    return Worker(
        worker_id=worker_id,
        worker_type="cpu",
        endpoint_url=f"http://{worker_id}.invalid:5003",
        capabilities=Capabilities(cores=cores, slots=slots, gpu=gpu),
        operation_types=frozenset({"backtesting"}),
        registered_at=T0,
    )


def make_op(operation_id: str, bars: float = 10.0, *, gpu: bool = False) -> Operation:
    return Operation(
        operation_id=operation_id,
        operation_type="backtesting",
        params={"bars": bars},
        owner="alice",
        created_at=T0,
        requirements=Requirements(gpu="preferred" if gpu else "none"),
    )


# ---- size hints --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("operation_type", "params", "size"),
    [
        ("backtesting", {"bars": 5000}, 5000.0),
        ("backtesting", {"bars": 5000, "strategies": ["a", "b"]}, 10000.0),
        ("backtesting", {"timeframe": "1h", "start": "2024-01-01", "end": "2024-01-02"}, 24.0),
        ("backtesting", {"timeframe": "1h", "start": "2024-01-01T00:00:00Z"}, 1.0),
        ("backtesting", {"symbol": "EURUSD", "strategy": "sma_crossover"}, 1.0),
        ("training", {"samples": 1000, "epochs": 20}, 20000.0),
        ("training", {"epochs": 20}, 20.0),
        ("training", {"timeframe": "1d", "start": "2024-01-01", "end": "2024-01-11"}, 10.0),
        ("diagnostic", {"action": "sleep", "seconds": 2.5}, 2.5),
        ("diagnostic", {"action": "cpu", "seconds": 4}, 4.0),
        ("diagnostic", {"action": "noop"}, MIN_SIZE),
        ("diagnostic", {"action": "sleep", "seconds": 0}, MIN_SIZE),
        ("custom", {"size": 7}, 7.0),
        ("custom", {}, 1.0),
    ],
)
def test_size_hint(operation_type: str, params: dict[str, Any], size: float) -> None:
    assert size_hint(operation_type, params) == pytest.approx(size)


@pytest.mark.parametrize("bad", [None, "many", -5, 0, float("nan"), float("inf"), True])
def test_a_size_hint_ignores_params_that_are_not_a_positive_number(bad: Any) -> None:
    assert size_hint("backtesting", {"bars": bad}) == 1.0


def test_a_size_hint_ignores_a_range_it_cannot_read() -> None:
    params = {"timeframe": "1h", "start": "yesterday", "end": "2024-01-02"}
    assert size_hint("backtesting", params) == 1.0


# ---- learning ----------------------------------------------------------------------------------


def test_the_first_observation_replaces_the_cold_estimate() -> None:
    model = RuntimeModel()
    model.observe("backtesting", "w", size=100, seconds=50)
    assert model.rates("backtesting") == {"w": 0.5}


def test_later_observations_are_an_exponentially_weighted_average() -> None:
    model = RuntimeModel(smoothing=0.25)
    model.observe("backtesting", "w", size=100, seconds=100)
    model.observe("backtesting", "w", size=100, seconds=200)
    assert model.rates("backtesting")["w"] == pytest.approx(1.0 + 0.25 * (2.0 - 1.0))


def test_observations_that_cannot_be_a_duration_are_ignored() -> None:
    model = RuntimeModel()
    for size, seconds in [(0, 1), (1, -1), (1, float("nan")), (float("inf"), 1)]:
        model.observe("backtesting", "w", size=size, seconds=seconds)
    assert model.rates("backtesting") == {}


def test_cold_estimates_are_one_second_per_unit_per_core_of_a_slot() -> None:
    model = RuntimeModel()
    assert (
        model.seconds_per_unit("backtesting", make_worker("w", cores=8, slots=2), gpu_asked=False)
        == 0.25
    )


def test_a_gpu_worker_counts_as_gpu_speedup_times_faster_for_work_that_asks_for_a_gpu() -> None:
    worker = make_worker("g", cores=4, gpu=True)
    assert declared_capacity(worker, gpu_asked=True, gpu_speedup=4.0) == 16.0
    assert declared_capacity(worker, gpu_asked=False, gpu_speedup=4.0) == 4.0


def test_the_expected_duration_is_size_times_the_seconds_per_unit() -> None:
    model = RuntimeModel()
    model.observe("backtesting", "w", size=10, seconds=20)
    assert model.expected_seconds(make_op("x", bars=30), make_worker("w")) == pytest.approx(60)


@pytest.mark.parametrize("smoothing", [0.0, -1.0, 1.5])
def test_the_smoothing_must_be_a_weight(smoothing: float) -> None:
    with pytest.raises(ValueError, match="smoothing"):
        RuntimeModel(smoothing=smoothing)


# ---- the work outstanding ----------------------------------------------------------------------


def test_the_model_sums_the_queued_size_per_type_and_forgets_what_starts() -> None:
    model = RuntimeModel()
    model.queued(make_op("a", 10))
    model.queued(make_op("b", 30))
    model.queued(make_op("a", 10))  # twice is once
    assert model.queued_size("backtesting") == 40
    model.started(make_op("a", 10), make_worker("w"), at=T0)
    assert (model.queued_size("backtesting"), model.is_queued("a"), model.is_queued("b")) == (
        30,
        False,
        True,
    )
    model.stopped("b")
    assert model.queued_size("backtesting") == 0


def test_a_running_operation_is_expected_to_end_after_its_estimated_duration() -> None:
    model = RuntimeModel()
    model.observe("backtesting", "w", size=1, seconds=2)
    model.started(make_op("a", 10), make_worker("w"), at=T0)
    model.started(make_op("b", 5), make_worker("w"), at=T0)
    assert model.next_release("w") == T0 + timedelta(seconds=10)
    model.stopped("b")
    assert model.next_release("w") == T0 + timedelta(seconds=20)
    model.stopped("a")
    assert model.next_release("w") is None


def test_a_lost_attempt_queued_again_is_no_longer_running() -> None:
    model = RuntimeModel()
    model.started(make_op("a"), make_worker("w"), at=T0)
    model.queued(make_op("a"))
    assert (model.next_release("w"), model.is_queued("a")) == (None, True)


def test_observations_after_a_tracked_start_teach_the_cold_estimate_of_other_workers() -> None:
    model = RuntimeModel()
    model.started(make_op("a", 10), make_worker("w", cores=2), at=T0)
    model.observe("backtesting", "w", size=10, seconds=40)  # 4 s/unit on 2 cores: 8 per core
    fresh = make_worker("fresh", cores=8)
    assert model.seconds_per_unit("backtesting", fresh, gpu_asked=False) == pytest.approx(1.0)
