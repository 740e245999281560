"""Operations: the record, its leases and its one state machine.

Every status change goes through `transition()`, checked against `NEXT_STATUSES`. The event
functions below (assign, acknowledge, finish, lose_attempt, cancel...) are the only callers, and
each takes the time as an argument: nothing here reads a clock.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Literal

from workfleet.domain.errors import InvalidTransition, StaleLease
from workfleet.domain.labels import Labels, as_labels

OperationStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
Outcome = Literal["completed", "failed", "cancelled"]
GpuRequirement = Literal["required", "preferred", "none"]

TERMINAL: Final[frozenset[OperationStatus]] = frozenset({"completed", "failed", "cancelled"})

NEXT_STATUSES: Final[Mapping[OperationStatus, frozenset[OperationStatus]]] = {
    # pending -> failed: an unconfirmed dispatch used up the last attempt
    "pending": frozenset({"running", "cancelled", "failed"}),
    # running -> pending: the attempt was lost (worker lost) and attempts remain
    "running": frozenset({"completed", "failed", "cancelled", "pending"}),
    "completed": frozenset(),
    "failed": frozenset(),
    "cancelled": frozenset(),
}


@dataclass(frozen=True, slots=True)
class Lease:
    """One dispatch attempt: results must quote it, so a stale attempt cannot record anything."""

    attempt: int
    token: str


@dataclass(frozen=True, slots=True)
class Requirements:
    """What a worker needs to run the operation at all (see placement.can_ever_run)."""

    gpu: GpuRequirement = "none"
    min_memory_gb: float = 0.0
    worker_type: str | None = None
    min_cores: int = 0
    labels: Labels = ()  # a selector: the worker must carry every one of these labels

    def __post_init__(self) -> None:
        # given as a mapping (the wire, the store's JSON): kept as sorted pairs, hashable
        object.__setattr__(self, "labels", as_labels(self.labels))


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    type: str
    message: str
    traceback: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    operation_id: str
    operation_type: str
    params: Mapping[str, Any]
    owner: str
    created_at: datetime
    priority: int = 0
    requirements: Requirements = field(default_factory=Requirements)
    idempotency_key: str | None = None
    request_hash: str | None = None
    status: OperationStatus = "pending"
    worker_id: str | None = None
    lease: Lease | None = None
    attempt: int = 0
    losses: int = 0
    accepted_seq: int | None = None
    progress: Mapping[str, Any] | None = None
    result: Any = None
    error: ErrorInfo | None = None
    dispatched_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    cancel_requested_at: datetime | None = None
    trace_id: str | None = None
    # W3C trace context of the submit span: every attempt, report and restart joins that trace
    traceparent: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def dispatchable(self) -> bool:
        return self.status == "pending" and self.lease is None and self.cancel_requested_at is None


def transition(op: Operation, to: OperationStatus, *, at: datetime, **changes: Any) -> Operation:
    """The one place a status changes."""
    if to not in NEXT_STATUSES[op.status]:
        raise InvalidTransition(f"operation {op.operation_id}", op.status, to)
    if to in TERMINAL:
        changes.setdefault("finished_at", at)
    return replace(op, status=to, **changes)


def check_lease(op: Operation, lease: Lease) -> None:
    if op.is_terminal or op.lease != lease:
        raise StaleLease(op.operation_id)


def assign(op: Operation, *, worker_id: str, token: str) -> Operation:
    """Reserve a worker for the next attempt; the operation stays pending until acknowledged."""
    if not op.dispatchable:
        raise InvalidTransition(f"operation {op.operation_id}", _describe(op), "assigned")
    lease = Lease(attempt=op.attempt + 1, token=token)
    return replace(op, worker_id=worker_id, lease=lease, attempt=lease.attempt)


def acknowledge(
    op: Operation, lease: Lease, *, accepted_seq: int | None, at: datetime
) -> Operation:
    """The worker accepted the dispatch: the attempt is running."""
    check_lease(op, lease)
    if op.status == "running":
        return op
    return transition(op, "running", at=at, dispatched_at=at, accepted_seq=accepted_seq)


def unassign(op: Operation) -> Operation:
    """The worker refused the dispatch, so the attempt never ran: free it without a loss."""
    if op.status != "pending" or op.lease is None:
        raise InvalidTransition(f"operation {op.operation_id}", _describe(op), "unassigned")
    return replace(op, worker_id=None, lease=None, accepted_seq=None)


def record_progress(
    op: Operation,
    lease: Lease,
    progress: Mapping[str, Any] | None,
    *,
    started_at: datetime | None,
    at: datetime,
) -> Operation:
    check_lease(op, lease)
    if op.status == "pending":  # the report overtook the dispatch acknowledgement
        op = acknowledge(op, lease, accepted_seq=None, at=at)
    return replace(
        op,
        progress=progress if progress is not None else op.progress,
        started_at=op.started_at or started_at,
    )


def finish(
    op: Operation,
    lease: Lease,
    outcome: Outcome,
    *,
    at: datetime,
    result: Any = None,
    error: ErrorInfo | None = None,
    started_at: datetime | None = None,
    progress: Mapping[str, Any] | None = None,
) -> Operation:
    """Record the attempt's outcome: exactly once, and only for the current lease. `cancelled`
    only answers a cancel request: a worker stopping an attempt for any other reason has not
    decided the operation's fate (the attempt is then found lost and run again)."""
    check_lease(op, lease)
    if outcome == "cancelled" and op.cancel_requested_at is None:
        raise InvalidTransition(f"operation {op.operation_id}", "not cancel-requested", outcome)
    if op.status == "pending":
        op = acknowledge(op, lease, accepted_seq=None, at=at)
    return transition(
        op,
        outcome,
        at=at,
        result=result,
        error=error,
        started_at=op.started_at or started_at,
        progress=progress if progress is not None else op.progress,
    )


def lose_attempt(
    op: Operation, *, reason: str, max_losses: int, at: datetime, counted: bool = True
) -> Operation:
    """The attempt's worker is gone: retry elsewhere, unless cancelled or out of attempts.

    `counted=False` for a worker that left on purpose (deregistered): no loss is charged."""
    if op.lease is None or op.is_terminal:
        raise InvalidTransition(f"operation {op.operation_id}", _describe(op), "lost")
    losses = op.losses + 1 if counted else op.losses
    # dispatched_at and started_at describe the current attempt: the next one sets them anew
    cleared: dict[str, Any] = {
        "lease": None,
        "accepted_seq": None,
        "losses": losses,
        "dispatched_at": None,
        "started_at": None,
    }
    if op.cancel_requested_at is not None:
        return transition(op, "cancelled", at=at, **cleared)
    if losses >= max_losses:
        error = ErrorInfo("worker_lost", f"lost {losses} times, last: {reason}")
        return transition(op, "failed", at=at, error=error, **cleared)
    if op.status == "pending":  # an unconfirmed dispatch: it may or may not have started
        return replace(op, worker_id=None, **cleared)
    return transition(op, "pending", at=at, worker_id=None, **cleared)


def cancel(op: Operation, *, at: datetime) -> Operation:
    """Pending: cancelled at once. Out on a worker: marked, and final when the worker confirms."""
    if op.is_terminal:
        raise InvalidTransition(f"operation {op.operation_id}", op.status, "cancelled")
    if op.lease is None:
        return transition(op, "cancelled", at=at)
    return replace(op, cancel_requested_at=op.cancel_requested_at or at)


def _describe(op: Operation) -> str:
    if op.status == "pending" and op.lease is not None:
        return "pending (dispatch in flight)"
    return op.status
