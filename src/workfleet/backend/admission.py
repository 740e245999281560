"""What a submit must pass before it is accepted: a known type with valid params, the same
body when an Idempotency-Key is reused, and room in the bounded queue."""

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from workfleet.domain.errors import Conflict, InvalidRequest
from workfleet.domain.operations import Operation, Requirements
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


def request_hash(submission: Submission, params: Mapping[str, Any]) -> str:
    req = submission.requirements
    body = {
        "operation_type": submission.operation_type,
        "params": params,
        "priority": submission.priority,
        "requirements": [req.gpu, req.min_memory_gb, req.worker_type],
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
