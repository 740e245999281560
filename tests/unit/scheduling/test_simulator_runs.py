"""The discrete-event simulator (scheduling/simulator.py) and its scenarios (scenario.py)."""

from pathlib import Path
from typing import Any

import pytest

from workfleet.domain.placement import POLICY_NAMES
from workfleet.domain.runtime import size_hint
from workfleet.scheduling.scenario import (
    FleetSpec,
    Scenario,
    ScenarioError,
    WorkloadSpec,
    build,
    load_fleet,
    load_workload,
)
from workfleet.scheduling.simulator import FIGURES, compare, simulate

EXAMPLES = Path(__file__).parents[3] / "examples" / "scheduling"


def scenario(
    workers: list[dict[str, Any]], groups: list[dict[str, Any]], **workload: Any
) -> Scenario:
    fleet = FleetSpec.model_validate({"workers": workers})
    return build(fleet, WorkloadSpec.model_validate({"groups": groups, **workload}))


def example(fleet: str, workload: str, seed: int | None = None) -> Scenario:
    return build(
        load_fleet(EXAMPLES / f"{fleet}.yaml"),
        load_workload(EXAMPLES / f"{workload}.yaml"),
        seed=seed,
    )


def test_the_same_seed_gives_the_same_figures() -> None:
    first = compare(example("mixed-gpu", "mixed-training", seed=5), POLICY_NAMES)
    again = compare(example("mixed-gpu", "mixed-training", seed=5), POLICY_NAMES)
    assert first == again


def test_another_seed_gives_another_workload() -> None:
    one = example("mixed-gpu", "two-submitters", seed=1).operations
    two = example("mixed-gpu", "two-submitters", seed=2).operations
    assert [op.work for op in one] != [op.work for op in two]


def test_the_simulated_operations_carry_params_whose_size_hint_is_their_size() -> None:
    for sim in example("mixed-gpu", "mixed-training").operations:
        assert size_hint(sim.operation.operation_type, sim.operation.params) == sim.size


def test_one_operation_runs_for_its_work_over_the_speed_and_waits_for_nothing() -> None:
    sim = scenario([{"name": "w", "speed": 2}], [{"count": 1, "type": "backtesting", "size": 10}])
    report = simulate(sim, "round_robin")
    assert (report.makespan, report.lower_bound, report.ratio) == pytest.approx((5, 5, 1))
    assert (report.wait_mean, report.wait_p95, report.utilisation, report.jain) == (0, 0, 1, 1)


def test_an_operation_waits_for_a_slot_and_the_wait_is_reported() -> None:
    sim = scenario([{"name": "w"}], [{"count": 2, "type": "backtesting", "size": 4}])
    report = simulate(sim, "round_robin")
    assert (report.makespan, report.wait_mean, report.wait_p95) == pytest.approx((8, 2, 4))


def test_the_utilisation_counts_idle_slots() -> None:
    sim = scenario([{"name": "w", "slots": 2}], [{"count": 1, "type": "backtesting", "size": 4}])
    assert simulate(sim, "capacity").utilisation == pytest.approx(0.5)


def test_the_report_has_the_documented_figures() -> None:
    sim = scenario([{"name": "w"}], [{"count": 3, "type": "backtesting"}])
    assert list(simulate(sim, "fastest").figures()) == list(FIGURES)


def test_the_strong_worker_of_the_brief_completes_more_than_twice_as_many() -> None:
    """The brief's test D.3 in simulation: 100 operations, weak 2-core vs strong 16-core."""
    for report in compare(example("brief-weak-strong", "backtests-burst"), POLICY_NAMES):
        done = report.completed_by_worker
        assert done["weak"] + done["strong"] == 100
        assert done["strong"] > 2 * done["weak"], report.policy


def test_fair_share_keeps_a_late_small_submitter_from_waiting_behind_a_big_one() -> None:
    sim = scenario(
        [{"name": "w", "count": 4}],
        [
            {"count": 200, "type": "backtesting", "size": 1, "submitter": "alice"},
            {
                "count": 10,
                "type": "backtesting",
                "size": 1,
                "submitter": "bob",
                "arrival": {"at": 5},
            },
        ],
    )
    report = simulate(sim, "round_robin")
    assert report.jain > 0.95
    assert report.wait_p95 < 50  # bob's 10 did not wait for alice's 200 (50 s of work)


def test_once_measured_fastest_waits_for_the_gpu_rather_than_train_on_a_cpu() -> None:
    training = {"type": "training", "size": 8}
    sim = scenario(
        [
            {"name": "gpu", "gpu": True, "cores": 4, "speed": {"training": 8}},  # 1 s each
            {"name": "cpu", "count": 2, "cores": 4, "speed": {"training": 1}},  # 8 s each
        ],
        [
            {"count": 3, **training},  # not asking for a GPU: one on each worker, all measured
            {"count": 4, **training, "arrival": {"at": 20}, "requirements": {"gpu": "preferred"}},
        ],
    )
    reports = {r.policy: r for r in compare(sim, POLICY_NAMES)}
    assert reports["fastest"].completed_by_worker == {"gpu": 5, "cpu-1": 1, "cpu-2": 1}
    assert reports["fastest"].makespan == pytest.approx(24)  # the 4 one after the other on the GPU
    assert reports["round_robin"].makespan == pytest.approx(28)  # 2 of the 4 on the CPUs


def test_thousands_of_operations_are_simulated() -> None:
    workload = WorkloadSpec.model_validate(
        {
            "groups": [
                {
                    "count": 3000,
                    "type": "backtesting",
                    "size": {"min": 1, "max": 20},
                    "submitter": name,
                    "arrival": {"start": 0, "rate": 10},
                }
                for name in ("alice", "bob")
            ]
        }
    )
    big = build(load_fleet(EXAMPLES / "mixed-gpu.yaml"), workload)
    report = simulate(big, "fastest")
    assert sum(report.completed_by_worker.values()) == 6000


def test_a_workload_no_worker_can_run_is_refused_with_what_is_missing() -> None:
    with pytest.raises(ScenarioError, match="no worker of the fleet can run training"):
        scenario(
            [{"name": "cpu"}],
            [{"count": 1, "type": "training", "requirements": {"gpu": "required"}}],
        )


def test_per_type_speeds_must_cover_the_types_a_worker_runs() -> None:
    with pytest.raises(ScenarioError, match="no speed for training"):
        scenario(
            [{"name": "cpu", "speed": {"backtesting": 1}}],
            [{"count": 1, "type": "training"}],
        )


def test_a_worker_with_a_list_of_types_runs_only_those() -> None:
    sim = scenario(
        [{"name": "bt", "types": ["backtesting"]}, {"name": "tr", "types": ["training"]}],
        [{"count": 3, "type": "training"}],
    )
    assert simulate(sim, "capacity").completed_by_worker == {"bt": 0, "tr": 3}


def test_the_shipped_examples_load() -> None:
    for fleet in ("brief-weak-strong", "mixed-gpu"):
        assert load_fleet(EXAMPLES / f"{fleet}.yaml").workers
    for workload in ("backtests-burst", "mixed-training", "two-submitters"):
        assert load_workload(EXAMPLES / f"{workload}.yaml").groups


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("workers: [", "not valid YAML"),
        ("- a\n- b\n", "is a mapping"),
        ("workers: []", "workers: List should have at least 1 item"),
        ("workers:\n  - {name: w, cores: 0}", "workers.0.cores"),
        ("workers:\n  - {name: w, speed: -1}", "speeds must be positive"),
        ("workers:\n  - {name: w}\n  - {name: w}", "unique"),
        ("workers:\n  - {name: w, colour: red}", "workers.0.colour: Extra inputs"),
    ],
)
def test_a_bad_fleet_file_is_one_clear_message(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError, match=message):
        load_fleet(path)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="cannot read the workload file"):
        load_workload(tmp_path / "nope.yaml")
