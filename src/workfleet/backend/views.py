"""Domain records <-> wire models (protocol.py)."""

from dataclasses import asdict

from workfleet.domain.operations import Lease, Operation
from workfleet.domain.reconcile import Reported
from workfleet.domain.workers import Worker
from workfleet.protocol import (
    CapabilitiesModel,
    ErrorView,
    LoadView,
    OperationView,
    Progress,
    RequirementsModel,
    RunningOperation,
    WorkerView,
)


def operation_view(op: Operation) -> OperationView:
    return OperationView(
        operation_id=op.operation_id,
        operation_type=op.operation_type,
        status=op.status,
        params=dict(op.params),
        priority=op.priority,
        requirements=RequirementsModel(
            **{**asdict(op.requirements), "labels": dict(op.requirements.labels)}
        ),
        owner=op.owner,
        worker_id=op.worker_id,
        attempt=op.attempt,
        progress=Progress.model_validate(op.progress) if op.progress is not None else None,
        result=op.result,
        error=ErrorView(**asdict(op.error)) if op.error else None,
        created_at=op.created_at,
        dispatched_at=op.dispatched_at,
        started_at=op.started_at,
        finished_at=op.finished_at,
        cancel_requested_at=op.cancel_requested_at,
        trace_id=op.trace_id,
    )


def worker_view(worker: Worker) -> WorkerView:
    return WorkerView(
        worker_id=worker.worker_id,
        worker_type=worker.worker_type,
        endpoint_url=worker.endpoint_url,
        status=worker.status,
        capabilities=CapabilitiesModel(
            **{**asdict(worker.capabilities), "labels": dict(worker.capabilities.labels)}
        ),
        operation_types=sorted(worker.operation_types),
        load=LoadView(**asdict(worker.load)),
        running_operations=sorted(worker.reserved),
        registered_at=worker.registered_at,
        last_healthy_at=worker.last_healthy_at,
        unavailable_since=worker.unavailable_since,
        consecutive_failures=worker.consecutive_failures,
    )


def reported(items: list[RunningOperation]) -> tuple[Reported, ...]:
    """What a worker says it runs (registration, /health), as the domain reads it."""
    return tuple(
        Reported(
            item.operation_id,
            Lease(item.lease.attempt, item.lease.token),
            item.progress.model_dump(mode="json", exclude_none=True) if item.progress else None,
        )
        for item in items
    )
