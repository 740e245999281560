"""An in-memory Store: a real implementation of the contract, for tests and throwaway runs."""

from dataclasses import replace
from datetime import datetime
from types import SimpleNamespace

from workfleet.domain.artifacts import Artifact
from workfleet.domain.audit import AuditCheckpoint, AuditRecord
from workfleet.domain.datasets import Dataset
from workfleet.domain.errors import Conflict, NotFound
from workfleet.domain.operations import Operation
from workfleet.domain.workers import Worker
from workfleet.security.api_keys import ApiKey
from workfleet.store import codec
from workfleet.store.base import MAX_PAGE, OperationQuery


class MemoryStore:
    def __init__(self) -> None:
        self._ops: dict[str, tuple[int, Operation]] = {}
        self._keys_index: dict[tuple[str, str], str] = {}
        self._workers: dict[str, Worker] = {}
        self._api_keys: dict[str, ApiKey] = {}
        self._datasets: dict[tuple[str, str], Dataset] = {}
        self._artifacts: dict[tuple[str, str], Artifact] = {}
        self._seq = 0
        self._audit: dict[int, AuditRecord] = {}
        self._checkpoints: list[AuditCheckpoint] = []

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def add_operation(self, op: Operation) -> None:
        if op.operation_id in self._ops:
            raise Conflict(f"operation {op.operation_id} exists")
        if op.idempotency_key is not None:
            index = (op.owner, op.idempotency_key)
            if index in self._keys_index:
                raise Conflict("idempotency key already used")
            self._keys_index[index] = op.operation_id
        self._seq += 1
        self._ops[op.operation_id] = (self._seq, op)

    async def save_operation(self, op: Operation) -> None:
        if op.operation_id not in self._ops:
            raise NotFound(f"no operation {op.operation_id}")
        seq, _ = self._ops[op.operation_id]
        self._ops[op.operation_id] = (seq, op)

    async def get_operation(self, operation_id: str) -> Operation | None:
        found = self._ops.get(operation_id)
        return found[1] if found else None

    async def find_operation_by_key(self, owner: str, idempotency_key: str) -> Operation | None:
        operation_id = self._keys_index.get((owner, idempotency_key))
        return await self.get_operation(operation_id) if operation_id else None

    async def list_operations(self, query: OperationQuery) -> tuple[list[Operation], str | None]:
        before = int(query.cursor) if query.cursor else None
        limit = min(query.limit, MAX_PAGE)
        rows = sorted(self._ops.values(), key=lambda row: row[0], reverse=True)
        page: list[tuple[int, Operation]] = []
        for seq, op in rows:
            if before is not None and seq >= before:
                continue
            if _matches(op, query):
                page.append((seq, op))
                if len(page) > limit:
                    break
        more = len(page) > limit
        page = page[:limit]
        return [op for _, op in page], (str(page[-1][0]) if more else None)

    async def unfinished_operations(self) -> list[Operation]:
        return [
            op for _, op in sorted(self._ops.values(), key=lambda r: r[0]) if not op.is_terminal
        ]

    async def save_worker(self, worker: Worker) -> None:
        # keep exactly what SqlStore keeps (a worker's live counters are not stored)
        row = SimpleNamespace(**codec.worker_row(worker))
        self._workers[worker.worker_id] = codec.worker_from_row(row)

    async def delete_worker(self, worker_id: str) -> None:
        self._workers.pop(worker_id, None)

    async def load_workers(self) -> list[Worker]:
        return list(self._workers.values())

    async def add_api_key(self, key: ApiKey) -> None:
        if key.key_id in self._api_keys:
            raise Conflict(f"key {key.key_id} exists")
        self._api_keys[key.key_id] = key

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        return self._api_keys.get(key_id)

    async def list_api_keys(self) -> list[ApiKey]:
        return sorted(self._api_keys.values(), key=lambda k: k.created_at)

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        key = self._api_keys.get(key_id)
        if key is None:
            return False
        if key.revoked_at is None:
            self._api_keys[key_id] = replace(key, revoked_at=at)
        return True

    async def save_dataset(self, dataset: Dataset) -> None:
        self._datasets[(dataset.symbol, dataset.timeframe)] = dataset

    async def get_dataset(self, symbol: str, timeframe: str) -> Dataset | None:
        return self._datasets.get((symbol, timeframe))

    async def list_datasets(self) -> list[Dataset]:
        return [self._datasets[key] for key in sorted(self._datasets)]

    async def save_artifact(self, artifact: Artifact) -> None:
        self._artifacts[(artifact.operation_id, artifact.name)] = artifact

    async def list_artifacts(self, operation_id: str) -> list[Artifact]:
        return [a for key, a in sorted(self._artifacts.items()) if key[0] == operation_id]

    async def append_audit(self, records: list[AuditRecord]) -> None:
        seqs = [r.seq for r in records]
        if len(set(seqs)) != len(seqs) or any(seq in self._audit for seq in seqs):
            raise Conflict("audit seq already stored")
        self._audit.update((r.seq, r) for r in records)

    async def audit_records(self, after_seq: int = 0, limit: int = MAX_PAGE) -> list[AuditRecord]:
        found = sorted(seq for seq in self._audit if seq > after_seq)[: min(limit, MAX_PAGE)]
        return [self._audit[seq] for seq in found]

    async def last_audit_record(self) -> AuditRecord | None:
        return self._audit[max(self._audit)] if self._audit else None

    async def save_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        self._checkpoints.append(checkpoint)

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        return sorted(self._checkpoints, key=lambda c: c.seq)  # stable: saved order within a seq


def _matches(op: Operation, query: OperationQuery) -> bool:
    return (
        (not query.statuses or op.status in query.statuses)
        and (query.operation_type is None or op.operation_type == query.operation_type)
        and (query.worker_id is None or op.worker_id == query.worker_id)
        and (query.owner is None or op.owner == query.owner)
    )
