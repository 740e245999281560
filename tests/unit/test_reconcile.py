"""domain/reconcile.py: what a worker reports against what the backend counts on it."""

from dataclasses import replace
from datetime import UTC, datetime

from workfleet.domain.operations import Lease, Operation
from workfleet.domain.reconcile import Reported, reconcile

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LEASE = Lease(1, "token-one")


def running_op(op_id: str = "op1", worker_id: str = "w1", *, seq: int | None = 3) -> Operation:
    return Operation(
        op_id,
        "diagnostic",
        {},
        "me",
        T0,
        status="running",
        worker_id=worker_id,
        lease=LEASE,
        attempt=1,
        accepted_seq=seq,
    )


def answer(
    active: dict[str, Operation],
    running: tuple[Reported, ...] = (),
    *,
    accepted_seq: int = 5,
    same_instance: bool = True,
    overdue: frozenset[str] = frozenset(),
):
    reserved = frozenset(op_id for op_id, op in active.items() if op.worker_id == "w1")
    return reconcile(
        "w1",
        reserved=reserved,
        active=active,
        running=running,
        accepted_seq=accepted_seq,
        same_instance=same_instance,
        overdue=overdue,
    )


def test_an_operation_reported_under_its_current_lease_is_confirmed() -> None:
    result = answer({"op1": running_op()}, (Reported("op1", LEASE),))
    assert [r.operation_id for r in result.confirmed] == ["op1"]
    assert result.stop == () and result.lost == ()


def test_an_operation_reported_under_a_stale_lease_must_stop() -> None:
    result = answer({"op1": running_op()}, (Reported("op1", Lease(1, "old-token")),))
    assert result.stop == ("op1",) and result.confirmed == ()


def test_an_operation_unknown_here_or_held_by_another_worker_must_stop() -> None:
    active = {"op2": running_op("op2", worker_id="w2")}
    result = answer(active, (Reported("op2", LEASE), Reported("ghost", LEASE)))
    assert result.stop == ("op2", "ghost")


def test_a_confirmed_operation_with_a_cancel_requested_must_stop_too() -> None:
    op = replace(running_op(), cancel_requested_at=T0)
    result = answer({"op1": op}, (Reported("op1", LEASE),))
    assert [r.operation_id for r in result.confirmed] == ["op1"] and result.stop == ("op1",)


def test_an_unreported_operation_is_lost_when_the_report_counts_its_dispatch() -> None:
    result = answer({"op1": running_op(seq=3)}, accepted_seq=3)
    assert result.lost == ("op1",) and result.lost_reason == "worker_lost_operation"


def test_an_unreported_operation_is_kept_when_the_report_predates_its_dispatch() -> None:
    assert answer({"op1": running_op(seq=7)}, accepted_seq=6).lost == ()


def test_an_unacknowledged_dispatch_is_kept_until_it_is_overdue() -> None:
    pending = replace(running_op(seq=None), status="pending")
    assert answer({"op1": pending}).lost == ()
    assert answer({"op1": pending}, overdue=frozenset({"op1"})).lost == ("op1",)


def test_another_instance_of_the_worker_has_lost_everything_it_does_not_report() -> None:
    result = answer({"op1": running_op(seq=9)}, accepted_seq=0, same_instance=False)
    assert result.lost == ("op1",) and result.lost_reason == "worker_restarted"
