"""Reconciliation: what a worker says it holds (at registration or in /health) against what
the backend thinks it holds. Pure: the caller applies the answer.

A reported attempt is *confirmed* when its lease is the current one here; anything else the
worker must *stop* (its lease is stale, or a cancel was requested). An attempt the backend
counts on this worker but the worker does not report is *lost* only when the report is
certainly newer than the dispatch: another instance of the worker (it restarted), a report
that counts the dispatch's sequence number, or a dispatch older than its timeout.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from workfleet.domain.operations import Lease, Operation


@dataclass(frozen=True, slots=True)
class Reported:
    operation_id: str
    lease: Lease
    progress: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    confirmed: tuple[Reported, ...]
    stop: tuple[str, ...]
    lost: tuple[str, ...]
    lost_reason: str


def reconcile(
    worker_id: str,
    *,
    reserved: frozenset[str],
    active: Mapping[str, Operation],
    running: tuple[Reported, ...],
    accepted_seq: int,
    same_instance: bool,
    overdue: frozenset[str],
) -> Reconciliation:
    confirmed: list[Reported] = []
    stop: list[str] = []
    for item in running:
        op = active.get(item.operation_id)
        if op is None or op.worker_id != worker_id or op.lease != item.lease:
            stop.append(item.operation_id)
            continue
        confirmed.append(item)
        if op.cancel_requested_at is not None:
            stop.append(item.operation_id)
    seen = {item.operation_id for item in confirmed}
    lost = [
        operation_id
        for operation_id in sorted(reserved - seen)
        if operation_id in active
        and _certainly_gone(active[operation_id], accepted_seq, same_instance, overdue)
    ]
    reason = "worker_lost_operation" if same_instance else "worker_restarted"
    return Reconciliation(tuple(confirmed), tuple(stop), tuple(lost), reason)


def _certainly_gone(
    op: Operation, accepted_seq: int, same_instance: bool, overdue: frozenset[str]
) -> bool:
    if not same_instance:
        return True
    counted = op.accepted_seq is not None and accepted_seq >= op.accepted_seq
    return counted or op.operation_id in overdue
