"""Nemesis schedules: the same seed gives the same schedule, every fault is repaired in time,
the fleet keeps capacity, and the JSON replays exactly."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workfleet.harness.nemesis import FAULTS, Schedule, Step, generate

pytestmark = pytest.mark.unit
WORKERS = [f"w{n}" for n in range(6)]


def test_the_seed_decides_the_schedule() -> None:
    assert generate(7, WORKERS, 60) == generate(7, WORKERS, 60)
    assert generate(7, WORKERS, 60) != generate(8, WORKERS, 60)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32), duration=st.floats(5, 300), workers=st.integers(1, 12))
def test_every_fault_is_repaired_in_time_and_the_fleet_keeps_capacity(
    seed: int, duration: float, workers: int
) -> None:
    targets = [f"w{n}" for n in range(workers)]
    schedule = generate(seed, targets, duration)
    limit = max(1, (workers - 1) // 2)
    faulty: dict[str, Step] = {}
    for step in schedule.steps:
        assert 0 < step.at_s <= duration and step.target in targets
        if step.action in FAULTS:
            assert step.target not in faulty
            faulty[step.target] = step
            assert len(faulty) <= limit
        else:
            fault = faulty.pop(step.target)
            assert FAULTS[fault.action] == step.action and fault.direction == step.direction
    assert not faulty  # healed, resumed, restarted before the end
    assert [s.at_s for s in schedule.steps] == sorted(s.at_s for s in schedule.steps)


def test_the_json_replays_exactly_and_the_printout_names_every_step() -> None:
    schedule = generate(42, WORKERS, 30, faults=("partition",))
    assert Schedule.from_json(schedule.to_json()) == schedule
    text = schedule.describe()
    assert text.splitlines()[0] == f"nemesis seed=42 duration=30 s, {len(schedule.steps)} steps"
    assert all(step.direction in ("both", "in", "out") for step in schedule.steps)
    assert len(text.splitlines()) == len(schedule.steps) + 1


def test_a_schedule_with_an_unknown_action_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown nemesis action 'explode'"):
        Schedule.from_json(
            '{"seed": 1, "duration_s": 5, "steps": [{"at_s": 1, "action": '
            '"explode", "target": "w1"}]}'
        )


def test_link_faults_have_a_direction_and_process_faults_none() -> None:
    steps = generate(3, WORKERS, 120).steps
    assert {s.action for s in steps} >= {"kill", "pause", "partition", "slow"}
    for step in steps:
        link = step.action in ("partition", "slow", "heal")
        assert (step.direction in ("both", "in", "out")) if link else step.direction is None
