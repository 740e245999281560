"""The Store contract: durable records of operations, workers, API keys and the audit log.

Two implementations keep it: MemoryStore (tests, throwaway runs) and SqlStore (SQLite, and any
SQLAlchemy database). tests/unit/test_store_contract.py runs the same suite against both.
A write returns only once it is durable.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from workfleet.domain.artifacts import Artifact
from workfleet.domain.audit import AuditCheckpoint, AuditRecord
from workfleet.domain.datasets import Dataset
from workfleet.domain.operations import Operation, OperationStatus
from workfleet.domain.workers import Worker
from workfleet.security.api_keys import ApiKey

MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class OperationQuery:
    statuses: frozenset[OperationStatus] = frozenset()
    operation_type: str | None = None
    worker_id: str | None = None
    owner: str | None = None
    limit: int = 50
    cursor: str | None = None


class Store(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def add_operation(self, op: Operation) -> None:
        """Insert; Conflict if the id or the (owner, idempotency key) pair exists."""

    async def save_operation(self, op: Operation) -> None:
        """Replace the stored record of an existing operation."""

    async def get_operation(self, operation_id: str) -> Operation | None: ...

    async def find_operation_by_key(self, owner: str, idempotency_key: str) -> Operation | None: ...

    async def list_operations(self, query: OperationQuery) -> tuple[list[Operation], str | None]:
        """Newest first; the cursor continues after the last item returned."""

    async def unfinished_operations(self) -> list[Operation]: ...

    async def save_worker(self, worker: Worker) -> None: ...

    async def delete_worker(self, worker_id: str) -> None: ...

    async def load_workers(self) -> list[Worker]: ...

    async def add_api_key(self, key: ApiKey) -> None: ...

    async def get_api_key(self, key_id: str) -> ApiKey | None: ...

    async def list_api_keys(self) -> list[ApiKey]: ...

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        """Mark revoked; False if no such key."""

    async def save_dataset(self, dataset: Dataset) -> None:
        """Make `dataset` the current version of its (symbol, timeframe)."""

    async def get_dataset(self, symbol: str, timeframe: str) -> Dataset | None: ...

    async def list_datasets(self) -> list[Dataset]: ...

    async def save_artifact(self, artifact: Artifact) -> None:
        """Record (or replace) the artifact of that name for its operation."""

    async def list_artifacts(self, operation_id: str) -> list[Artifact]:
        """By name."""

    async def append_audit(self, records: list[AuditRecord]) -> None:
        """Append all or none; Conflict if a seq is already stored. Stored records are never
        changed or removed."""

    async def audit_records(self, after_seq: int = 0, limit: int = MAX_PAGE) -> list[AuditRecord]:
        """Those with seq > after_seq, by seq, at most `limit` (capped at MAX_PAGE)."""

    async def last_audit_record(self) -> AuditRecord | None: ...

    async def save_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None: ...

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        """By seq, then in the order saved."""
