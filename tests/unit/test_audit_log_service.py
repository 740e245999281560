"""AuditLog (backend/audit.py) on a real SQLite store and real Ed25519 keys: the chain stays
sequential under concurrent callers, continues across restarts, and `verify()` finds what an
attacker with database access can do (AUD-03, AUD-04, AUD-06)."""

import asyncio
import contextlib
import hashlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from workfleet.backend.audit import (
    AuditLog,
    create_signing_key,
    load_public_keys,
    load_signing_key,
    rotate_signing_key,
)
from workfleet.domain.audit import (
    AuditCheckpoint,
    AuditRecord,
    checkpoint_message,
    checkpoint_to_json,
)
from workfleet.domain.errors import Conflict
from workfleet.settings import ConfigurationError
from workfleet.store.memory import MemoryStore
from workfleet.store.sql import SqlStore

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def ticking_clock() -> Callable[[], datetime]:
    """A clock that moves one millisecond per reading: distinct, ordered timestamps."""
    ticks = iter(range(10**9))
    return lambda: T0 + timedelta(milliseconds=next(ticks))


class Fixture:
    def __init__(self, root: Path) -> None:
        self.db = root / "wf.db"
        self.directory = root / "audit"
        self.store = SqlStore(f"sqlite:///{self.db}")

    def log(self, checkpoint_every: int = 10) -> AuditLog:
        return AuditLog(self.store, self.directory, ticking_clock(), checkpoint_every)

    async def started(self, checkpoint_every: int = 10) -> AuditLog:
        log = self.log(checkpoint_every)
        await log.start()
        return log

    async def fill(self, n: int, checkpoint_every: int = 10) -> None:
        """n records through a log that is then closed cleanly."""
        log = await self.started(checkpoint_every)
        for i in range(n):
            await record(log, i)
        await log.close()

    def sql(self, *statements: str) -> None:
        """What someone with the database file can do, behind the backend's back."""
        with contextlib.closing(sqlite3.connect(self.db)) as conn, conn:
            for statement in statements:
                conn.execute(statement)

    async def problems(self) -> list[tuple[int | None, str]]:
        report = await self.log().verify()
        return [(p.seq, p.message) for p in report.problems]

    def file_lines(self) -> list[dict[str, object]]:
        text = (self.directory / "checkpoints.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
async def audit(tmp_path: Path) -> AsyncIterator[Fixture]:
    made = Fixture(tmp_path)
    await made.store.open()
    yield made
    await made.store.close()


async def record(log: AuditLog, i: int) -> None:
    await log.record(
        f"key:k{i % 3} (alice)", "submit", f"operation:op_{i}", "ok", detail={"priority": i}
    )


async def stored(log_fixture: Fixture) -> list[AuditRecord]:
    return await log_fixture.store.audit_records(0, 1000)


# ---- writing ------------------------------------------------------------------------------------


async def test_records_are_chained_durably_and_verify(audit: Fixture) -> None:
    log = await audit.started()
    await log.record(
        "key:k1 (alice)", "key.create", "key:k2", "ok", request_id="r-1", detail={"role": "viewer"}
    )
    (first,) = await stored(audit)  # durable once record() returns
    assert (first.seq, first.actor, first.action, first.target, first.outcome) == (
        1,
        "key:k1 (alice)",
        "key.create",
        "key:k2",
        "ok",
    )
    assert (first.request_id, dict(first.detail), first.ts) == ("r-1", {"role": "viewer"}, T0)
    await log.close()
    report = await log.verify()
    assert (report.ok, report.records, report.checkpoints) == (True, 1, 1)


async def test_50_concurrent_callers_make_one_gapless_valid_chain(audit: Fixture) -> None:
    log = await audit.started()
    await asyncio.gather(*(record(log, i) for i in range(50)))
    records = await stored(audit)
    assert [r.seq for r in records] == list(range(1, 51))
    assert sorted(r.target for r in records) == sorted(f"operation:op_{i}" for i in range(50))
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]
    await log.close()
    assert (await log.verify()).ok


async def test_a_restart_continues_the_chain(audit: Fixture) -> None:
    await audit.fill(3)
    await audit.fill(2)
    records = await stored(audit)
    assert [r.seq for r in records] == [1, 2, 3, 4, 5]
    assert records[3].prev_hash == records[2].hash
    assert await audit.problems() == []


async def test_a_checkpoint_every_n_records_and_one_on_close_in_the_database_and_the_file(
    audit: Fixture,
) -> None:
    await audit.fill(25, checkpoint_every=10)
    stored_checkpoints = await audit.store.audit_checkpoints()
    assert [c.seq for c in stored_checkpoints] == [10, 20, 25]
    records = {r.seq: r for r in await stored(audit)}
    assert all(c.hash == records[c.seq].hash for c in stored_checkpoints)
    assert [line["seq"] for line in audit.file_lines()] == [10, 20, 25]


async def test_closing_without_new_records_adds_no_checkpoint(audit: Fixture) -> None:
    await audit.fill(5)
    log = await audit.started()
    await log.close()
    assert [c.seq for c in await audit.store.audit_checkpoints()] == [5]


async def test_a_caller_with_an_oversized_detail_fails_alone_and_takes_no_seq(
    audit: Fixture,
) -> None:
    log = await audit.started()
    outcomes = await asyncio.gather(
        record(log, 0),
        log.record("system", "x", "t", "ok", detail={"blob": "x" * 5000}),
        record(log, 1),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes] == ["NoneType", "ValueError", "NoneType"]
    await log.close()
    assert [r.seq for r in await stored(audit)] == [1, 2]
    assert await audit.problems() == []


class FailingOnce(MemoryStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail_next = False

    async def append_audit(self, records: list[AuditRecord]) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("disk full")
        await super().append_audit(records)


async def test_a_failed_write_fails_its_callers_and_leaves_no_gap(tmp_path: Path) -> None:
    store = FailingOnce()
    log = AuditLog(store, tmp_path / "audit", ticking_clock())
    await log.start()
    await record(log, 0)
    store.fail_next = True
    with pytest.raises(OSError, match="disk full"):
        await record(log, 1)
    await record(log, 2)
    await log.close()
    assert [r.target for r in await store.audit_records()] == ["operation:op_0", "operation:op_2"]
    assert (await log.verify()).ok


async def test_a_cancelled_caller_still_gets_its_record_written(audit: Fixture) -> None:
    log = await audit.started()
    caller = asyncio.ensure_future(record(log, 0))
    await asyncio.sleep(0)
    caller.cancel()
    await log.close()
    assert [r.target for r in await stored(audit)] == ["operation:op_0"]


async def test_record_is_refused_before_start_and_after_close(audit: Fixture) -> None:
    log = audit.log()
    with pytest.raises(RuntimeError, match="not running"):
        await record(log, 0)
    await log.start()
    await log.close()
    with pytest.raises(RuntimeError, match="not running"):
        await record(log, 1)


async def test_tail_returns_the_last_records(audit: Fixture) -> None:
    log = audit.log()
    assert await log.tail(3) == []
    await audit.fill(7)
    assert [r.seq for r in await log.tail(3)] == [5, 6, 7]
    assert [r.seq for r in await log.tail(50)] == list(range(1, 8))


# ---- keys ---------------------------------------------------------------------------------------


async def test_start_makes_a_private_key_only_its_owner_reads_named_by_its_id(
    audit: Fixture,
) -> None:
    await audit.fill(1)
    (key_file,) = audit.directory.glob("checkpoint-*.key")
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert audit.directory.stat().st_mode & 0o777 == 0o700
    private = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    assert isinstance(private, Ed25519PrivateKey)
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    key_id = hashlib.sha256(raw).hexdigest()[:16]
    assert key_file.name == f"checkpoint-{key_id}.key"
    assert (audit.directory / f"checkpoint-{key_id}.pub").is_file()
    assert {c.key_id for c in await audit.store.audit_checkpoints()} == {key_id}


def test_a_private_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    key_id = create_signing_key(tmp_path)
    (tmp_path / f"checkpoint-{key_id}.key").chmod(0o640)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        load_signing_key(tmp_path)


async def test_rotating_the_key_keeps_old_checkpoints_verifiable(audit: Fixture) -> None:
    await audit.fill(12, checkpoint_every=10)
    old_id, _ = load_signing_key(audit.directory)
    new_id = rotate_signing_key(audit.directory)
    await audit.fill(12, checkpoint_every=10)

    assert new_id != old_id
    assert [p.name for p in audit.directory.glob("*.key")] == [f"checkpoint-{new_id}.key"]
    assert set(load_public_keys(audit.directory)) == {old_id, new_id}
    signers = [(c.seq, c.key_id) for c in await audit.store.audit_checkpoints()]
    assert signers == [(10, old_id), (12, old_id), (22, new_id), (24, new_id)]
    report = await audit.log().verify()
    assert (report.ok, report.checkpoints) == (True, 4)


# ---- what verify() finds ------------------------------------------------------------------------


async def test_sqlite_refuses_to_update_or_delete_audit_rows(audit: Fixture) -> None:
    await audit.fill(3)
    for statement in (
        "UPDATE audit_records SET outcome = 'denied' WHERE seq = 2",
        "DELETE FROM audit_records WHERE seq = 3",
        "UPDATE audit_checkpoints SET seq = 1",
        "DELETE FROM audit_checkpoints",
    ):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            audit.sql(statement)
    assert [r.outcome for r in await stored(audit)] == ["ok", "ok", "ok"]


async def test_an_edit_made_after_dropping_the_trigger_names_the_record(audit: Fixture) -> None:
    await audit.fill(25)
    audit.sql(
        "DROP TRIGGER audit_records_no_update",
        "UPDATE audit_records SET actor = 'key:k0 (alicf)' WHERE seq = 17",
    )
    assert await audit.problems() == [(17, "edited: the content does not match its hash")]


async def test_a_deleted_row_is_reported_as_a_gap(audit: Fixture) -> None:
    await audit.fill(25)
    audit.sql("DROP TRIGGER audit_records_no_delete", "DELETE FROM audit_records WHERE seq = 13")
    assert await audit.problems() == [(13, "missing: record 13 was deleted")]


async def test_two_rows_with_their_contents_swapped_fail(audit: Fixture) -> None:
    await audit.fill(25)
    audit.sql(
        "DROP TRIGGER audit_records_no_update",
        "UPDATE audit_records SET seq = -1 WHERE seq = 8",
        "UPDATE audit_records SET seq = 8 WHERE seq = 9",
        "UPDATE audit_records SET seq = 9 WHERE seq = -1",
    )
    assert {8, 9} <= {seq for seq, _ in await audit.problems()}


async def test_a_truncated_tail_is_found_against_the_external_checkpoint_file(
    audit: Fixture,
) -> None:
    """The attacker cuts the records and the database's checkpoints: the file still has them."""
    await audit.fill(25, checkpoint_every=10)
    audit.sql(
        "DROP TRIGGER audit_records_no_delete",
        "DROP TRIGGER audit_checkpoints_no_delete",
        "DELETE FROM audit_records WHERE seq > 15",
        "DELETE FROM audit_checkpoints WHERE seq > 15",
    )
    assert await audit.problems() == [
        (20, "truncated: a checkpoint covers seq 20 but the log ends at seq 15"),
        (25, "truncated: a checkpoint covers seq 25 but the log ends at seq 15"),
    ]


async def test_lines_cut_from_the_checkpoint_file_are_reported(audit: Fixture) -> None:
    await audit.fill(25, checkpoint_every=10)
    path = audit.directory / "checkpoints.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text(lines[0] + "not json\n")
    assert await audit.problems() == [
        (None, "checkpoints.jsonl line 2 is not a checkpoint"),
        (20, "checkpoint missing from the external checkpoint file"),
        (25, "checkpoint missing from the external checkpoint file"),
    ]


def _append_checkpoint(audit: Fixture, checkpoint: AuditCheckpoint) -> None:
    with (audit.directory / "checkpoints.jsonl").open("a") as file:
        file.write(checkpoint_to_json(checkpoint) + "\n")


async def test_a_checkpoint_with_a_forged_signature_is_reported(audit: Fixture) -> None:
    await audit.fill(25, checkpoint_every=10)
    real = (await audit.store.audit_checkpoints())[0]
    flipped = ("1" if real.signature[0] == "0" else "0") + real.signature[1:]
    _append_checkpoint(audit, AuditCheckpoint(real.seq, real.hash, T0, real.key_id, flipped))
    assert await audit.problems() == [
        (10, f"checkpoint signature does not verify (key {real.key_id})")
    ]


async def test_a_checkpoint_signed_with_another_key_under_our_key_id_is_reported(
    audit: Fixture,
) -> None:
    """An attacker who rewrote the tail re-signs its head with a key of their own."""
    await audit.fill(25, checkpoint_every=10)
    head = (await stored(audit))[-1]
    key_id, _ = load_signing_key(audit.directory)
    theirs = Ed25519PrivateKey.generate()
    signature = theirs.sign(checkpoint_message(head.seq, head.hash, T0)).hex()
    _append_checkpoint(audit, AuditCheckpoint(head.seq, head.hash, T0, key_id, signature))
    assert await audit.problems() == [(25, f"checkpoint signature does not verify (key {key_id})")]


async def test_checkpoints_of_a_key_whose_public_half_is_gone_are_unverifiable(
    audit: Fixture,
) -> None:
    await audit.fill(15, checkpoint_every=10)
    key_id, _ = load_signing_key(audit.directory)
    (audit.directory / f"checkpoint-{key_id}.pub").unlink()
    message = f"checkpoint signed by an unknown key {key_id}"
    assert await audit.problems() == [(10, message), (15, message)]


async def test_verify_reads_more_records_than_one_store_page(audit: Fixture) -> None:
    store = MemoryStore()
    log = AuditLog(store, audit.directory, ticking_clock(), checkpoint_every=500)
    await log.start()
    await asyncio.gather(*(record(log, i) for i in range(1200)))
    await log.close()
    report = await log.verify()
    assert (report.ok, report.records, report.last_seq) == (True, 1200, 1200)


async def test_a_second_writer_on_the_same_database_gets_a_conflict_then_continues(
    audit: Fixture,
) -> None:
    """Two backends on one database (unsupported, but it must not fork the chain)."""
    first = await audit.started()
    second = await audit.started()
    await record(first, 0)
    with pytest.raises(Conflict):
        await record(second, 1)  # seq 1 is taken: `second` now continues after it
    await record(second, 2)
    await first.close()
    await second.close()
    assert [r.seq for r in await stored(audit)] == [1, 2]
    assert await audit.problems() == []
