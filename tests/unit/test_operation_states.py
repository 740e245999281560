"""The operation state machine (domain/operations.py): one table, one transition function, and
the events that are its only callers. Times are plain datetimes: nothing here reads a clock."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import product
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from workfleet.domain.errors import InvalidTransition, StaleLease, WorkfleetError
from workfleet.domain.operations import (
    NEXT_STATUSES,
    TERMINAL,
    ErrorInfo,
    Lease,
    Operation,
    OperationStatus,
    acknowledge,
    assign,
    cancel,
    check_lease,
    finish,
    lose_attempt,
    record_progress,
    transition,
    unassign,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(seconds=1)
T2 = T0 + timedelta(seconds=2)
T3 = T0 + timedelta(seconds=3)

STATUSES: tuple[OperationStatus, ...] = ("pending", "running", "completed", "failed", "cancelled")

# The table as DESIGN.md section 3 states it, written out independently of the code under test.
EXPECTED_NEXT: dict[OperationStatus, set[OperationStatus]] = {
    "pending": {"running", "cancelled", "failed"},
    "running": {"completed", "failed", "cancelled", "pending"},
    "completed": set(),
    "failed": set(),
    "cancelled": set(),
}
ALL_PAIRS = list(product(STATUSES, STATUSES))
ALLOWED_PAIRS = [(a, b) for a, b in ALL_PAIRS if b in EXPECTED_NEXT[a]]
FORBIDDEN_PAIRS = [(a, b) for a, b in ALL_PAIRS if b not in EXPECTED_NEXT[a]]


def make_op(**changes: Any) -> Operation:
    op = Operation(
        operation_id="op_1",
        operation_type="diagnostic",
        params={"action": "noop"},
        owner="alice",
        created_at=T0,
    )
    return replace(op, **changes)


def assigned_op(**changes: Any) -> Operation:
    """Pending, with a dispatch in flight (attempt 1)."""
    return replace(assign(make_op(), worker_id="w1", token="tok-1"), **changes)


def running_op(**changes: Any) -> Operation:
    op = assigned_op()
    assert op.lease is not None
    return replace(acknowledge(op, op.lease, accepted_seq=7, at=T1), **changes)


def lease_of(op: Operation) -> Lease:
    assert op.lease is not None
    return op.lease


# ---- the table ---------------------------------------------------------------------------------


def test_the_transition_table_is_the_one_the_design_states() -> None:
    assert {k: set(v) for k, v in NEXT_STATUSES.items()} == EXPECTED_NEXT


def test_the_table_covers_all_25_status_pairs() -> None:
    assert len(ALLOWED_PAIRS) + len(FORBIDDEN_PAIRS) == 25
    assert set(NEXT_STATUSES) == set(STATUSES)


@pytest.mark.parametrize(("source", "target"), ALLOWED_PAIRS)
def test_allowed_transition_changes_the_status(
    source: OperationStatus, target: OperationStatus
) -> None:
    moved = transition(make_op(status=source), target, at=T1)
    assert moved.status == target


@pytest.mark.parametrize(("source", "target"), FORBIDDEN_PAIRS)
def test_forbidden_transition_raises_invalid_transition(
    source: OperationStatus, target: OperationStatus
) -> None:
    with pytest.raises(InvalidTransition) as caught:
        transition(make_op(status=source), target, at=T1)
    assert (caught.value.current, caught.value.target) == (source, target)


@pytest.mark.parametrize(("source", "target"), [p for p in ALLOWED_PAIRS if p[1] in TERMINAL])
def test_transition_into_a_terminal_status_stamps_finished_at(
    source: OperationStatus, target: OperationStatus
) -> None:
    assert transition(make_op(status=source), target, at=T2).finished_at == T2


def test_transition_back_to_pending_does_not_stamp_finished_at() -> None:
    assert transition(make_op(status="running"), "pending", at=T2).finished_at is None


def test_terminal_statuses_are_exactly_completed_failed_and_cancelled() -> None:
    assert set(TERMINAL) == {"completed", "failed", "cancelled"}


# ---- assign / acknowledge / unassign -----------------------------------------------------------


def test_assign_gives_a_lease_for_the_next_attempt_and_keeps_the_operation_pending() -> None:
    op = assign(make_op(), worker_id="w1", token="tok-1")
    assert (op.status, op.worker_id, op.lease, op.attempt) == (
        "pending",
        "w1",
        Lease(1, "tok-1"),
        1,
    )


def test_assign_after_two_attempts_leases_attempt_three() -> None:
    assert lease_of(assign(make_op(attempt=2), worker_id="w1", token="t")).attempt == 3


def test_assign_refuses_an_operation_whose_dispatch_is_already_in_flight() -> None:
    with pytest.raises(InvalidTransition):
        assign(assigned_op(), worker_id="w2", token="tok-2")


def test_assign_refuses_a_running_operation() -> None:
    with pytest.raises(InvalidTransition):
        assign(running_op(lease=None), worker_id="w2", token="tok-2")


def test_assign_refuses_a_pending_operation_whose_cancel_was_requested() -> None:
    with pytest.raises(InvalidTransition):
        assign(make_op(cancel_requested_at=T1), worker_id="w1", token="tok-1")


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_assign_refuses_a_terminal_operation(status: OperationStatus) -> None:
    with pytest.raises(InvalidTransition):
        assign(make_op(status=status), worker_id="w1", token="tok-1")


def test_acknowledge_with_the_current_lease_makes_the_operation_running() -> None:
    op = assigned_op()
    running = acknowledge(op, lease_of(op), accepted_seq=7, at=T1)
    assert (running.status, running.dispatched_at, running.accepted_seq) == ("running", T1, 7)


def test_acknowledge_of_a_running_operation_changes_nothing() -> None:
    op = running_op()
    assert acknowledge(op, lease_of(op), accepted_seq=99, at=T3) == op


def test_acknowledge_with_a_stale_lease_raises_stale_lease() -> None:
    with pytest.raises(StaleLease):
        acknowledge(assigned_op(), Lease(1, "forged"), accepted_seq=1, at=T1)


def test_unassign_frees_the_worker_and_the_lease_without_a_loss() -> None:
    op = unassign(assigned_op(accepted_seq=3))
    assert (op.status, op.worker_id, op.lease, op.accepted_seq, op.losses) == (
        "pending",
        None,
        None,
        None,
        0,
    )


def test_unassign_keeps_the_attempt_number_so_the_next_lease_is_higher() -> None:
    op = unassign(assigned_op())
    assert lease_of(assign(op, worker_id="w2", token="t2")).attempt == 2


def test_unassign_refuses_a_running_operation() -> None:
    with pytest.raises(InvalidTransition):
        unassign(running_op())


def test_unassign_refuses_a_pending_operation_without_a_lease() -> None:
    with pytest.raises(InvalidTransition):
        unassign(make_op())


# ---- progress ----------------------------------------------------------------------------------


def test_record_progress_stores_the_progress_of_a_running_operation() -> None:
    op = running_op()
    updated = record_progress(op, lease_of(op), {"percentage": 40.0}, started_at=T1, at=T2)
    assert updated.progress == {"percentage": 40.0}


def test_record_progress_keeps_the_first_started_at() -> None:
    op = running_op(started_at=T1)
    updated = record_progress(op, lease_of(op), None, started_at=T3, at=T3)
    assert updated.started_at == T1


def test_record_progress_without_progress_keeps_the_previous_progress() -> None:
    op = running_op(progress={"percentage": 10.0})
    assert record_progress(op, lease_of(op), None, started_at=None, at=T2).progress == {
        "percentage": 10.0
    }


def test_progress_that_overtakes_the_dispatch_acknowledgement_makes_the_operation_running() -> None:
    op = assigned_op()
    updated = record_progress(op, lease_of(op), {"percentage": 1.0}, started_at=T1, at=T2)
    assert (updated.status, updated.dispatched_at) == ("running", T2)


def test_record_progress_with_a_stale_lease_raises_stale_lease() -> None:
    op = running_op()
    with pytest.raises(StaleLease):
        record_progress(op, Lease(1, "forged"), {"percentage": 1.0}, started_at=None, at=T2)


# ---- finish ------------------------------------------------------------------------------------


def test_finish_with_the_current_lease_records_the_outcome() -> None:
    op = running_op()
    done = finish(op, lease_of(op), "completed", at=T3, result={"answer": 42})
    assert (done.status, done.result, done.error, done.finished_at) == (
        "completed",
        {"answer": 42},
        None,
        T3,
    )


def test_finish_as_failed_records_the_error() -> None:
    op = running_op()
    error = ErrorInfo("ValueError", "bad input", "Traceback ...")
    assert finish(op, lease_of(op), "failed", at=T3, error=error).error == error


def test_finish_keeps_a_started_at_already_known() -> None:
    op = running_op(started_at=T1)
    assert finish(op, lease_of(op), "completed", at=T3, started_at=T2).started_at == T1


def test_finish_takes_the_final_progress_when_given() -> None:
    op = running_op(progress={"percentage": 50.0})
    done = finish(op, lease_of(op), "completed", at=T3, progress={"percentage": 100.0})
    assert done.progress == {"percentage": 100.0}


def test_finish_of_a_dispatch_never_acknowledged_acknowledges_it_on_the_way() -> None:
    op = assigned_op()
    done = finish(op, lease_of(op), "completed", at=T2)
    assert (done.status, done.dispatched_at) == ("completed", T2)


def test_finish_with_a_stale_lease_raises_stale_lease() -> None:
    with pytest.raises(StaleLease):
        finish(running_op(), Lease(1, "forged"), "completed", at=T3)


def test_finish_with_the_lease_of_an_earlier_attempt_raises_stale_lease() -> None:
    first = running_op()
    lost = lose_attempt(first, reason="worker_lost", max_losses=3, at=T2)
    again = assign(lost, worker_id="w2", token="tok-2")
    assert lease_of(again).attempt == 2
    with pytest.raises(StaleLease):
        finish(again, lease_of(first), "completed", at=T3)


def test_a_second_finish_with_the_same_lease_raises_stale_lease() -> None:
    op = running_op()
    done = finish(op, lease_of(op), "completed", at=T2, result=1)
    with pytest.raises(StaleLease):
        finish(done, lease_of(op), "completed", at=T3, result=2)


# ---- lose_attempt ------------------------------------------------------------------------------


def test_lost_attempt_goes_back_to_pending_without_lease_or_worker() -> None:
    lost = lose_attempt(running_op(), reason="worker_lost", max_losses=3, at=T2)
    assert (lost.status, lost.lease, lost.worker_id, lost.accepted_seq, lost.losses) == (
        "pending",
        None,
        None,
        None,
        1,
    )


def test_lost_attempt_goes_back_to_pending_with_a_new_lease_on_the_next_assign() -> None:
    lost = lose_attempt(running_op(), reason="worker_lost", max_losses=3, at=T2)
    again = assign(lost, worker_id="w2", token="tok-2")
    assert lease_of(again) == Lease(2, "tok-2")


def test_lost_attempt_clears_the_timestamps_of_the_attempt() -> None:
    op = running_op(started_at=T1)
    lost = lose_attempt(op, reason="worker_lost", max_losses=3, at=T2)
    assert (op.dispatched_at, lost.dispatched_at, lost.started_at) == (T1, None, None)


def test_lost_attempt_is_dispatchable_again() -> None:
    assert lose_attempt(running_op(), reason="worker_lost", max_losses=3, at=T2).dispatchable


def test_uncounted_loss_goes_back_to_pending_without_charging_a_loss() -> None:
    lost = lose_attempt(running_op(), reason="deregistered", max_losses=3, at=T2, counted=False)
    assert (lost.status, lost.losses) == ("pending", 0)


def test_uncounted_loss_never_fails_the_operation_even_at_the_last_attempt() -> None:
    op = running_op(losses=2)
    lost = lose_attempt(op, reason="deregistered", max_losses=3, at=T2, counted=False)
    assert lost.status == "pending"


def test_the_max_losses_th_loss_fails_the_operation_as_worker_lost() -> None:
    lost = lose_attempt(running_op(losses=2), reason="worker_unreachable", max_losses=3, at=T2)
    assert lost.status == "failed"
    assert lost.error is not None
    assert lost.error.type == "worker_lost"


def test_a_loss_below_max_losses_does_not_fail_the_operation() -> None:
    lost = lose_attempt(running_op(losses=1), reason="worker_unreachable", max_losses=3, at=T2)
    assert lost.status == "pending"


def test_the_failing_loss_stamps_finished_at_and_clears_the_lease() -> None:
    lost = lose_attempt(running_op(losses=2), reason="worker_unreachable", max_losses=3, at=T2)
    assert (lost.finished_at, lost.lease, lost.losses) == (T2, None, 3)


def test_loss_of_a_cancel_requested_operation_cancels_it() -> None:
    lost = lose_attempt(running_op(cancel_requested_at=T1), reason="lost", max_losses=3, at=T2)
    assert (lost.status, lost.finished_at, lost.lease) == ("cancelled", T2, None)


def test_loss_of_an_unconfirmed_dispatch_keeps_it_pending_and_frees_it() -> None:
    lost = lose_attempt(assigned_op(), reason="unconfirmed", max_losses=3, at=T2)
    assert (lost.status, lost.lease, lost.worker_id, lost.losses) == ("pending", None, None, 1)


def test_lose_attempt_refuses_an_operation_without_a_lease() -> None:
    with pytest.raises(InvalidTransition):
        lose_attempt(make_op(), reason="lost", max_losses=3, at=T2)


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_lose_attempt_refuses_a_terminal_operation(status: OperationStatus) -> None:
    with pytest.raises(InvalidTransition):
        lose_attempt(running_op(status=status), reason="lost", max_losses=3, at=T2)


# ---- cancel ------------------------------------------------------------------------------------


def test_cancel_of_a_pending_operation_without_a_lease_cancels_it_at_once() -> None:
    cancelled = cancel(make_op(), at=T1)
    assert (cancelled.status, cancelled.finished_at) == ("cancelled", T1)


def test_cancel_of_a_dispatch_in_flight_only_marks_the_request() -> None:
    marked = cancel(assigned_op(), at=T1)
    assert (marked.status, marked.cancel_requested_at, marked.is_terminal) == (
        "pending",
        T1,
        False,
    )


def test_cancel_of_a_running_operation_only_marks_the_request() -> None:
    marked = cancel(running_op(), at=T2)
    assert (marked.status, marked.cancel_requested_at, marked.finished_at) == (
        "running",
        T2,
        None,
    )


def test_a_second_cancel_request_keeps_the_first_request_time() -> None:
    marked = cancel(cancel(running_op(), at=T2), at=T3)
    assert marked.cancel_requested_at == T2


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_cancel_of_a_terminal_operation_raises_invalid_transition(status: OperationStatus) -> None:
    with pytest.raises(InvalidTransition):
        cancel(make_op(status=status), at=T1)


# ---- check_lease -------------------------------------------------------------------------------


def test_check_lease_accepts_the_current_lease() -> None:
    op = running_op()
    check_lease(op, lease_of(op))  # no exception


def test_check_lease_refuses_a_lease_with_the_right_attempt_but_another_token() -> None:
    with pytest.raises(StaleLease):
        check_lease(running_op(), Lease(1, "another-token"))


def test_check_lease_refuses_any_lease_when_the_operation_holds_none() -> None:
    with pytest.raises(StaleLease):
        check_lease(make_op(), Lease(1, "tok-1"))


@pytest.mark.parametrize("status", sorted(TERMINAL))
def test_check_lease_refuses_a_report_on_a_terminal_operation_even_with_its_lease(
    status: OperationStatus,
) -> None:
    op = running_op(status=status)
    with pytest.raises(StaleLease):
        check_lease(op, lease_of(op))


# ---- properties --------------------------------------------------------------------------------


class OperationLifecycle(RuleBasedStateMachine):
    """Random event sequences with current, earlier and forged leases."""

    def __init__(self) -> None:
        super().__init__()
        self.op = make_op()
        self.now = T0
        self.leases: list[Lease] = []  # every lease ever handed out, in order
        self.terminal_snapshot: Operation | None = None
        self.finished_at_seen: datetime | None = None
        self.previous_attempt = 0
        self.tokens = 0

    # -- helpers

    def _tick(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now

    def _lease(self, data: st.DataObject) -> Lease:
        choice = data.draw(st.sampled_from(["current", "earlier", "forged"]))
        if choice == "current" and self.op.lease is not None:
            return self.op.lease
        if choice == "earlier" and self.leases:
            return data.draw(st.sampled_from(self.leases))
        return Lease(
            data.draw(st.integers(min_value=0, max_value=6)),
            data.draw(st.sampled_from(["tok-1", "tok-2", "forged", ""])),
        )

    def _apply(self, event: Any, *args: Any, **kwargs: Any) -> None:
        before = self.op
        try:
            after = event(before, *args, **kwargs)
        except WorkfleetError:
            return  # a domain error leaves the operation as it was
        if before.is_terminal:
            assert after == before, "a terminal operation changed"
        elif after.status != before.status:
            # one edge of the table, or two through running (a report that overtook the
            # dispatch acknowledgement: pending -> running -> outcome)
            assert after.status in EXPECTED_NEXT[before.status] or (
                "running" in EXPECTED_NEXT[before.status]
                and after.status in EXPECTED_NEXT["running"]
            )
        if after.lease is not None and after.lease != before.lease:
            assert all(after.lease.attempt > old.attempt for old in self.leases)
            self.leases.append(after.lease)
        self.op = after

    # -- rules: every event of the domain

    @rule(worker=st.sampled_from(["w1", "w2"]))
    def do_assign(self, worker: str) -> None:
        self.tokens += 1
        self._apply(assign, worker_id=worker, token=f"tok-{self.tokens}")

    @rule(data=st.data(), seq=st.none() | st.integers(0, 100), dt=st.floats(0, 60))
    def do_acknowledge(self, data: st.DataObject, seq: int | None, dt: float) -> None:
        self._apply(acknowledge, self._lease(data), accepted_seq=seq, at=self._tick(dt))

    @rule()
    def do_unassign(self) -> None:
        self._apply(unassign)

    @rule(data=st.data(), pct=st.floats(0, 100), dt=st.floats(0, 60))
    def do_progress(self, data: st.DataObject, pct: float, dt: float) -> None:
        at = self._tick(dt)
        self._apply(record_progress, self._lease(data), {"percentage": pct}, started_at=at, at=at)

    @rule(
        data=st.data(),
        outcome=st.sampled_from(["completed", "failed", "cancelled"]),
        value=st.integers(),
        dt=st.floats(0, 60),
    )
    def do_finish(self, data: st.DataObject, outcome: Any, value: int, dt: float) -> None:
        error = ErrorInfo("E", str(value)) if outcome == "failed" else None
        result = {"value": value} if outcome == "completed" else None
        self._apply(
            finish, self._lease(data), outcome, at=self._tick(dt), result=result, error=error
        )

    @rule(counted=st.booleans(), max_losses=st.integers(1, 8), dt=st.floats(0, 60))
    def do_lose(self, counted: bool, max_losses: int, dt: float) -> None:
        self._apply(
            lose_attempt, reason="lost", max_losses=max_losses, at=self._tick(dt), counted=counted
        )

    @rule(dt=st.floats(0, 60))
    def do_cancel(self, dt: float) -> None:
        self._apply(cancel, at=self._tick(dt))

    # -- invariants

    @invariant()
    def once_terminal_the_operation_never_changes(self) -> None:
        if self.terminal_snapshot is not None:
            assert self.op == self.terminal_snapshot
        elif self.op.is_terminal:
            self.terminal_snapshot = self.op

    @invariant()
    def finished_at_is_set_once_and_only_with_a_terminal_status(self) -> None:
        assert (self.op.finished_at is not None) == self.op.is_terminal
        if self.finished_at_seen is not None:
            assert self.op.finished_at == self.finished_at_seen
        self.finished_at_seen = self.op.finished_at

    @invariant()
    def no_outcome_is_recorded_before_the_operation_is_terminal(self) -> None:
        if not self.op.is_terminal:
            assert self.op.result is None
            assert self.op.error is None

    @invariant()
    def the_attempt_number_never_decreases(self) -> None:
        assert self.op.attempt >= self.previous_attempt
        self.previous_attempt = self.op.attempt

    @invariant()
    def the_lease_always_quotes_the_current_attempt(self) -> None:
        if self.op.lease is not None:
            assert self.op.lease.attempt == self.op.attempt


# A terminal operation never changes again and records one outcome; attempts only go up.
TestOnceTerminalAnOperationNeverChangesAndAttemptsOnlyGoUp = OperationLifecycle.TestCase
TestOnceTerminalAnOperationNeverChangesAndAttemptsOnlyGoUp.settings = settings(
    max_examples=150,
    stateful_step_count=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
