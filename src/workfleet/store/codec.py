"""Rows <-> domain records. The store hands out domain dataclasses, never rows."""

from dataclasses import asdict
from typing import Any

from workfleet.domain.artifacts import Artifact
from workfleet.domain.datasets import Dataset
from workfleet.domain.operations import ErrorInfo, Lease, Operation, Requirements
from workfleet.domain.workers import Capabilities, Worker
from workfleet.security.api_keys import ApiKey


def operation_row(op: Operation) -> dict[str, Any]:
    return {
        "operation_id": op.operation_id,
        "operation_type": op.operation_type,
        "status": op.status,
        "owner": op.owner,
        "idempotency_key": op.idempotency_key,
        "request_hash": op.request_hash,
        "params": dict(op.params),
        "priority": op.priority,
        "requirements": {**asdict(op.requirements), "labels": dict(op.requirements.labels)},
        "worker_id": op.worker_id,
        "lease_attempt": op.lease.attempt if op.lease else None,
        "lease_token": op.lease.token if op.lease else None,
        "attempt": op.attempt,
        "losses": op.losses,
        "accepted_seq": op.accepted_seq,
        "progress": dict(op.progress) if op.progress is not None else None,
        "result": op.result,
        "error": asdict(op.error) if op.error else None,
        "created_at": op.created_at,
        "dispatched_at": op.dispatched_at,
        "started_at": op.started_at,
        "finished_at": op.finished_at,
        "cancel_requested_at": op.cancel_requested_at,
        "trace_id": op.trace_id,
        "traceparent": op.traceparent,
    }


def operation_from_row(row: Any) -> Operation:
    lease = Lease(row.lease_attempt, row.lease_token) if row.lease_token else None
    return Operation(
        operation_id=row.operation_id,
        operation_type=row.operation_type,
        status=row.status,
        owner=row.owner,
        idempotency_key=row.idempotency_key,
        request_hash=row.request_hash,
        params=row.params,
        priority=row.priority,
        requirements=Requirements(**row.requirements),  # labels: a JSON object, made pairs
        worker_id=row.worker_id,
        lease=lease,
        attempt=row.attempt,
        losses=row.losses,
        accepted_seq=row.accepted_seq,
        progress=row.progress,
        result=row.result,
        error=ErrorInfo(**row.error) if row.error else None,
        created_at=row.created_at,
        dispatched_at=row.dispatched_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        cancel_requested_at=row.cancel_requested_at,
        trace_id=row.trace_id,
        traceparent=row.traceparent,
    )


def worker_row(worker: Worker) -> dict[str, Any]:
    return {
        "worker_id": worker.worker_id,
        "worker_type": worker.worker_type,
        "endpoint_url": worker.endpoint_url,
        "capabilities": {
            **asdict(worker.capabilities),
            "labels": dict(worker.capabilities.labels),
        },
        "operation_types": sorted(worker.operation_types),
        "instance_id": worker.instance_id,
        "draining": worker.draining,
        "registered_at": worker.registered_at,
        "last_healthy_at": worker.last_healthy_at,
        "unavailable_since": worker.unavailable_since,
    }


def worker_from_row(row: Any) -> Worker:
    return Worker(
        worker_id=row.worker_id,
        worker_type=row.worker_type,
        endpoint_url=row.endpoint_url,
        capabilities=Capabilities(**row.capabilities),
        operation_types=frozenset(row.operation_types),
        instance_id=row.instance_id,
        draining=row.draining,
        registered_at=row.registered_at,
        last_healthy_at=row.last_healthy_at,
        unavailable_since=row.unavailable_since,
    )


def api_key_row(key: ApiKey) -> dict[str, Any]:
    return asdict(key)


def api_key_from_row(row: Any) -> ApiKey:
    return ApiKey(**row._mapping)  # columns are named as the record's fields


def dataset_row(dataset: Dataset) -> dict[str, Any]:
    return asdict(dataset)


def dataset_from_row(row: Any) -> Dataset:
    return Dataset(**row._mapping)  # columns are named as the record's fields


def artifact_from_row(row: Any) -> Artifact:
    return Artifact(**row._mapping)  # columns are named as the record's fields
