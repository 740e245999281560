"""The ledger checker on hand-made histories: a clean run passes, and each anomaly is
counted under its own name (and only there)."""

from datetime import UTC, datetime
from typing import Any

import pytest

from workfleet.harness.ledger import (
    BackendMetrics,
    History,
    Record,
    reconcile,
    terminal_transitions,
)
from workfleet.protocol import AuditRecordView

pytestmark = pytest.mark.unit


def _started(op: str, attempt: int, worker: str) -> dict[str, Any]:
    return {"event": "started", "operation_id": op, "attempt": attempt, "worker_id": worker}


def _finished(
    op: str, attempt: int, worker: str, outcome: str = "completed", ts: float = 100.0
) -> dict[str, Any]:
    return {
        "event": "finished",
        "operation_id": op,
        "attempt": attempt,
        "worker_id": worker,
        "outcome": outcome,
        "ts": ts,
    }


def _audit(action: str, op: str, outcome: str, attempt: int = 1) -> AuditRecordView:
    return AuditRecordView(
        seq=1,
        ts=datetime.now(UTC),
        actor="system",
        action=action,
        target=f"operation:{op}",
        outcome=outcome,
        request_id=None,
        detail={"attempt": attempt},
        prev_hash="",
        hash="",
    )


def _clean() -> tuple[History, list[dict[str, Any]], list[Record]]:
    history = History()
    runs: list[dict[str, Any]] = []
    records = []
    for n in range(3):
        op = f"op{n}"
        history.invoke(f"k{n}")
        history.ok(f"k{n}", op)
        runs += [_started(op, 1, "w1"), _finished(op, 1, "w1")]
        records.append(Record(op, "completed", 1, "w1"))
        history.observe(op, "completed", 1)
    return history, runs, records


def _metrics(completed: float = 3, submitted: float = 3, stale: float = 0) -> BackendMetrics:
    return BackendMetrics(submitted, {"completed": completed}, {"completion": stale})


def test_a_clean_run_is_valid_and_counts_everything() -> None:
    history, runs, records = _clean()
    report = reconcile(history, runs, records, _metrics())
    assert report.valid, report.violations
    summary = report.to_dict()
    assert summary["acknowledged"] == summary["terminal"] == summary["executions"] == 3
    assert summary["outcomes"] == {"completed": 3}
    assert summary["metrics_checked"] and summary["stale_rejected"] == 0
    assert not any(summary[name] for name in ("lost", "stuck", "double_terminal", "unexpected"))


def test_an_acknowledged_operation_the_backend_forgot_is_lost() -> None:
    history, runs, records = _clean()
    report = reconcile(history, runs, records[1:])
    assert report.lost == ["op0"] and set(report.violations) == {"lost"}


def test_an_operation_not_final_at_the_deadline_is_stuck() -> None:
    history, runs, records = _clean()
    records[2] = Record("op2", "running", 2, "w2")
    history = History(
        e for e in history.events if e.get("operation_id") != "op2" or e["kind"] == "ok"
    )
    report = reconcile(history, runs, records)
    assert report.stuck == ["op2"] and set(report.violations) == {"stuck"}


def test_a_final_state_that_changes_after_the_client_saw_it_is_double_terminal() -> None:
    history, runs, records = _clean()
    runs.append(_finished("op1", 1, "w1", "failed"))
    records[1] = Record("op1", "failed", 1, "w1", "exception")
    report = reconcile(history, runs, records)
    assert report.double_terminal == ["op1"] and set(report.violations) == {"double_terminal"}


def test_an_operation_listed_twice_is_double_terminal() -> None:
    history, runs, records = _clean()
    report = reconcile(history, runs, [*records, records[0]])
    assert report.double_terminal == ["op0"]


def test_an_attempt_started_after_the_final_one_is_double_terminal() -> None:
    history, runs, records = _clean()
    runs.append(_started("op0", 2, "w2"))  # the backend dispatched a completed operation
    report = reconcile(history, runs, records)
    assert report.double_terminal == ["op0"]
    assert report.duplicate_executions == 1


def test_an_operation_the_audit_trail_made_final_twice_is_double_terminal() -> None:
    """Completed, put back in the queue, run and completed again before the client looked:
    the records and the logs look like a retry; only the backend's audit trail tells."""
    history, runs, records = _clean()
    history = History(e for e in history.events if e["kind"] != "observe")
    runs += [_started("op0", 2, "w2"), _finished("op0", 2, "w2")]
    records[0] = Record("op0", "completed", 2, "w2")
    audit = [_audit("operation.complete", op, "completed") for op in ("op0", "op1", "op2")]
    audit += [
        _audit("operation.complete", "op0", "completed", attempt=2),
        _audit("operation.complete", "op1", "completed"),  # noted again: one transition
        _audit("operation.dispatch", "op1", "assigned"),
    ]
    transitions = terminal_transitions(audit)
    assert transitions == {"op0": 2, "op1": 1, "op2": 1}
    assert reconcile(history, runs, records).valid  # without the trail: nothing to see
    report = reconcile(history, runs, records, transitions=transitions)
    assert report.double_terminal == ["op0"] and set(report.violations) == {"double_terminal"}


def test_records_and_executions_nobody_submitted_are_unexpected() -> None:
    history, runs, records = _clean()
    runs += [_started("ghost-run", 1, "w1")]
    report = reconcile(history, runs, [*records, Record("ghost", "completed", 1, "w1")])
    assert sorted(report.unexpected) == ["ghost", "ghost-run"]
    assert set(report.violations) == {"unexpected", "stale_accepted"}  # nobody ran "ghost"


def test_an_indeterminate_submit_that_exists_is_recovered_not_unexpected() -> None:
    history, runs, records = _clean()
    history.invoke("k9")
    history.info("k9", "timeout")
    runs += [_started("op9", 1, "w1"), _finished("op9", 1, "w1")]
    report = reconcile(history, runs, [*records, Record("op9", "completed", 1, "w1")])
    assert report.valid, report.violations
    assert report.indeterminate == 1 and report.recovered == 1


def test_an_indeterminate_submit_retried_to_an_answer_is_acknowledged() -> None:
    history, runs, records = _clean()
    history.invoke("k0-again")
    history.info("k0-again", "backend unreachable")
    history.ok("k0-again", "op0")
    assert reconcile(history, runs, records).indeterminate == 0


def test_duplicate_executions_are_allowed_and_counted() -> None:
    """The frozen worker: attempt 1 ran to the end late, attempt 2 is the recorded one."""
    history, runs, records = _clean()
    runs += [_started("op0", 2, "w2"), _finished("op0", 2, "w2")]
    records[0] = Record("op0", "completed", 2, "w2")
    history = History(e for e in history.events if e["kind"] != "observe")
    report = reconcile(history, runs, records, _metrics(stale=1))
    assert report.valid, report.violations
    assert report.duplicate_executions == 1 and report.zombie_finishes == 1
    assert report.stale_rejected == 1


def test_a_recorded_outcome_from_a_superseded_attempt_is_stale_accepted() -> None:
    """Attempt 1 (the zombie) finished, attempt 2 is still running: the backend recorded
    attempt 2 completed with what can only be attempt 1's result."""
    history, runs, records = _clean()
    runs.append(_started("op0", 2, "w2"))
    records[0] = Record("op0", "completed", 2, "w2")
    history = History(e for e in history.events if e["kind"] != "observe")
    report = reconcile(history, runs, records)
    assert report.stale_accepted == ["op0"] and set(report.violations) == {"stale_accepted"}


def test_an_outcome_recorded_before_its_attempt_ended_is_stale_accepted() -> None:
    """The superseded attempt's result taken for attempt 2, which then ends the same way:
    the logs hold attempt 2's end, but logged after the backend had recorded it (a worker
    logs its end before it reports it), so the recorded end came from elsewhere."""
    history, runs, records = _clean()
    runs += [_started("op0", 2, "w2"), _finished("op0", 2, "w2", ts=200.0)]
    history = History(e for e in history.events if e["kind"] != "observe")
    records[0] = Record("op0", "completed", 2, "w2", finished_at=199.0)
    report = reconcile(history, runs, records)
    assert report.stale_accepted == ["op0"] and set(report.violations) == {"stale_accepted"}
    records[0] = Record("op0", "completed", 2, "w2", finished_at=200.01)  # reported after
    assert reconcile(history, runs, records).valid


def test_an_outcome_other_than_the_one_the_worker_reported_is_stale_accepted() -> None:
    history, runs, records = _clean()
    runs[1] = _finished("op0", 1, "w1", "failed")
    history = History(e for e in history.events if e["kind"] != "observe")
    assert reconcile(history, runs, records).stale_accepted == ["op0"]


def test_failures_decided_by_the_backend_need_no_execution() -> None:
    history, runs, records = _clean()
    history.invoke("k5")
    history.ok("k5", "op5")
    history.invoke("k6")
    history.ok("k6", "op6")
    runs += [_started("op5", n, f"w{n}") for n in (1, 2, 3)]  # its workers died every time
    records += [
        Record("op5", "failed", 3, None, "worker_lost"),
        Record("op6", "cancelled", 0, None),
    ]
    report = reconcile(history, runs, records)
    assert report.valid, report.violations
    assert report.outcomes == {"completed": 3, "failed": 1, "cancelled": 1}
    assert report.duplicate_executions == 2


def test_counters_that_disagree_with_the_records_are_a_metrics_mismatch() -> None:
    history, runs, records = _clean()
    report = reconcile(history, runs, records, _metrics(completed=4))
    assert report.metrics_mismatch == ["completed_total{status=completed} 4 != 3 records"]
    assert set(report.violations) == {"metrics_mismatch"}
    assert reconcile(history, runs, records, _metrics(submitted=2)).metrics_mismatch


def test_without_metrics_they_are_not_checked() -> None:
    history, runs, records = _clean()
    report = reconcile(history, runs, records)
    assert not report.metrics_checked and report.stale_rejected is None


def test_backend_metrics_are_read_from_the_exposition_text() -> None:
    done = "workfleet_operations_completed_total"
    text = "\n".join(
        [
            "# TYPE workfleet_operations_submitted_total counter",
            'workfleet_operations_submitted_total{operation_type="diagnostic"} 5.0',
            'workfleet_operations_submitted_total{operation_type="training"} 2.0',
            "# TYPE workfleet_operations_completed_total counter",
            f'{done}{{operation_type="diagnostic",status="completed"}} 4.0',
            f'{done}{{operation_type="training",status="completed"}} 1.0',
            f'{done}{{operation_type="diagnostic",status="failed"}} 1.0',
            "# TYPE workfleet_stale_reports_total counter",
            'workfleet_stale_reports_total{kind="completion"} 2.0',
            'workfleet_stale_reports_total{kind="progress"} 7.0',
            "",
        ]
    )
    metrics = BackendMetrics.parse(text)
    assert metrics.submitted == 7
    assert metrics.completed == {"completed": 5, "failed": 1}
    assert metrics.stale == {"completion": 2, "progress": 7}


def test_the_history_round_trips_through_jsonl_and_observes_each_change_once() -> None:
    history, _, _ = _clean()
    history.observe("op0", "completed", 1)  # seen again: not recorded again
    history.observe("op0", "running", 1)  # not final: not recorded
    copy = History.from_jsonl(history.to_jsonl())
    assert copy.events == history.events
    assert sum(1 for e in copy.events if e["kind"] == "observe") == 3
    assert copy.acknowledged() == {"op0": "k0", "op1": "k1", "op2": "k2"}
