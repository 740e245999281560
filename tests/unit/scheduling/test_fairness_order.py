"""Queue order (domain/fairness.py): priority with aging, fair share between submitters."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workfleet.domain.fairness import (
    Aging,
    FairQueue,
    ShareLedger,
    dispatch_key,
    effective_priority,
    fair_order,
)
from workfleet.domain.operations import Operation, Requirements

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
AGING = Aging(interval_s=60.0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def make_op(
    operation_id: str,
    *,
    owner: str = "alice",
    priority: int = 0,
    submitted: float = 0.0,
    operation_type: str = "backtesting",
    requirements: Requirements = Requirements(),  # noqa: B008 (frozen: shared safely)
) -> Operation:
    return Operation(
        operation_id=operation_id,
        operation_type=operation_type,
        params={},
        owner=owner,
        created_at=at(submitted),
        priority=priority,
        requirements=requirements,
    )


def next_pick(queue: FairQueue, now: datetime, ledger: ShareLedger) -> Operation:
    key, _, _ = queue.heads(now, ledger)[0]
    return queue.pop(key)


# ---- examples ----------------------------------------------------------------------------------


def test_an_operation_gains_one_priority_level_per_aging_interval_waited() -> None:
    op = make_op("a", priority=2)
    assert [effective_priority(op, at(s), AGING) for s in (0, 59.9, 60, 185)] == [2, 2, 3, 5]


def test_the_aging_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Aging(interval_s=0)


def test_higher_priority_goes_first_among_fresh_operations() -> None:
    low, high = make_op("low", submitted=0), make_op("high", priority=1, submitted=1)
    assert fair_order([low, high], at(1), AGING, ShareLedger()) == [high, low]


def test_an_old_low_priority_operation_overtakes_newer_higher_priority_ones() -> None:
    low, high = make_op("low", submitted=0), make_op("high", priority=1, submitted=100)
    assert fair_order([high, low], at(121), AGING, ShareLedger()) == [low, high]


def test_the_submitter_with_fewer_running_operations_goes_first() -> None:
    ledger = ShareLedger()
    for _ in range(3):
        ledger.started("alice")
    alices = [make_op(f"a{i}", owner="alice", submitted=0) for i in range(1000)]
    bobs = make_op("b", owner="bob", submitted=5)
    assert fair_order([*alices, bobs], at(6), AGING, ledger)[0] is bobs


def test_between_equally_busy_submitters_the_one_served_less_recently_goes_first() -> None:
    ledger = ShareLedger()
    ledger.started("bob")
    ledger.started("alice")
    ledger.stopped("bob")
    ledger.stopped("alice")
    ops = [make_op("a", owner="alice"), make_op("b", owner="bob", submitted=1)]
    assert [op.owner for op in fair_order(ops, at(2), AGING, ledger)] == ["bob", "alice"]


def test_priority_beats_fair_share() -> None:
    ledger = ShareLedger()
    ledger.started("alice")
    urgent, other = make_op("a", owner="alice", priority=1), make_op("b", owner="bob")
    assert dispatch_key(urgent, T0, AGING, ledger) < dispatch_key(other, T0, AGING, ledger)


def test_the_ledger_never_counts_below_zero_running() -> None:
    ledger = ShareLedger()
    ledger.stopped("alice")
    assert ledger.running("alice") == 0


def test_the_queue_heads_are_each_buckets_oldest_best_first() -> None:
    queue = FairQueue(AGING)
    for op in [
        make_op("a1", submitted=0),
        make_op("a2", submitted=1),
        make_op("g", submitted=2, requirements=Requirements(gpu="required")),
        make_op("b1", owner="bob", submitted=3),
    ]:
        queue.push(op)
    ledger = ShareLedger()
    ledger.started("alice")
    assert [op.operation_id for _, op, _ in queue.heads(at(4), ledger)] == ["b1", "a1", "g"]


def test_a_discarded_operation_is_never_a_head_and_may_come_back() -> None:
    queue = FairQueue(AGING)
    queue.push(make_op("a", submitted=0))
    queue.push(make_op("b", submitted=1))
    queue.discard("a")
    assert "a" not in queue
    assert [op.operation_id for _, op, _ in queue.heads(at(2), ShareLedger())] == ["b"]
    queue.push(make_op("a", submitted=0))  # requeued after a lost attempt: keeps its age
    assert (len(queue), next_pick(queue, at(2), ShareLedger()).operation_id) == (2, "a")


def test_the_queue_counts_its_operations_by_submitter_and_priority() -> None:
    queue = FairQueue(AGING)
    for op in [
        make_op("a1"),
        make_op("a2", priority=3),
        make_op("a3", priority=3, operation_type="training"),
        make_op("b1", owner="bob"),
        make_op("b2", owner="bob"),
    ]:
        queue.push(op)
    queue.discard("b2")
    queue.pop(queue.heads(at(1), ShareLedger())[0][0])  # a priority 3 operation
    assert queue.depths() == {("alice", 0): 1, ("alice", 3): 1, ("bob", 0): 1}


def test_pushing_a_queued_operation_again_changes_nothing() -> None:
    queue = FairQueue(AGING)
    queue.push(make_op("a"))
    queue.push(make_op("a"))
    assert len(queue) == 1


# ---- properties --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    tick: int
    priority: int
    owner: str


arrivals_strategy = st.lists(
    st.builds(
        Arrival,
        tick=st.integers(0, 40),
        priority=st.integers(0, 3),
        owner=st.sampled_from(["alice", "bob", "carol"]),
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(arrivals=arrivals_strategy, service=st.lists(st.integers(0, 2), min_size=1, max_size=8))
def test_nothing_starves_an_operation_goes_before_all_work_submitted_long_enough_after_it(
    arrivals: list[Arrival], service: list[int]
) -> None:
    """With priorities at most P, an operation of priority p is picked before any operation
    submitted more than (P - p + 1) aging intervals after it, however much arrives."""
    aging, tick_s = Aging(interval_s=5.0), 1.0
    ops = [
        make_op(f"op{i}", owner=a.owner, priority=a.priority, submitted=a.tick * tick_s)
        for i, a in enumerate(sorted(arrivals, key=lambda a: a.tick))
    ]
    queue, ledger, picked = FairQueue(aging), ShareLedger(), []
    waiting = list(ops)
    tick = 0
    while waiting or len(queue):
        now = at(tick * tick_s)
        while waiting and waiting[0].created_at <= now:
            queue.push(waiting.pop(0))
        for _ in range(service[tick % len(service)] if waiting else 1):
            if len(queue):
                op = next_pick(queue, now, ledger)
                ledger.started(op.owner)
                ledger.stopped(op.owner)
                picked.append(op.operation_id)
        tick += 1
    top = max(op.priority for op in ops)
    position = {operation_id: i for i, operation_id in enumerate(picked)}
    for x in ops:
        horizon = x.created_at + timedelta(seconds=(top - x.priority + 1) * aging.interval_s)
        for y in ops:
            if y.created_at > horizon:
                assert position[x.operation_id] < position[y.operation_id]


def test_a_low_priority_operation_is_picked_under_an_endless_stream_of_urgent_work() -> None:
    queue, ledger = FairQueue(AGING), ShareLedger()
    queue.push(make_op("low", priority=0, submitted=0))
    before_low: list[Operation] = []
    for second in range(1, 10_000):
        for copy in "ab":  # two urgent operations arrive each second, one is served
            queue.push(make_op(f"urgent{second}{copy}", priority=5, submitted=second))
        op = next_pick(queue, at(second), ledger)
        if op.operation_id == "low":
            break
        before_low.append(op)
    else:
        pytest.fail("the low-priority operation starved")
    # it waited only for urgent work submitted at most (5 - 0 + 1) intervals after it
    assert max(op.created_at for op in before_low) <= at((5 - 0 + 1) * AGING.interval_s)


@settings(max_examples=100, deadline=None)
@given(
    alice=st.integers(1, 200),
    bob=st.integers(1, 200),
    slots=st.integers(1, 6),
    durations=st.lists(st.integers(1, 5), min_size=1, max_size=17),
)
def test_two_submitters_of_unequal_loads_both_progress(
    alice: int, bob: int, slots: int, durations: list[int]
) -> None:
    """Whenever both have work waiting, the slots are split between them within one."""
    queue, ledger = FairQueue(AGING), ShareLedger()
    for i in range(alice):
        queue.push(make_op(f"a{i}", owner="alice"))
    for i in range(bob):
        queue.push(make_op(f"b{i}", owner="bob"))
    pending = {"alice": alice, "bob": bob}
    running: list[tuple[int, str]] = []  # end tick, owner
    done = {"alice": 0, "bob": 0}
    tick = picks = 0
    while len(queue) or running:
        for end, owner in [r for r in running if r[0] <= tick]:
            running.remove((end, owner))
            ledger.stopped(owner)
            done[owner] += 1
        while len(running) < slots and len(queue):
            op = next_pick(queue, at(tick), ledger)
            ledger.started(op.owner)
            pending[op.owner] -= 1
            running.append((tick + durations[picks % len(durations)], op.owner))
            picks += 1
        if pending["alice"] and pending["bob"]:
            assert abs(ledger.running("alice") - ledger.running("bob")) <= 1
        tick += 1
    assert done == {"alice": alice, "bob": bob}
