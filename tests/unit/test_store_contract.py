"""One contract, two stores: every test in the first part runs against MemoryStore and against
SqlStore on a real SQLite file; the second part covers what only SqlStore promises (durability
across reopen, WAL + synchronous=FULL, group commit, schema versioning)."""

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from workfleet.domain.artifacts import Artifact
from workfleet.domain.audit import AuditCheckpoint, AuditRecord, next_record
from workfleet.domain.datasets import Dataset
from workfleet.domain.errors import Conflict
from workfleet.domain.labels import as_labels
from workfleet.domain.operations import ErrorInfo, Lease, Operation, OperationStatus, Requirements
from workfleet.domain.workers import Capabilities, Load, Worker
from workfleet.security.api_keys import ApiKey
from workfleet.store import migrations
from workfleet.store.base import OperationQuery, Store
from workfleet.store.memory import MemoryStore
from workfleet.store.sql import SqlStore
from workfleet.store.tables import SCHEMA_VERSION

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


@pytest.fixture(params=["memory", "sql"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    url = sqlite_url(tmp_path / "wf.db")
    made: Store = MemoryStore() if request.param == "memory" else SqlStore(url)
    await made.open()
    yield made
    await made.close()


@pytest.fixture
async def sql_store(tmp_path: Path) -> AsyncIterator[SqlStore]:
    made = SqlStore(sqlite_url(tmp_path / "wf.db"))
    await made.open()
    yield made
    await made.close()


def make_op(
    operation_id: str,
    *,
    owner: str = "alice",
    status: OperationStatus = "pending",
    operation_type: str = "diagnostic",
    worker_id: str | None = None,
    idempotency_key: str | None = None,
    created_at: datetime = T0,
) -> Operation:
    return Operation(
        operation_id=operation_id,
        operation_type=operation_type,
        params={"action": "noop"},
        owner=owner,
        created_at=created_at,
        status=status,
        worker_id=worker_id,
        idempotency_key=idempotency_key,
    )


def full_op() -> Operation:
    """An operation with every field set to something other than its default."""
    return Operation(
        operation_id="op_full",
        operation_type="backtesting",
        params={"symbol": "EURUSD", "strategy_params": {"fast": 10, "slow": 30}, "tags": ["a"]},
        owner="alice",
        created_at=at(0),
        priority=7,
        requirements=Requirements(
            gpu="preferred",
            min_memory_gb=4.5,
            worker_type="gpu-box",
            min_cores=8,
            labels=as_labels({"zone": "eu-west", "disk": "nvme"}),
        ),
        idempotency_key="key-1",
        request_hash="ab" * 32,
        status="failed",
        worker_id="w1",
        lease=Lease(attempt=3, token="tok-abcdef123"),
        attempt=3,
        losses=2,
        accepted_seq=41,
        progress={"percentage": 55.5, "message": "bar 5500", "current_step": 3, "total_steps": 9},
        result={"sharpe": 1.25, "trades": [1, 2, 3], "nested": {"ok": True}},
        error=ErrorInfo("ValueError", "bad bar", "Traceback (most recent call last): ..."),
        dispatched_at=at(1.5),
        started_at=at(2.25),
        finished_at=at(30.000001),
        cancel_requested_at=at(20),
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )


def make_worker(worker_id: str = "w1", **changes: Any) -> Worker:
    worker = Worker(
        worker_id=worker_id,
        worker_type="gpu-box",
        endpoint_url=f"https://{worker_id}.example:5002",
        capabilities=Capabilities(
            cores=16,
            memory_gb=62.5,
            gpu=True,
            gpu_type="H200",
            gpu_count=2,
            gpu_memory_gb=141.0,
            slots=3,
            labels=as_labels({"zone": "eu-west", "rack": "r7"}),
            speed=2.5,
        ),
        operation_types=frozenset({"training", "diagnostic"}),
        registered_at=at(0),
        instance_id="inst-7",
        last_healthy_at=at(10),
        unavailable_since=at(40),
        consecutive_failures=4,
        draining=True,
        last_dispatch_seq=5,
        load=Load(current_load=0.5, cpu_usage_ratio=0.25, memory_usage_ratio=0.75),
        reserved=frozenset({"op_a", "op_b"}),
    )
    return replace(worker, **changes)


def make_key(key_id: str, *, created: float = 0.0, role: Any = "operator") -> ApiKey:
    return ApiKey(
        key_id=key_id,
        name=f"name-{key_id}",
        role=role,
        secret_sha256="cd" * 32,
        created_at=at(created),
    )


async def add_all(store: Store, ops: list[Operation]) -> None:
    for op in ops:  # one at a time: the insertion order is the listing order
        await store.add_operation(op)


async def ids(store: Store, **query: Any) -> list[str]:
    items, _ = await store.list_operations(OperationQuery(**query))
    return [op.operation_id for op in items]


async def every_page(store: Store, **query: Any) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        items, cursor = await store.list_operations(OperationQuery(cursor=cursor, **query))
        pages.append([op.operation_id for op in items])
        if cursor is None:
            return pages
        assert len(pages) < 100, "pagination does not end"


# ---- operations: add / get ---------------------------------------------------------------------


async def test_an_operation_with_every_field_set_reads_back_equal(store: Store) -> None:
    await store.add_operation(full_op())
    assert await store.get_operation("op_full") == full_op()


async def test_timestamps_read_back_timezone_aware_in_utc(store: Store) -> None:
    await store.add_operation(full_op())
    found = await store.get_operation("op_full")
    assert found is not None
    stamps = [found.created_at, found.dispatched_at, found.started_at, found.finished_at]
    assert all(s is not None and s.utcoffset() == timedelta(0) for s in stamps)


async def test_timestamps_keep_their_microseconds(store: Store) -> None:
    await store.add_operation(full_op())
    found = await store.get_operation("op_full")
    assert found is not None
    assert (found.created_at.microsecond, found.finished_at) == (123456, at(30.000001))


async def test_an_unknown_operation_reads_as_none(store: Store) -> None:
    assert await store.get_operation("op_missing") is None


async def test_adding_an_existing_operation_id_raises_conflict(store: Store) -> None:
    await store.add_operation(make_op("op_1"))
    with pytest.raises(Conflict):
        await store.add_operation(make_op("op_1", owner="bob"))


async def test_a_refused_duplicate_id_leaves_the_first_record_untouched(store: Store) -> None:
    await store.add_operation(make_op("op_1"))
    with contextlib.suppress(Conflict):
        await store.add_operation(make_op("op_1", owner="bob", status="running"))
    assert await store.get_operation("op_1") == make_op("op_1")


async def test_reusing_an_idempotency_key_of_the_same_owner_raises_conflict(store: Store) -> None:
    await store.add_operation(make_op("op_1", idempotency_key="k"))
    with pytest.raises(Conflict):
        await store.add_operation(make_op("op_2", idempotency_key="k"))


async def test_a_refused_duplicate_key_does_not_store_the_second_operation(store: Store) -> None:
    await store.add_operation(make_op("op_1", idempotency_key="k"))
    with contextlib.suppress(Conflict):
        await store.add_operation(make_op("op_2", idempotency_key="k"))
    assert await store.get_operation("op_2") is None


async def test_the_same_idempotency_key_under_another_owner_is_accepted(store: Store) -> None:
    await store.add_operation(make_op("op_1", owner="alice", idempotency_key="k"))
    await store.add_operation(make_op("op_2", owner="bob", idempotency_key="k"))
    assert await store.get_operation("op_2") == make_op("op_2", owner="bob", idempotency_key="k")


async def test_many_operations_without_an_idempotency_key_coexist(store: Store) -> None:
    await add_all(store, [make_op("op_1"), make_op("op_2"), make_op("op_3")])
    assert sorted(await ids(store)) == ["op_1", "op_2", "op_3"]


# ---- operations: save / find -------------------------------------------------------------------


async def test_save_operation_replaces_the_stored_record(store: Store) -> None:
    await store.add_operation(make_op("op_1"))
    updated = replace(full_op(), operation_id="op_1", idempotency_key=None)
    await store.save_operation(updated)
    assert await store.get_operation("op_1") == updated


async def test_save_operation_can_clear_fields_again(store: Store) -> None:
    await store.add_operation(full_op())
    cleared = replace(full_op(), lease=None, progress=None, error=None, worker_id=None)
    await store.save_operation(cleared)
    assert await store.get_operation("op_full") == cleared


async def test_save_operation_keeps_the_listing_position(store: Store) -> None:
    await add_all(store, [make_op("op_1"), make_op("op_2")])
    await store.save_operation(make_op("op_1", status="running", worker_id="w1"))
    assert await ids(store) == ["op_2", "op_1"]


async def test_find_operation_by_key_returns_the_owners_operation(store: Store) -> None:
    await store.add_operation(make_op("op_1", owner="alice", idempotency_key="k"))
    await store.add_operation(make_op("op_2", owner="bob", idempotency_key="k"))
    found = await store.find_operation_by_key("bob", "k")
    assert found is not None
    assert found.operation_id == "op_2"


async def test_find_operation_by_key_does_not_see_another_owners_key(store: Store) -> None:
    await store.add_operation(make_op("op_1", owner="alice", idempotency_key="k"))
    assert await store.find_operation_by_key("bob", "k") is None


async def test_find_operation_by_key_returns_none_for_an_unknown_key(store: Store) -> None:
    await store.add_operation(make_op("op_1", idempotency_key="k"))
    assert await store.find_operation_by_key("alice", "other") is None


async def test_find_operation_by_key_returns_the_latest_saved_record(store: Store) -> None:
    await store.add_operation(make_op("op_1", idempotency_key="k"))
    await store.save_operation(make_op("op_1", idempotency_key="k", status="running"))
    found = await store.find_operation_by_key("alice", "k")
    assert found is not None
    assert found.status == "running"


# ---- operations: listing -----------------------------------------------------------------------


async def test_list_operations_returns_the_newest_first(store: Store) -> None:
    await add_all(store, [make_op(f"op_{i}") for i in range(5)])
    assert await ids(store) == ["op_4", "op_3", "op_2", "op_1", "op_0"]


async def test_list_operations_orders_by_insertion_not_by_created_at(store: Store) -> None:
    await add_all(store, [make_op("late", created_at=at(100)), make_op("early", created_at=at(1))])
    assert await ids(store) == ["early", "late"]


async def test_list_operations_filters_by_status(store: Store) -> None:
    await add_all(
        store,
        [
            make_op("p", status="pending"),
            make_op("r", status="running", worker_id="w1"),
            make_op("c", status="completed"),
            make_op("f", status="failed"),
        ],
    )
    assert await ids(store, statuses=frozenset({"pending", "failed"})) == ["f", "p"]


async def test_list_operations_filters_by_operation_type(store: Store) -> None:
    await add_all(
        store,
        [make_op("d1"), make_op("t1", operation_type="training"), make_op("d2")],
    )
    assert await ids(store, operation_type="training") == ["t1"]


async def test_list_operations_filters_by_worker(store: Store) -> None:
    await add_all(
        store,
        [make_op("a", worker_id="w1"), make_op("b", worker_id="w2"), make_op("c")],
    )
    assert await ids(store, worker_id="w1") == ["a"]


async def test_list_operations_filters_by_owner(store: Store) -> None:
    await add_all(store, [make_op("a", owner="alice"), make_op("b", owner="bob")])
    assert await ids(store, owner="bob") == ["b"]


async def test_list_operations_combines_filters(store: Store) -> None:
    await add_all(
        store,
        [
            make_op("a", owner="bob", status="running", worker_id="w1"),
            make_op("b", owner="bob", status="pending"),
            make_op("c", owner="alice", status="running", worker_id="w1"),
        ],
    )
    assert await ids(store, owner="bob", statuses=frozenset({"running"})) == ["a"]


async def test_list_operations_on_an_empty_store_is_empty_without_a_cursor(store: Store) -> None:
    assert await store.list_operations(OperationQuery()) == ([], None)


async def test_a_page_holds_at_most_limit_items(store: Store) -> None:
    await add_all(store, [make_op(f"op_{i}") for i in range(7)])
    items, cursor = await store.list_operations(OperationQuery(limit=3))
    assert (len(items), cursor is not None) == (3, True)


async def test_cursor_pagination_visits_every_record_exactly_once_newest_first(
    store: Store,
) -> None:
    names = [f"op_{i:02d}" for i in range(23)]
    await add_all(store, [make_op(n) for n in names])
    pages = await every_page(store, limit=5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [n for page in pages for n in page] == list(reversed(names))


async def test_the_last_full_page_has_no_cursor_to_an_empty_page(store: Store) -> None:
    await add_all(store, [make_op(f"op_{i}") for i in range(10)])
    pages = await every_page(store, limit=5)
    assert [len(p) for p in pages] == [5, 5]


async def test_cursor_pagination_with_a_filter_visits_every_match_exactly_once(
    store: Store,
) -> None:
    ops = [make_op(f"op_{i:02d}", owner="bob" if i % 3 == 0 else "alice") for i in range(30)]
    await add_all(store, ops)
    pages = await every_page(store, owner="bob", limit=4)
    expected = [op.operation_id for op in reversed(ops) if op.owner == "bob"]
    assert [n for page in pages for n in page] == expected


async def test_records_added_after_the_first_page_do_not_shift_the_next_pages(
    store: Store,
) -> None:
    await add_all(store, [make_op(f"op_{i}") for i in range(6)])
    first, cursor = await store.list_operations(OperationQuery(limit=3))
    await store.add_operation(make_op("op_new"))
    rest, _ = await store.list_operations(OperationQuery(limit=3, cursor=cursor))
    assert [op.operation_id for op in first + rest] == [f"op_{i}" for i in range(5, -1, -1)]


async def test_unfinished_operations_are_the_pending_and_running_ones_oldest_first(
    store: Store,
) -> None:
    await add_all(
        store,
        [
            make_op("p1"),
            make_op("done", status="completed"),
            make_op("r1", status="running", worker_id="w1"),
            make_op("failed", status="failed"),
            make_op("gone", status="cancelled"),
            make_op("p2"),
        ],
    )
    assert [op.operation_id for op in await store.unfinished_operations()] == ["p1", "r1", "p2"]


async def test_an_operation_saved_as_terminal_is_no_longer_unfinished(store: Store) -> None:
    await store.add_operation(make_op("op_1"))
    await store.save_operation(make_op("op_1", status="completed"))
    assert await store.unfinished_operations() == []


# ---- workers -----------------------------------------------------------------------------------


async def test_a_saved_worker_loads_back_with_its_identity_capabilities_and_liveness(
    store: Store,
) -> None:
    await store.save_worker(make_worker())
    (loaded,) = await store.load_workers()
    saved = make_worker()
    assert (
        loaded.worker_id,
        loaded.worker_type,
        loaded.endpoint_url,
        loaded.capabilities,
        loaded.operation_types,
        loaded.instance_id,
        loaded.draining,
        loaded.registered_at,
        loaded.last_healthy_at,
        loaded.unavailable_since,
    ) == (
        saved.worker_id,
        saved.worker_type,
        saved.endpoint_url,
        saved.capabilities,
        saved.operation_types,
        saved.instance_id,
        saved.draining,
        saved.registered_at,
        saved.last_healthy_at,
        saved.unavailable_since,
    )


async def test_a_loaded_worker_holds_no_slot_reservations(store: Store) -> None:
    await store.save_worker(make_worker(reserved=frozenset({"op_a"})))
    (loaded,) = await store.load_workers()
    assert loaded.reserved == frozenset()


async def test_a_saved_worker_keeps_its_registration_but_not_its_live_counters(
    store: Store,
) -> None:
    """Failure counts, load and dispatch order are rebuilt by health checks after a restart."""
    await store.save_worker(make_worker())
    (loaded,) = await store.load_workers()
    assert loaded == replace(
        make_worker(),
        reserved=frozenset(),
        consecutive_failures=0,
        load=Load(),
        last_dispatch_seq=0,
    )


async def test_saving_a_worker_again_replaces_it(store: Store) -> None:
    await store.save_worker(make_worker())
    await store.save_worker(make_worker(endpoint_url="https://moved:1", draining=False))
    (loaded,) = await store.load_workers()
    assert (loaded.endpoint_url, loaded.draining) == ("https://moved:1", False)


async def test_load_workers_returns_every_saved_worker(store: Store) -> None:
    for worker_id in ("w1", "w2", "w3"):
        await store.save_worker(make_worker(worker_id))
    assert sorted(w.worker_id for w in await store.load_workers()) == ["w1", "w2", "w3"]


async def test_a_deleted_worker_is_no_longer_loaded(store: Store) -> None:
    await store.save_worker(make_worker("w1"))
    await store.save_worker(make_worker("w2"))
    await store.delete_worker("w1")
    assert [w.worker_id for w in await store.load_workers()] == ["w2"]


async def test_deleting_an_unknown_worker_is_not_an_error(store: Store) -> None:
    await store.delete_worker("nobody")
    assert await store.load_workers() == []


# ---- API keys ----------------------------------------------------------------------------------


async def test_an_api_key_reads_back_equal(store: Store) -> None:
    await store.add_api_key(make_key("k1", role="admin"))
    assert await store.get_api_key("k1") == make_key("k1", role="admin")


async def test_an_unknown_api_key_reads_as_none(store: Store) -> None:
    assert await store.get_api_key("nope") is None


async def test_adding_an_existing_api_key_id_raises_conflict(store: Store) -> None:
    await store.add_api_key(make_key("k1"))
    with pytest.raises(Conflict):
        await store.add_api_key(make_key("k1"))


async def test_api_keys_are_listed_oldest_first(store: Store) -> None:
    for key_id, created in (("b", 20.0), ("a", 30.0), ("c", 10.0)):
        await store.add_api_key(make_key(key_id, created=created))
    assert [k.key_id for k in await store.list_api_keys()] == ["c", "b", "a"]


async def test_revoking_a_key_records_when(store: Store) -> None:
    await store.add_api_key(make_key("k1"))
    assert await store.revoke_api_key("k1", at=at(60)) is True
    key = await store.get_api_key("k1")
    assert key is not None
    assert key.revoked_at == at(60)


async def test_revoking_a_key_twice_keeps_the_first_revocation_time(store: Store) -> None:
    await store.add_api_key(make_key("k1"))
    await store.revoke_api_key("k1", at=at(60))
    assert await store.revoke_api_key("k1", at=at(120)) is True
    key = await store.get_api_key("k1")
    assert key is not None
    assert key.revoked_at == at(60)


async def test_revoking_an_unknown_key_returns_false(store: Store) -> None:
    assert await store.revoke_api_key("nope", at=at(60)) is False


async def test_revoking_one_key_leaves_the_others_alone(store: Store) -> None:
    await store.add_api_key(make_key("k1"))
    await store.add_api_key(make_key("k2", created=1))
    await store.revoke_api_key("k1", at=at(60))
    assert [k.revoked_at for k in await store.list_api_keys()] == [at(60), None]


# ---- SqlStore only -----------------------------------------------------------------------------


async def test_sql_store_data_survives_close_and_reopen(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "wf.db")
    first = SqlStore(url)
    await first.open()
    await first.add_operation(full_op())
    await first.save_worker(make_worker())
    await first.add_api_key(make_key("k1"))
    await first.close()

    second = SqlStore(url)
    await second.open()
    try:
        found = (
            await second.get_operation("op_full"),
            [w.worker_id for w in await second.load_workers()],
            await second.get_api_key("k1"),
        )
    finally:
        await second.close()
    assert found == (full_op(), ["w1"], make_key("k1"))


async def test_sql_store_reads_a_non_utc_timestamp_back_as_the_same_instant_in_utc(
    sql_store: SqlStore,
) -> None:
    one_pm_in_paris = datetime(2026, 3, 1, 13, tzinfo=timezone(timedelta(hours=1)))
    await sql_store.add_operation(make_op("op_1", created_at=one_pm_in_paris))
    found = await sql_store.get_operation("op_1")
    assert found is not None
    noon_utc = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert (found.created_at, found.created_at.tzinfo) == (noon_utc, UTC)


async def test_sql_store_refuses_a_naive_timestamp(sql_store: SqlStore) -> None:
    naive = datetime(2026, 3, 1, 12)  # noqa: DTZ001 - the point of the test
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        await sql_store.add_operation(make_op("op_1", created_at=naive))


async def test_sql_store_database_is_in_wal_journal_mode(
    sql_store: SqlStore, tmp_path: Path
) -> None:
    with contextlib.closing(sqlite3.connect(tmp_path / "wf.db")) as conn:
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert mode == "wal"


def _pragma(engine: sa.Engine, name: str) -> Any:
    with engine.connect() as conn:
        return conn.exec_driver_sql(f"PRAGMA {name}").scalar()


async def test_sql_store_read_connections_use_synchronous_full(sql_store: SqlStore) -> None:
    assert await asyncio.to_thread(_pragma, sql_store._read_engine, "synchronous") == 2


async def test_sql_store_write_connection_uses_synchronous_full(tmp_path: Path) -> None:
    # The writer thread holds the write engine's only connection while the store is open, so
    # look at it before open(): its connect hook is what configures every connection.
    store = SqlStore(sqlite_url(tmp_path / "wf.db"))
    try:
        value = await asyncio.to_thread(_pragma, store._write_engine, "synchronous")
    finally:
        store._write_engine.dispose()
        store._read_engine.dispose()
    assert value == 2


async def test_sql_store_accepts_200_concurrent_adds(sql_store: SqlStore) -> None:
    ops = [make_op(f"op_{i:03d}", idempotency_key=f"k{i}") for i in range(200)]
    outcomes = await asyncio.gather(
        *(sql_store.add_operation(op) for op in ops), return_exceptions=True
    )
    failures = [o for o in outcomes if o is not None]
    assert failures == []
    assert len(await ids(sql_store, limit=1000)) == 200


async def _one_group_commit(store: SqlStore, writes: list[Callable[[], Any]]) -> list[Any]:
    """Run `writes` so they all land in the same batch: hold the writer thread on a first item
    until every write is queued behind it, then let it go."""
    started, release = threading.Event(), threading.Event()

    def hold(_conn: sa.Connection) -> None:
        started.set()
        release.wait(10)

    held = asyncio.ensure_future(store._writer.submit(hold))
    assert await asyncio.to_thread(started.wait, 10)
    tasks = [asyncio.ensure_future(write()) for write in writes]
    await asyncio.sleep(0)  # each task runs up to its queue.put, then waits for the writer
    release.set()
    await held
    return list(await asyncio.gather(*tasks, return_exceptions=True))


async def test_a_failing_write_in_a_group_commit_does_not_undo_the_others(
    sql_store: SqlStore,
) -> None:
    await sql_store.add_operation(make_op("op_dup"))
    outcomes = await _one_group_commit(
        sql_store,
        [
            lambda: sql_store.add_operation(make_op("op_a")),
            lambda: sql_store.add_operation(make_op("op_dup", owner="bob")),
            lambda: sql_store.add_operation(make_op("op_b")),
        ],
    )
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "Conflict", "NoneType"]
    assert sorted(await ids(sql_store)) == ["op_a", "op_b", "op_dup"]


async def test_a_failing_write_in_a_group_commit_keeps_writes_queued_before_it(
    sql_store: SqlStore,
) -> None:
    await sql_store.add_operation(make_op("op_1"))
    outcomes = await _one_group_commit(
        sql_store,
        [
            lambda: sql_store.save_operation(make_op("op_1", status="running", worker_id="w9")),
            lambda: sql_store.add_operation(make_op("op_1")),
        ],
    )
    assert isinstance(outcomes[1], Conflict)
    found = await sql_store.get_operation("op_1")
    assert found is not None
    assert (found.status, found.worker_id) == ("running", "w9")


async def test_sql_store_refuses_a_database_with_a_newer_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "wf.db"
    first = SqlStore(sqlite_url(path))
    await first.open()
    await first.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE schema_version SET version = 99")

    newer = SqlStore(sqlite_url(path))
    try:
        with pytest.raises(migrations.SchemaTooNew, match="99"):
            await newer.open()
    finally:  # open() failed, so the writer never started: release the engines directly
        newer._write_engine.dispose()
        newer._read_engine.dispose()


async def test_a_new_database_is_stamped_with_the_current_schema_version(
    sql_store: SqlStore, tmp_path: Path
) -> None:
    from workfleet.store.tables import SCHEMA_VERSION

    with contextlib.closing(sqlite3.connect(tmp_path / "wf.db")) as conn:
        rows = conn.execute("SELECT version FROM schema_version").fetchall()
    assert rows == [(SCHEMA_VERSION,)]


# ---- datasets -----------------------------------------------------------------------------------


def make_dataset(symbol: str = "BTC", timeframe: str = "1h", sha: str = "a" * 64) -> Dataset:
    return Dataset(
        symbol,
        timeframe,
        sha,
        bars=10,
        first_at=at(0),
        last_at=at(9),
        size_bytes=500,
        created_at=at(10),
    )


async def test_a_saved_dataset_loads_back_equal(store: Store) -> None:
    await store.save_dataset(make_dataset())
    assert await store.get_dataset("BTC", "1h") == make_dataset()
    assert await store.get_dataset("BTC", "1d") is None


async def test_saving_a_dataset_again_makes_it_the_current_version(store: Store) -> None:
    await store.save_dataset(make_dataset(sha="a" * 64))
    await store.save_dataset(make_dataset(sha="b" * 64))
    assert (await store.get_dataset("BTC", "1h")).sha256 == "b" * 64  # type: ignore[union-attr]
    assert len(await store.list_datasets()) == 1


async def test_datasets_are_listed_by_symbol_then_timeframe(store: Store) -> None:
    for symbol, timeframe in (("ETH", "1h"), ("BTC", "1m"), ("BTC", "1d")):
        await store.save_dataset(make_dataset(symbol, timeframe))
    listed = [(d.symbol, d.timeframe) for d in await store.list_datasets()]
    assert listed == [("BTC", "1d"), ("BTC", "1m"), ("ETH", "1h")]


async def test_a_version_1_database_is_migrated_and_keeps_its_records(tmp_path: Path) -> None:
    """A database made by the first release (no datasets table) opens, gains the table, and
    keeps what it held."""
    path = tmp_path / "v1.db"
    first = SqlStore(sqlite_url(path))
    await first.open()
    await first.add_operation(make_op("op_kept"))
    await first.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("DROP TABLE datasets")  # what version 2 added
        conn.execute("DROP TABLE artifacts")  # what version 3 added
        conn.execute("DROP TABLE audit_records")  # what version 4 added (with its triggers)
        conn.execute("DROP TABLE audit_checkpoints")
        conn.execute("ALTER TABLE operations DROP COLUMN traceparent")  # what version 5 added
        conn.execute("UPDATE schema_version SET version = 1")
    migrated = SqlStore(sqlite_url(path))
    await migrated.open()
    try:
        assert await migrated.get_operation("op_kept") is not None
        await migrated.save_dataset(make_dataset())
        assert await migrated.get_dataset("BTC", "1h") == make_dataset()
        await migrated.save_artifact(make_artifact())
        await migrated.append_audit(audit_chain(2))
        assert await migrated.audit_records() == audit_chain(2)
    finally:
        await migrated.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM audit_records")  # the migration made the triggers too


async def test_a_version_4_database_gains_the_traceparent_column(tmp_path: Path) -> None:
    """Version 5 stores each operation's traceparent: an operation recorded before keeps its
    trace id and has no traceparent; new ones keep theirs."""
    path = tmp_path / "v4.db"
    first = SqlStore(sqlite_url(path))
    await first.open()
    await first.add_operation(replace(make_op("op_old"), trace_id="ab" * 16))
    await first.close()
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("ALTER TABLE operations DROP COLUMN traceparent")
        conn.execute("UPDATE schema_version SET version = 4")
    migrated = SqlStore(sqlite_url(path))
    await migrated.open()
    try:
        old = await migrated.get_operation("op_old")
        assert old is not None and (old.trace_id, old.traceparent) == ("ab" * 16, None)
        await migrated.add_operation(full_op())
        assert await migrated.get_operation("op_full") == full_op()
    finally:
        await migrated.close()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


# ---- artifacts ----------------------------------------------------------------------------------


def make_artifact(
    operation_id: str = "op1", name: str = "trades.json", attempt: int = 1
) -> Artifact:
    return Artifact(operation_id, name, attempt, sha256="c" * 64, size_bytes=42, created_at=at(3))


async def test_artifacts_are_listed_per_operation_by_name(store: Store) -> None:
    await store.save_artifact(make_artifact(name="trades.json"))
    await store.save_artifact(make_artifact(name="equity.csv"))
    await store.save_artifact(make_artifact("op2", name="other.bin"))
    assert [a.name for a in await store.list_artifacts("op1")] == ["equity.csv", "trades.json"]
    assert await store.list_artifacts("op3") == []


async def test_an_artifact_saved_again_under_its_name_is_replaced(store: Store) -> None:
    await store.save_artifact(make_artifact(attempt=1))
    await store.save_artifact(make_artifact(attempt=2))
    assert [a.attempt for a in await store.list_artifacts("op1")] == [2]


# ---- audit log ----------------------------------------------------------------------------------


def audit_chain(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        records.append(
            next_record(
                records[-1] if records else None,
                ts=at(i + 0.000001),
                actor="key:k1 (alice)",
                action="submit",
                target=f"operation:op_{i}",
                outcome="ok",
                request_id=f"r{i}" if i % 2 else None,
                detail={"priority": i, "nested": {"ok": True, "ratio": 0.1}, "list": [1, "a"]},
            )
        )
    return records


def make_checkpoint(seq: int, key_id: str = "0123456789abcdef") -> AuditCheckpoint:
    return AuditCheckpoint(seq, f"{seq:064x}", at(seq), key_id, "ab" * 64)


async def test_audit_records_read_back_equal_in_seq_order(store: Store) -> None:
    records = audit_chain(5)
    await store.append_audit(records[:2])
    await store.append_audit(records[2:])
    assert await store.audit_records() == records
    assert await store.last_audit_record() == records[-1]


async def test_an_empty_audit_log_has_no_last_record(store: Store) -> None:
    assert await store.audit_records() == []
    assert await store.last_audit_record() is None


async def test_audit_records_page_after_a_seq(store: Store) -> None:
    records = audit_chain(7)
    await store.append_audit(records)
    assert [r.seq for r in await store.audit_records(after_seq=2, limit=3)] == [3, 4, 5]
    assert [r.seq for r in await store.audit_records(after_seq=5)] == [6, 7]
    assert await store.audit_records(after_seq=7) == []


async def test_appending_a_stored_audit_seq_is_a_conflict_and_stores_none_of_the_batch(
    store: Store,
) -> None:
    records = audit_chain(4)
    await store.append_audit(records[:2])
    with pytest.raises(Conflict):
        await store.append_audit(records[2:] + records[1:2])
    assert [r.seq for r in await store.audit_records()] == [1, 2]


async def test_audit_checkpoints_are_listed_by_seq_then_as_saved(store: Store) -> None:
    saved = [
        make_checkpoint(20),
        make_checkpoint(10),
        make_checkpoint(20, key_id="fedcba9876543210"),
    ]
    for checkpoint in saved:
        await store.save_audit_checkpoint(checkpoint)
    assert await store.audit_checkpoints() == [saved[1], saved[0], saved[2]]


async def test_sql_store_reads_requirements_and_capabilities_stored_before_cores_and_labels(
    sql_store: SqlStore, tmp_path: Path
) -> None:
    await sql_store.add_operation(make_op("op_1"))
    await sql_store.save_worker(make_worker())
    with contextlib.closing(sqlite3.connect(tmp_path / "wf.db")) as conn, conn:
        conn.execute(
            "UPDATE operations SET requirements = ?",
            ('{"gpu": "required", "min_memory_gb": 2.0, "worker_type": null}',),
        )
        conn.execute("UPDATE workers SET capabilities = ?", ('{"cores": 4, "slots": 2}',))
    found = await sql_store.get_operation("op_1")
    (worker,) = await sql_store.load_workers()
    assert found is not None
    assert found.requirements == Requirements(gpu="required", min_memory_gb=2.0)
    assert worker.capabilities == Capabilities(cores=4, slots=2)
