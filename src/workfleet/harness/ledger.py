"""Reconcile what was submitted, what workers executed and what the backend recorded.

Execution is at-least-once; the recorded outcome must be exactly once. So: every acknowledged
submit must end in a terminal record (else `lost`), and each recorded outcome must come from
an attempt that really ran and ended that way (else `stale_accepted`). Extra executions of
the same operation are allowed and counted (`duplicate_executions`)."""

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from workfleet.protocol import OperationView

TERMINAL = ("completed", "failed", "cancelled")


@dataclass
class Ledger:
    acknowledged: int = 0
    terminal: int = 0
    lost: list[str] = field(default_factory=list)
    stale_accepted: list[str] = field(default_factory=list)
    duplicate_executions: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)

    @property
    def valid(self) -> bool:
        return not self.lost and not self.stale_accepted


def executions(logs: Iterable[Path]) -> list[dict[str, object]]:
    records: list[dict[str, object]] = []
    for path in logs:
        if path.exists():
            records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def check(recorded: Iterable[OperationView], logs: Iterable[Path]) -> Ledger:
    """`recorded`: the backend's view of every acknowledged operation."""
    runs = executions(logs)
    finished = {
        (r["operation_id"], r["attempt"], r["outcome"]) for r in runs if r["event"] == "finished"
    }
    started = Counter(r["operation_id"] for r in runs if r["event"] == "started")
    ledger = Ledger()
    for op in recorded:
        ledger.acknowledged += 1
        if op.status not in TERMINAL:
            ledger.lost.append(op.operation_id)
            continue
        ledger.terminal += 1
        ledger.outcomes[op.status] += 1
        ledger.duplicate_executions += max(0, started[op.operation_id] - 1)
        ran_elsewhere = op.error is not None and op.error.type == "worker_lost"
        if (
            op.worker_id is not None
            and not ran_elsewhere
            and op.attempt > 0
            and started[op.operation_id]
            and (op.operation_id, op.attempt, op.status) not in finished
        ):
            ledger.stale_accepted.append(op.operation_id)
    return ledger
