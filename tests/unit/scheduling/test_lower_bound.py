"""The makespan lower bound and the fairness figures (scheduling/bounds.py), by hand and as
properties of simulated schedules."""

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from workfleet.domain.placement import POLICY_NAMES
from workfleet.scheduling.bounds import (
    fractional_makespan,
    jain_index,
    lower_bound,
    max_min_shares,
    percentile,
)
from workfleet.scheduling.scenario import (
    FleetSpec,
    ScenarioError,
    WorkloadSpec,
    build,
)
from workfleet.scheduling.simulator import compare


def scenario(workers: list[dict[str, Any]], groups: list[dict[str, Any]]) -> Any:
    fleet = FleetSpec.model_validate({"workers": workers})
    return build(fleet, WorkloadSpec.model_validate({"groups": groups}))


def lp(work: list[float], rates: list[list[float]]) -> float:
    return fractional_makespan(np.array(work, dtype=float), np.array(rates, dtype=float))


# ---- the linear program, by hand ---------------------------------------------------------------


def test_one_class_on_one_pool_takes_work_over_rate() -> None:
    assert lp([100], [[4]]) == pytest.approx(25)


def test_one_class_on_two_pools_takes_work_over_their_summed_rate() -> None:
    assert lp([100], [[1, 4]]) == pytest.approx(20)


def test_classes_on_separate_pools_take_the_longest_of_them() -> None:
    assert lp([100, 30], [[10, 0], [0, 1]]) == pytest.approx(30)


def test_gpu_only_work_is_bounded_by_the_gpu_workers_alone() -> None:
    # 150 units only the GPU pool can run, 100 anyone can: total / capacity says 12.5
    assert lp([150, 100], [[10, 0], [10, 10]]) == pytest.approx(15)


def test_unrelated_speeds_give_a_tighter_bound_than_total_work_over_best_rates() -> None:
    # GPU: trains at 8, backtests at 2; CPU: 1 and 1. Training 80, backtests 20.
    # The GPU trains (10 s) and takes x backtest units so that 10 + x/2 = 20 - x: x = 20/3.
    assert lp([80, 20], [[8, 1], [2, 1]]) == pytest.approx(40 / 3)
    assert 100 / (8 + 1) < 40 / 3  # what "total work / total capacity" would have said


def test_no_work_takes_no_time() -> None:
    assert lp([0, 0], [[1, 1], [1, 1]]) == 0


def test_the_bound_ignores_units_of_scale() -> None:
    assert lp([80e6, 20e6], [[8e5, 1e5], [2e5, 1e5]]) == pytest.approx(40 / 3 * 10)


# ---- the lower bound of a scenario, by hand ----------------------------------------------------


def test_the_lower_bound_counts_each_operation_from_its_arrival() -> None:
    sim = scenario(
        [{"name": "w"}],
        [
            {"count": 1, "type": "backtesting", "size": 10, "arrival": {"at": 0}},
            {"count": 1, "type": "backtesting", "size": 5, "arrival": {"at": 20}},
        ],
    )
    assert lower_bound(sim.workers, sim.operations) == pytest.approx(25)


def test_the_lower_bound_counts_the_longest_operation_on_its_fastest_worker() -> None:
    sim = scenario(
        [{"name": "slow", "count": 10}, {"name": "fast", "speed": 2}],
        [{"count": 1, "type": "backtesting", "size": 30}],
    )
    assert lower_bound(sim.workers, sim.operations) == pytest.approx(15)


def test_the_lower_bound_is_the_work_over_the_capacity_of_the_fleet() -> None:
    sim = scenario(
        [{"name": "weak", "speed": 1}, {"name": "strong", "speed": 4, "slots": 2}],
        [{"count": 90, "type": "backtesting", "size": 1}],
    )
    assert lower_bound(sim.workers, sim.operations) == pytest.approx(10)


def test_the_lower_bound_restricts_gpu_only_work_to_the_gpu_workers() -> None:
    sim = scenario(
        [{"name": "gpu", "gpu": True}, {"name": "cpu", "count": 9}],
        [
            {"count": 20, "type": "training", "size": 1, "requirements": {"gpu": "required"}},
            {"count": 5, "type": "backtesting", "size": 1},
        ],
    )
    assert lower_bound(sim.workers, sim.operations) == pytest.approx(20)


# ---- fairness figures, by hand -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "index"),
    [([1, 1], 1.0), ([1, 0], 0.5), ([1, 2, 3], 36 / 42), ([5], 1.0), ([], 1.0), ([0, 0], 1.0)],
)
def test_jains_index(values: list[float], index: float) -> None:
    assert jain_index(values) == pytest.approx(index)


def test_max_min_fair_shares_give_nobody_more_than_asked_and_split_the_rest() -> None:
    assert max_min_shares([1, 10, 10], 9) == pytest.approx([1, 4, 4])
    assert max_min_shares([2, 3], 10) == pytest.approx([2, 3])


def test_the_nearest_rank_percentile() -> None:
    assert percentile(list(range(1, 101)), 95) == 95
    assert percentile([3.0], 95) == 3.0
    assert percentile([], 95) == 0.0


# ---- no schedule beats the bound ---------------------------------------------------------------

workers_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "cores": st.integers(1, 16),
            "memory_gb": st.sampled_from([4, 16, 64]),
            "gpu": st.booleans(),
            "slots": st.integers(1, 3),
            "speed": st.one_of(
                st.floats(0.25, 8),
                st.fixed_dictionaries(
                    {"backtesting": st.floats(0.25, 8), "training": st.floats(0.25, 8)}
                ),
            ),
        }
    ),
    min_size=1,
    max_size=5,
)
groups_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "count": st.integers(1, 15),
            "type": st.sampled_from(["backtesting", "training"]),
            "size": st.one_of(
                st.floats(0.1, 50),
                st.fixed_dictionaries(
                    {
                        "min": st.just(0.5),
                        "max": st.floats(1, 50),
                        "distribution": st.just("loguniform"),
                    }
                ),
            ),
            "priority": st.integers(0, 2),
            "submitter": st.sampled_from(["alice", "bob"]),
            "arrival": st.one_of(
                st.fixed_dictionaries({"at": st.floats(0, 30)}),
                st.fixed_dictionaries({"start": st.floats(0, 10), "rate": st.floats(0.1, 5)}),
            ),
            "requirements": st.fixed_dictionaries(
                {
                    "gpu": st.sampled_from(["none", "preferred", "required"]),
                    "min_memory_gb": st.sampled_from([0, 8]),
                }
            ),
        }
    ),
    min_size=1,
    max_size=4,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    workers=workers_strategy,
    groups=groups_strategy,
    jitter=st.floats(0, 0.5),
    seed=st.integers(0, 2**16),
)
def test_no_policy_ever_finishes_before_the_lower_bound(
    workers: list[dict[str, Any]], groups: list[dict[str, Any]], jitter: float, seed: int
) -> None:
    fleet = FleetSpec.model_validate(
        {"workers": [{"name": f"w{i}", **w} for i, w in enumerate(workers)]}
    )
    workload = WorkloadSpec.model_validate({"jitter": jitter, "groups": groups})
    try:
        sim = build(fleet, workload, seed=seed)
    except ScenarioError:
        assume(False)  # some operation no worker can run: refused, not simulated
        raise
    for report in compare(sim, POLICY_NAMES):
        assert report.makespan >= report.lower_bound * (1 - 1e-9)
        assert sum(report.completed_by_worker.values()) == len(sim.operations)
