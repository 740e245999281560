"""Reconcile what was submitted, what workers executed and what the backend recorded.

Execution is at-least-once; the recorded outcome must be exactly once. So: every acknowledged
submit must end in a terminal record (else `lost`), and each recorded outcome must come from
an attempt that really ran and ended that way (else `stale_accepted`). Extra executions of
the same operation are allowed and counted (`duplicate_executions`)."""

import json
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from workfleet.protocol import AuditRecordView, OperationView

TERMINAL = ("completed", "failed", "cancelled")


def executions(logs: Iterable[Path]) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for path in logs:
        if path.exists():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


# ---- client history x execution logs x backend records ------------------------------------

INVARIANTS = ("lost", "stuck", "double_terminal", "unexpected", "stale_accepted")
CLOCK_ROUNDING_S = 0.001  # the backend stores times to the microsecond, the logs as floats
SAMPLE = 10  # ids shown per anomaly in a report


class History:
    """The client's side, append-only, as Jepsen records it: `invoke` before a submit (with
    its idempotency key), then `ok` (acknowledged, with the operation id), `fail` (refused:
    the operation does not exist) or `info` (no answer: it may or may not exist); `observe`
    each time the client saw an operation final (to catch a state that leaves terminal)."""

    def __init__(self, events: Iterable[dict[str, Any]] = ()) -> None:
        self.events: list[dict[str, Any]] = list(events)
        self._seen: dict[str, tuple[str, int]] = {}

    def _add(self, kind: str, **fields: Any) -> None:
        self.events.append({"kind": kind, "t": time.monotonic(), **fields})

    def invoke(self, key: str) -> None:
        self._add("invoke", key=key)

    def ok(self, key: str, operation_id: str) -> None:
        self._add("ok", key=key, operation_id=operation_id)

    def fail(self, key: str, reason: str) -> None:
        self._add("fail", key=key, reason=reason)

    def info(self, key: str, reason: str) -> None:
        self._add("info", key=key, reason=reason)

    def observe(self, operation_id: str, status: str, attempt: int) -> None:
        """Recorded once per distinct final (status, attempt) seen for an operation."""
        if status in TERMINAL and self._seen.get(operation_id) != (status, attempt):
            self._seen[operation_id] = (status, attempt)
            self._add("observe", operation_id=operation_id, status=status, attempt=attempt)

    def acknowledged(self) -> dict[str, str]:
        """operation id -> idempotency key, for every submit answered with an id."""
        return {e["operation_id"]: e["key"] for e in self.events if e["kind"] == "ok"}

    def to_jsonl(self) -> str:
        return "".join(json.dumps(e) + "\n" for e in self.events)

    @classmethod
    def from_jsonl(cls, text: str) -> "History":
        return cls(json.loads(line) for line in text.splitlines() if line.strip())


@dataclass(frozen=True, slots=True)
class Record:
    """What the backend says about one operation (the fields the checker needs)."""

    operation_id: str
    status: str
    attempt: int = 0
    worker_id: str | None = None
    error_type: str | None = None
    finished_at: float | None = None  # epoch seconds, as the backend recorded the end

    @classmethod
    def of(cls, op: OperationView) -> "Record":
        error = op.error.type if op.error is not None else None
        finished = op.finished_at.timestamp() if op.finished_at is not None else None
        return cls(op.operation_id, op.status, op.attempt, op.worker_id, error, finished)


@dataclass(frozen=True, slots=True)
class BackendMetrics:
    """The backend's own counters, read once at the end of a run (they restart with the
    process, so compare them only for runs in which the backend never restarted)."""

    submitted: float = 0.0
    completed: dict[str, float] = field(default_factory=dict)  # by final status
    stale: dict[str, float] = field(default_factory=dict)  # stale reports refused, by kind

    @classmethod
    def parse(cls, text: str) -> "BackendMetrics":
        submitted = 0.0
        completed: dict[str, float] = {}
        stale: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "workfleet_operations_submitted_total":
                    submitted += sample.value
                elif sample.name == "workfleet_operations_completed_total":
                    completed[sample.labels["status"]] = (
                        completed.get(sample.labels["status"], 0.0) + sample.value
                    )
                elif sample.name == "workfleet_stale_reports_total":
                    stale[sample.labels["kind"]] = (
                        stale.get(sample.labels["kind"], 0.0) + sample.value
                    )
        return cls(submitted, completed, stale)


@dataclass
class Reconciliation:
    attempted: int = 0  # submits invoked
    acknowledged: int = 0
    refused: int = 0  # `fail`: known not to exist
    indeterminate: int = 0  # `info` never followed by an `ok` for the same key
    recovered: int = 0  # backend records explained by indeterminate submits
    terminal: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    executions: int = 0  # attempts started, across every worker log
    duplicate_executions: int = 0  # starts beyond the first per operation: allowed, counted
    zombie_finishes: int = 0  # attempts that ended on a worker but are not the recorded one
    stale_rejected: float | None = None  # the backend's refused completions (None: unknown)
    lost: list[str] = field(default_factory=list)
    stuck: list[str] = field(default_factory=list)
    double_terminal: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    stale_accepted: list[str] = field(default_factory=list)
    metrics_mismatch: list[str] = field(default_factory=list)
    metrics_checked: bool = False

    @property
    def violations(self) -> dict[str, int]:
        found = {name: len(getattr(self, name)) for name in (*INVARIANTS, "metrics_mismatch")}
        return {name: count for name, count in found.items() if count}

    @property
    def valid(self) -> bool:
        return not self.violations

    def to_dict(self) -> dict[str, Any]:
        lists = (*INVARIANTS, "metrics_mismatch")
        return {
            "valid": self.valid,
            "attempted": self.attempted,
            "acknowledged": self.acknowledged,
            "refused": self.refused,
            "indeterminate": self.indeterminate,
            "recovered": self.recovered,
            "terminal": self.terminal,
            "outcomes": dict(sorted(self.outcomes.items())),
            "executions": self.executions,
            "duplicate_executions": self.duplicate_executions,
            "zombie_finishes": self.zombie_finishes,
            "stale_rejected": self.stale_rejected,
            **{name: len(getattr(self, name)) for name in lists},
            "metrics_checked": self.metrics_checked,
            "samples": {
                name: getattr(self, name)[:SAMPLE] for name in lists if getattr(self, name)
            },
        }


def reconcile(
    history: History,
    runs: Iterable[dict[str, Any]],
    records: Iterable[Record],
    metrics: BackendMetrics | None = None,
    transitions: Mapping[str, int] | None = None,
) -> Reconciliation:
    """`history`: the client's; `runs`: every worker's execution-log lines; `records`: every
    operation the backend lists at the end (all pages); `metrics`: its counters, or None when
    they do not cover the whole run (the backend restarted); `transitions`: terminal
    transitions per operation in the backend's audit trail (`terminal_transitions`), or None.

    lost: acknowledged, and the backend has no record of it. stuck: recorded, not final.
    double_terminal: listed twice, or final in one state (or attempt) when the client saw it
    and in another at the end, or an attempt started after the recorded final one, or made
    final more than once by the audit trail (even if nobody saw the first end).
    unexpected: a record or an execution of an operation nobody was told exists (up to the
    number of indeterminate submits, records are `recovered` instead). stale_accepted: a
    recorded outcome no worker produced for that attempt (a result from a superseded lease,
    or one made up). metrics_mismatch: counters that disagree with the records."""
    report = Reconciliation()
    acknowledged = _read_history(report, history)
    by_id: dict[str, Record] = {}
    for record in records:
        if record.operation_id in by_id:
            report.double_terminal.append(record.operation_id)
        by_id[record.operation_id] = record
    for op_id, count in sorted((transitions or {}).items()):
        if count > 1 and op_id not in report.double_terminal:
            report.double_terminal.append(op_id)
    index = _Runs(runs)
    report.executions = sum(index.started.values())
    report.duplicate_executions = sum(max(0, n - 1) for n in index.started.values())

    for op_id in acknowledged:
        found = by_id.get(op_id)
        if found is None:
            report.lost.append(op_id)
        elif found.status not in TERMINAL:
            report.stuck.append(op_id)
    unknown = sorted(set(by_id) - acknowledged)
    report.recovered = min(len(unknown), report.indeterminate)
    report.unexpected += unknown[report.recovered :]
    report.unexpected += sorted(set(index.started) - set(by_id) - acknowledged)

    for record in by_id.values():
        if record.status in TERMINAL:
            _check_final(report, record, index)
    _check_observations(report, history, by_id)
    if metrics is not None:
        report.stale_rejected = metrics.stale.get("completion", 0.0)
        report.metrics_checked = True
        report.metrics_mismatch = _compare_metrics(metrics, by_id.values())
    return report


def terminal_transitions(audit: Iterable[AuditRecordView]) -> Counter[str]:
    """Per operation, how often the backend's audit trail says it became final (the
    orchestrator notes `operation.complete` once per terminal transition, with the attempt);
    more than once breaks C2 even where no client looked in between. The same attempt and
    outcome noted twice is one transition: the note can be durable before the operation's
    row, and a backend killed in between accepts the worker's resent result once more."""
    distinct = {
        (r.target.removeprefix("operation:"), r.detail.get("attempt"), r.outcome)
        for r in audit
        if r.action == "operation.complete"
    }
    return Counter(op_id for op_id, _, _ in distinct)


def _read_history(report: Reconciliation, history: History) -> set[str]:
    acknowledged = history.acknowledged()
    info_keys: set[str] = set()
    for event in history.events:
        if event["kind"] == "invoke":
            report.attempted += 1
        elif event["kind"] == "fail":
            report.refused += 1
        elif event["kind"] == "info":
            info_keys.add(event["key"])
    report.indeterminate = len(info_keys - set(acknowledged.values()))
    report.acknowledged = len(acknowledged)
    return set(acknowledged)


class _Runs:
    """The execution logs, indexed: starts per operation, its latest attempt started, and
    every (operation, attempt, outcome, worker) that ended."""

    def __init__(self, runs: Iterable[dict[str, Any]]) -> None:
        self.started: Counter[str] = Counter()
        self.last_attempt: dict[str, int] = {}
        # (operation, attempt, outcome, worker) -> when the worker logged that end
        self.finished: dict[tuple[str, int, str, str | None], float] = {}
        for run in runs:
            op_id = str(run["operation_id"])
            attempt = int(run["attempt"])
            if run["event"] == "started":
                self.started[op_id] += 1
                self.last_attempt[op_id] = max(self.last_attempt.get(op_id, 0), attempt)
            elif run["event"] == "finished":
                key = (op_id, attempt, str(run["outcome"]), run.get("worker_id"))
                self.finished[key] = min(float(run["ts"]), self.finished.get(key, float("inf")))

    def ended(self, record: Record) -> bool:
        """Some worker ended this very attempt this way, and before the backend recorded the
        end (the worker logs its end before it reports it; one host, one clock): an outcome
        recorded earlier came from somewhere else, such as a superseded attempt's result
        taken for this one."""
        key = (record.operation_id, record.attempt, record.status, record.worker_id)
        logged = self.finished.get(key)
        if logged is None:
            return False
        return record.finished_at is None or logged <= record.finished_at + CLOCK_ROUNDING_S

    def other_attempts_ended(self, record: Record) -> int:
        return sum(
            1
            for op_id, attempt, _, _ in self.finished
            if op_id == record.operation_id and attempt != record.attempt
        )


def _check_final(report: Reconciliation, record: Record, runs: _Runs) -> None:
    report.terminal += 1
    report.outcomes[record.status] += 1
    op_id = record.operation_id
    if runs.last_attempt.get(op_id, 0) > record.attempt and op_id not in report.double_terminal:
        report.double_terminal.append(op_id)  # dispatched again after its final attempt
    if _needs_execution(record) and not runs.ended(record):
        report.stale_accepted.append(op_id)
    report.zombie_finishes += runs.other_attempts_ended(record)


def _check_observations(report: Reconciliation, history: History, by_id: dict[str, Record]) -> None:
    """A final state the client saw must be the one recorded at the end."""
    for event in history.events:
        if event["kind"] != "observe":
            continue
        record = by_id.get(event["operation_id"])
        if (
            record is not None
            and (record.status, record.attempt) != (event["status"], event["attempt"])
            and record.operation_id not in report.double_terminal
        ):
            report.double_terminal.append(record.operation_id)


def _needs_execution(record: Record) -> bool:
    """Completed, or failed by the operation itself: some worker must have ended that very
    attempt that way. (A cancel of a queued operation, or a failure for running out of
    workers, is the backend's own decision.)"""
    if record.status == "completed":
        return True
    return record.status == "failed" and record.attempt > 0 and record.error_type != "worker_lost"


def _compare_metrics(metrics: BackendMetrics, records: Iterable[Record]) -> list[str]:
    records = list(records)
    problems = []
    if metrics.submitted != len(records):
        problems.append(f"submitted_total {metrics.submitted:g} != {len(records)} records")
    by_status = Counter(r.status for r in records if r.status in TERMINAL)
    for status in TERMINAL:
        counted = metrics.completed.get(status, 0.0)
        if counted != by_status[status]:
            problems.append(
                f"completed_total{{status={status}}} {counted:g} != {by_status[status]} records"
            )
    return problems


def check(recorded: Iterable[OperationView], logs: Iterable[Path]) -> Reconciliation:
    """For a test that submitted `recorded` itself and holds no client history: each of them
    (the backend's final view) against the workers' executions of them."""
    ops = list(recorded)
    history = History()
    for op in ops:
        history.invoke(op.operation_id)
        history.ok(op.operation_id, op.operation_id)
    ids = {op.operation_id for op in ops}
    runs = [run for run in executions(logs) if run["operation_id"] in ids]
    return reconcile(history, runs, [Record.of(op) for op in ops])
