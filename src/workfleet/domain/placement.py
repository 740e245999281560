"""Placement: pure functions `(operation, workers, now) -> worker | None` behind a policy name."""

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Final

from workfleet.domain.operations import Operation
from workfleet.domain.workers import Worker

PlacementPolicy = Callable[[Operation, Iterable[Worker], datetime], Worker | None]


def can_ever_run(op: Operation, worker: Worker) -> bool:
    """The worker could run `op` if it were idle: type and hard requirements match."""
    req = op.requirements
    caps = worker.capabilities
    return (
        op.operation_type in worker.operation_types
        and (req.worker_type is None or req.worker_type == worker.worker_type)
        and (req.gpu != "required" or caps.gpu)
        and caps.memory_gb >= req.min_memory_gb
    )


def can_run_now(op: Operation, worker: Worker) -> bool:
    return worker.status == "available" and worker.free_slots > 0 and can_ever_run(op, worker)


def round_robin(op: Operation, workers: Iterable[Worker], now: datetime) -> Worker | None:
    """Least recently dispatched capable worker with a free slot; GPU first when preferred."""
    candidates = [w for w in workers if can_run_now(op, w)]
    if op.requirements.gpu == "preferred" and any(w.capabilities.gpu for w in candidates):
        candidates = [w for w in candidates if w.capabilities.gpu]
    return min(candidates, key=_least_recently_used, default=None)


def _least_recently_used(worker: Worker) -> tuple[int, str]:
    # A dispatch sequence, not a clock: two placements in the same clock tick still rotate.
    return (worker.last_dispatch_seq, worker.worker_id)


POLICIES: Final[dict[str, PlacementPolicy]] = {"round_robin": round_robin}
