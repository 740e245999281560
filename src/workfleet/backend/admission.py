"""What a submit must pass before it is accepted: a known type with valid params, requirements
some registered worker can meet, the same body when an Idempotency-Key is reused, and room in
the bounded queue."""

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workfleet.domain.errors import Conflict, InvalidRequest
from workfleet.domain.labels import format_labels
from workfleet.domain.operations import Operation, Requirements
from workfleet.domain.placement import unmet_requirements
from workfleet.domain.workers import Worker
from workfleet.operations.registry import OperationType, validate_params


@dataclass(frozen=True, slots=True)
class Submission:
    operation_type: str
    params: Mapping[str, Any]
    priority: int = 0
    requirements: Requirements = field(default_factory=Requirements)


def validated_params(
    submission: Submission, types: Mapping[str, OperationType], workers: Iterable[Worker]
) -> dict[str, Any]:
    """Normalised params of a known type; a plug-in type only its workers know is taken as is."""
    if submission.operation_type in types:
        return validate_params(types, submission.operation_type, submission.params)
    offered = set(types)
    for worker in workers:
        if submission.operation_type in worker.operation_types:
            return dict(submission.params)
        offered |= worker.operation_types
    raise InvalidRequest(
        f"unknown operation type {submission.operation_type!r}; known: {', '.join(sorted(offered))}"
    )


MAX_WORKERS_NAMED = 5


def check_satisfiable(submission: Submission, workers: Iterable[Worker]) -> None:
    """Refuse an operation no registered worker could ever run (InvalidRequest naming the
    requirements nobody meets). One that only busy, draining or unreachable workers can run is
    accepted and waits; so is one whose type no registered worker runs yet (a fleet starting)."""
    candidates = [w for w in workers if submission.operation_type in w.operation_types]
    if not candidates:
        return
    unmet = {w.worker_id: unmet_requirements(submission.requirements, w) for w in candidates}
    if not all(unmet.values()):
        return
    kind = submission.operation_type
    first, *others = unmet.values()
    nobody = [need for need in first if all(need in lacks for lacks in others)]
    if nobody:
        why = f"none meets {', '.join(nobody)}"
    else:
        each = list(unmet.items())[:MAX_WORKERS_NAMED]
        lacking = "; ".join(f"{worker_id} lacks {', '.join(lacks)}" for worker_id, lacks in each)
        why = f"none meets all of them at once ({lacking})"
    named = ", ".join(_describe(w) for w in candidates[:MAX_WORKERS_NAMED])
    extra = len(candidates) - MAX_WORKERS_NAMED
    more = f" and {extra} more" if extra > 0 else ""
    raise InvalidRequest(
        f"no registered worker can ever run this {kind} operation: of the {len(candidates)} "
        f"that run {kind} ({named}{more}), {why}"
    )


def _describe(worker: Worker) -> str:
    caps = worker.capabilities
    parts = [
        worker.worker_type,
        f"{caps.cores} core{'s' if caps.cores != 1 else ''}",
        f"{caps.memory_gb:g} GB",
        "GPU" if caps.gpu else "no GPU",
    ]
    if caps.labels:
        parts.append(format_labels(caps.labels))
    return f"{worker.worker_id} [{', '.join(parts)}]"


def request_hash(submission: Submission, params: Mapping[str, Any]) -> str:
    req = submission.requirements
    requirements: list[Any] = [req.gpu, req.min_memory_gb, req.worker_type]
    if req.min_cores or req.labels:  # only then: the hashes of earlier requests stay as they were
        requirements += [req.min_cores, dict(req.labels)]
    body = {
        "operation_type": submission.operation_type,
        "params": params,
        "priority": submission.priority,
        "requirements": requirements,
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def replayed(existing: Operation, hashed: str) -> Operation:
    """The answer to a submit repeated with its Idempotency-Key."""
    if existing.request_hash != hashed:
        raise Conflict("Idempotency-Key already used for a different request")
    return existing


def retry_after_s(finished_last_minute: int) -> int:
    """When a full queue is likely to have room: about one completion's time, 1 to 60 s."""
    if finished_last_minute == 0:
        return 5
    return max(1, min(60, math.ceil(60.0 / finished_last_minute)))
