"""SqlStore: SQLAlchemy Core over SQLite (WAL, synchronous=FULL unless told NORMAL) or another
database.

All writes go through one writer thread that batches whatever is queued into one transaction
(group commit: one fsync for many writers) with a savepoint per write, so one failing write
does not undo the others. SQLite write transactions start with BEGIN IMMEDIATE, so the lock is
taken up front and "database is locked" cannot surface from a read-to-write upgrade. Reads run
on their own connections in worker threads; WAL lets them proceed beside the writer.
"""

import asyncio
import queue
import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import structlog

from workfleet.domain.artifacts import Artifact
from workfleet.domain.audit import AuditCheckpoint, AuditRecord
from workfleet.domain.datasets import Dataset
from workfleet.domain.errors import Conflict, NotFound, WorkfleetError
from workfleet.domain.operations import TERMINAL, Operation
from workfleet.domain.workers import Worker
from workfleet.security.api_keys import ApiKey
from workfleet.settings import DbSync
from workfleet.store import codec, migrations
from workfleet.store.base import MAX_PAGE, OperationQuery
from workfleet.store.tables import (
    api_keys,
    artifacts,
    audit_checkpoints,
    audit_records,
    datasets,
    operations,
    workers,
)

T = TypeVar("T")
# Built once: SQLAlchemy then reuses the compiled SQL (building a 25-column statement per write
# cost more CPU than the write itself).
_INSERT_OPERATION = operations.insert()
_UPDATE_OPERATION = (
    operations.update()
    .where(operations.c.operation_id == sa.bindparam("key"))
    .values({c.name: sa.bindparam(f"new_{c.name}") for c in operations.c if c.name != "seq"})
)
log = structlog.get_logger(__name__)
MAX_BATCH = 512
BUSY_TIMEOUT_MS = 10_000


def _sqlite_engine(url: str, *, writer: bool, sync: DbSync) -> sa.Engine:
    engine = sa.create_engine(url, pool_size=1 if writer else 4, max_overflow=0 if writer else 4)

    @sa.event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sync.upper()}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")

    return engine


def _engine(url: str, *, writer: bool, sync: DbSync) -> sa.Engine:
    if url.startswith("sqlite"):
        return _sqlite_engine(url, writer=writer, sync=sync)
    return sa.create_engine(url, pool_pre_ping=True)


class _Writer:
    """One thread, one connection, group commits."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="workfleet-db-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    async def submit(self, work: Callable[[sa.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put((work, future, loop))
        return await future

    def _run(self) -> None:
        with self._engine.connect() as conn:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        self._queue.put(None)  # finish this batch, then stop
                        break
                    batch.append(item)
                self._commit(conn, batch)

    def _commit(self, conn: sa.Connection, batch: list[Any]) -> None:
        """All writes in one transaction. Should one fail (rare: a reused idempotency key),
        the transaction is rolled back and each write is redone in its own, so that failure
        reaches its caller alone."""
        try:
            with conn.begin():
                values = [work(conn) for work, _, _ in batch]
            outcomes: list[tuple[bool, Any]] = [(True, value) for value in values]
        except Exception:
            outcomes = [self._alone(conn, work) for work, _, _ in batch]
        for (_, future, loop), (ok, value) in zip(batch, outcomes, strict=True):
            loop.call_soon_threadsafe(_settle, future, ok, value)

    @staticmethod
    def _alone(conn: sa.Connection, work: Callable[[sa.Connection], Any]) -> tuple[bool, Any]:
        try:
            with conn.begin():
                return True, work(conn)
        except Exception as exc:
            if not isinstance(exc, WorkfleetError):
                log.error("store_write_failed", error=str(exc))
            return False, exc


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.cancelled():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class SqlStore:
    def __init__(self, url: str, *, sync: DbSync = "full") -> None:
        """`sync` (SQLite): "full" fsyncs every commit, "normal" leaves the WAL to the OS."""
        self.url = url
        self._write_engine = _engine(url, writer=True, sync=sync)
        self._read_engine = _engine(url, writer=False, sync=sync)
        self._writer = _Writer(self._write_engine)

    async def open(self) -> None:
        def _migrate() -> None:
            with self._write_engine.begin() as conn:
                migrations.migrate(conn)

        await asyncio.to_thread(_migrate)
        self._writer.start()

    async def close(self) -> None:
        await asyncio.to_thread(self._writer.stop)
        self._write_engine.dispose()
        self._read_engine.dispose()

    async def _read(self, work: Callable[[sa.Connection], T]) -> T:
        def _run() -> T:
            with self._read_engine.begin() as conn:
                return work(conn)

        return await asyncio.to_thread(_run)

    # ---- operations ---------------------------------------------------------------------------

    async def add_operation(self, op: Operation) -> None:
        row = codec.operation_row(op)

        def _insert(conn: sa.Connection) -> None:
            try:
                conn.execute(_INSERT_OPERATION, row)
            except sa.exc.IntegrityError as exc:
                raise Conflict("operation id or idempotency key already used") from exc

        await self._writer.submit(_insert)

    async def save_operation(self, op: Operation) -> None:
        row = {f"new_{name}": value for name, value in codec.operation_row(op).items()}
        row["key"] = op.operation_id

        def _update(conn: sa.Connection) -> None:
            if conn.execute(_UPDATE_OPERATION, row).rowcount == 0:
                raise NotFound(f"no operation {op.operation_id}")

        await self._writer.submit(_update)

    async def get_operation(self, operation_id: str) -> Operation | None:
        query = sa.select(operations).where(operations.c.operation_id == operation_id)
        row = await self._read(lambda conn: conn.execute(query).first())
        return codec.operation_from_row(row) if row else None

    async def find_operation_by_key(self, owner: str, idempotency_key: str) -> Operation | None:
        query = sa.select(operations).where(
            operations.c.owner == owner, operations.c.idempotency_key == idempotency_key
        )
        row = await self._read(lambda conn: conn.execute(query).first())
        return codec.operation_from_row(row) if row else None

    async def list_operations(self, query: OperationQuery) -> tuple[list[Operation], str | None]:
        limit = min(query.limit, MAX_PAGE)
        statement = sa.select(operations).order_by(operations.c.seq.desc()).limit(limit + 1)
        if query.cursor:
            statement = statement.where(operations.c.seq < int(query.cursor))
        if query.statuses:
            statement = statement.where(operations.c.status.in_(sorted(query.statuses)))
        for column, value in (
            (operations.c.operation_type, query.operation_type),
            (operations.c.worker_id, query.worker_id),
            (operations.c.owner, query.owner),
        ):
            if value is not None:
                statement = statement.where(column == value)
        rows = await self._read(lambda conn: conn.execute(statement).all())
        more = len(rows) > limit
        rows = rows[:limit]
        cursor = str(rows[-1].seq) if more else None
        return [codec.operation_from_row(row) for row in rows], cursor

    async def unfinished_operations(self) -> list[Operation]:
        statement = (
            sa.select(operations)
            .where(operations.c.status.not_in(sorted(TERMINAL)))
            .order_by(operations.c.seq)
        )
        rows = await self._read(lambda conn: conn.execute(statement).all())
        return [codec.operation_from_row(row) for row in rows]

    # ---- workers ------------------------------------------------------------------------------

    async def save_worker(self, worker: Worker) -> None:
        row = codec.worker_row(worker)

        def _upsert(conn: sa.Connection) -> None:
            updated = conn.execute(
                workers.update().where(workers.c.worker_id == worker.worker_id).values(**row)
            )
            if updated.rowcount == 0:
                conn.execute(workers.insert().values(**row))

        await self._writer.submit(_upsert)

    async def delete_worker(self, worker_id: str) -> None:
        statement = workers.delete().where(workers.c.worker_id == worker_id)
        await self._writer.submit(lambda conn: conn.execute(statement))

    async def load_workers(self) -> list[Worker]:
        rows = await self._read(lambda conn: conn.execute(sa.select(workers)).all())
        return [codec.worker_from_row(row) for row in rows]

    # ---- API keys -----------------------------------------------------------------------------

    async def add_api_key(self, key: ApiKey) -> None:
        row = codec.api_key_row(key)

        def _insert(conn: sa.Connection) -> None:
            try:
                conn.execute(api_keys.insert().values(**row))
            except sa.exc.IntegrityError as exc:
                raise Conflict(f"key {key.key_id} exists") from exc

        await self._writer.submit(_insert)

    async def get_api_key(self, key_id: str) -> ApiKey | None:
        query = sa.select(api_keys).where(api_keys.c.key_id == key_id)
        row = await self._read(lambda conn: conn.execute(query).first())
        return codec.api_key_from_row(row) if row else None

    async def list_api_keys(self) -> list[ApiKey]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [codec.api_key_from_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, *, at: datetime) -> bool:
        def _revoke(conn: sa.Connection) -> bool:
            found = conn.execute(
                sa.select(api_keys.c.revoked_at).where(api_keys.c.key_id == key_id)
            )
            row = found.first()
            if row is None:
                return False
            if row.revoked_at is None:
                conn.execute(
                    api_keys.update().where(api_keys.c.key_id == key_id).values(revoked_at=at)
                )
            return True

        return await self._writer.submit(_revoke)

    # ---- datasets -----------------------------------------------------------------------------

    async def save_dataset(self, dataset: Dataset) -> None:
        row = codec.dataset_row(dataset)
        key = (datasets.c.symbol == dataset.symbol) & (datasets.c.timeframe == dataset.timeframe)

        def _upsert(conn: sa.Connection) -> None:
            if conn.execute(datasets.update().where(key).values(**row)).rowcount == 0:
                conn.execute(datasets.insert().values(**row))

        await self._writer.submit(_upsert)

    async def get_dataset(self, symbol: str, timeframe: str) -> Dataset | None:
        query = sa.select(datasets).where(
            datasets.c.symbol == symbol, datasets.c.timeframe == timeframe
        )
        row = await self._read(lambda conn: conn.execute(query).first())
        return codec.dataset_from_row(row) if row else None

    async def list_datasets(self) -> list[Dataset]:
        query = sa.select(datasets).order_by(datasets.c.symbol, datasets.c.timeframe)
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [codec.dataset_from_row(row) for row in rows]

    # ---- artifacts ----------------------------------------------------------------------------

    async def save_artifact(self, artifact: Artifact) -> None:
        row = asdict(artifact)
        key = (artifacts.c.operation_id == artifact.operation_id) & (
            artifacts.c.name == artifact.name
        )

        def _upsert(conn: sa.Connection) -> None:
            if conn.execute(artifacts.update().where(key).values(**row)).rowcount == 0:
                conn.execute(artifacts.insert().values(**row))

        await self._writer.submit(_upsert)

    async def list_artifacts(self, operation_id: str) -> list[Artifact]:
        query = (
            sa.select(artifacts)
            .where(artifacts.c.operation_id == operation_id)
            .order_by(artifacts.c.name)
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [codec.artifact_from_row(row) for row in rows]

    # ---- audit log ----------------------------------------------------------------------------
    # Columns are named as the records' fields.

    async def append_audit(self, records: list[AuditRecord]) -> None:
        rows = [asdict(record) for record in records]

        def _insert(conn: sa.Connection) -> None:
            try:
                conn.execute(audit_records.insert(), rows)
            except sa.exc.IntegrityError as exc:
                raise Conflict("audit seq already stored") from exc

        await self._writer.submit(_insert)

    async def audit_records(self, after_seq: int = 0, limit: int = MAX_PAGE) -> list[AuditRecord]:
        query = (
            sa.select(audit_records)
            .where(audit_records.c.seq > after_seq)
            .order_by(audit_records.c.seq)
            .limit(min(limit, MAX_PAGE))
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [AuditRecord(**row._mapping) for row in rows]

    async def last_audit_record(self) -> AuditRecord | None:
        query = sa.select(audit_records).order_by(audit_records.c.seq.desc()).limit(1)
        row = await self._read(lambda conn: conn.execute(query).first())
        return AuditRecord(**row._mapping) if row else None

    async def save_audit_checkpoint(self, checkpoint: AuditCheckpoint) -> None:
        statement = audit_checkpoints.insert().values(**asdict(checkpoint))
        await self._writer.submit(lambda conn: conn.execute(statement))

    async def audit_checkpoints(self) -> list[AuditCheckpoint]:
        query = sa.select(audit_checkpoints).order_by(
            audit_checkpoints.c.seq, audit_checkpoints.c.id
        )
        rows = await self._read(lambda conn: conn.execute(query).all())
        return [
            AuditCheckpoint(**{k: v for k, v in row._mapping.items() if k != "id"}) for row in rows
        ]
