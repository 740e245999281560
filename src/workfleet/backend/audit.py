"""AuditLog: the backend's audit trail (the chain in domain/audit.py) written through the store,
with Ed25519-signed checkpoints kept twice: in the database, and appended to
`<data-dir>/audit/checkpoints.jsonl`, outside it, so cutting the tail off the database shows.

Keys live beside that file: `checkpoint-<key_id>.key` (PKCS8 PEM, 0600) signs,
`checkpoint-<key_id>.pub` verifies. Rotation makes a new pair and deletes the old private key;
the old public key stays, so the checkpoints it signed still verify.
"""

import asyncio
import contextlib
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from workfleet.domain.audit import (
    AuditCheckpoint,
    AuditRecord,
    Problem,
    SignatureVerdict,
    VerifyReport,
    VerifySignature,
    checkpoint_from_json,
    checkpoint_message,
    checkpoint_to_json,
    next_record,
    unfiled_checkpoints,
    verify_chain,
)
from workfleet.request_ids import current_request_id
from workfleet.settings import ConfigurationError, ensure_private_dir
from workfleet.store.base import MAX_PAGE, Store

log = structlog.get_logger(__name__)
DIRECTORY = "audit"  # under the data dir
CHECKPOINT_FILE = "checkpoints.jsonl"
MAX_BATCH = 512


# ---- checkpoint keys ----------------------------------------------------------------------------


def key_id_of(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _write_new(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def create_signing_key(directory: Path) -> str:
    """A new key pair in `directory`; returns its key id."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key()
    key_id = key_id_of(public)
    # the public half first: a private key nobody can verify against must never sign
    public_pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    _write_new(directory / f"checkpoint-{key_id}.pub", public_pem, 0o644)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_new(directory / f"checkpoint-{key_id}.key", private_pem, 0o600)
    return key_id


def rotate_signing_key(directory: Path) -> str:
    """Sign with a new key from now on (the backend picks it up when it next starts)."""
    old = list(directory.glob("checkpoint-*.key"))
    key_id = create_signing_key(directory)
    for path in old:
        path.unlink()
    return key_id


def load_signing_key(directory: Path) -> tuple[str, Ed25519PrivateKey]:
    """The current key (the newest, should a rotation have been interrupted), made if absent."""
    paths = sorted(directory.glob("checkpoint-*.key"), key=lambda p: (p.stat().st_mtime, p.name))
    if not paths:
        create_signing_key(directory)
        return load_signing_key(directory)
    path = paths[-1]
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} is readable by others: chmod 600 it")
    private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigurationError(f"{path} is not an Ed25519 key")
    key_id = key_id_of(private.public_key())
    if path.name != f"checkpoint-{key_id}.key":
        raise ConfigurationError(f"{path} holds the key {key_id}, not the one its name says")
    return key_id, private


def load_public_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """By the id computed from each key, not from its file name, so a renamed file cannot
    stand in for another key. An unreadable file is skipped: its checkpoints then show as
    signed by an unknown key."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in directory.glob("checkpoint-*.pub"):
        with contextlib.suppress(ValueError):
            public = serialization.load_pem_public_key(path.read_bytes())
            if isinstance(public, Ed25519PublicKey):
                keys[key_id_of(public)] = public
    return keys


def signature_checker(keys: Mapping[str, Ed25519PublicKey]) -> VerifySignature:
    def check(checkpoint: AuditCheckpoint) -> SignatureVerdict:
        key = keys.get(checkpoint.key_id)
        if key is None:
            return "unknown_key"
        message = checkpoint_message(checkpoint.seq, checkpoint.hash, checkpoint.ts)
        try:
            key.verify(bytes.fromhex(checkpoint.signature), message)
        except (InvalidSignature, ValueError):
            return "invalid"
        return "valid"

    return check


# ---- the external checkpoint file ---------------------------------------------------------------


def append_line(path: Path, line: str) -> None:
    """Durably, at the end: O_APPEND puts one write() whole after whatever is there."""
    created = not path.exists()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:  # the new file's directory entry must be durable too
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_checkpoint_file(path: Path) -> tuple[list[AuditCheckpoint], list[Problem]]:
    if not path.exists():
        return [], []
    checkpoints: list[AuditCheckpoint] = []
    problems: list[Problem] = []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            checkpoints.append(checkpoint_from_json(line))
        except (ValueError, KeyError, TypeError):
            problems.append(Problem(None, f"{path.name} line {number} is not a checkpoint"))
    return checkpoints, problems


# ---- the service --------------------------------------------------------------------------------


@dataclass(slots=True)
class _Entry:
    ts: datetime
    actor: str
    action: str
    target: str
    outcome: str
    request_id: str | None
    detail: Mapping[str, Any] | None
    done: "asyncio.Future[None]" = field(repr=False)


class AuditLog:
    """Appends audit records in a strictly sequential hash chain.

    `record()` may be called from any number of tasks: one writer task takes the queued
    entries in call order, chains them and appends them in one store write per batch (so a
    burst costs one commit, not one per record), and `record()` returns once its record is
    durable. A record that cannot be written fails its caller and uses no seq.
    """

    def __init__(
        self,
        store: Store,
        directory: Path,
        clock: Callable[[], datetime],
        checkpoint_every: int = 100,
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1")
        self.directory = directory
        self._store = store
        self._clock = clock
        self._every = checkpoint_every
        self._queue: asyncio.Queue[_Entry | None] = asyncio.Queue()
        self._head: AuditRecord | None = None
        self._checkpointed_seq = 0
        self._key: tuple[str, Ed25519PrivateKey] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def checkpoint_file(self) -> Path:
        return self.directory / CHECKPOINT_FILE

    async def start(self) -> None:
        """Continue the chain after the last stored record; make the signing key if absent."""
        ensure_private_dir(self.directory)
        self._key = await asyncio.to_thread(load_signing_key, self.directory)
        self._head = await self._store.last_audit_record()
        checkpoints = await self._store.audit_checkpoints()
        self._checkpointed_seq = checkpoints[-1].seq if checkpoints else 0
        self._writer = asyncio.create_task(self._write_loop())
        self._accepting = True

    async def record(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        *,
        request_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append one record; returns once it is durable. ValueError for a detail that is not
        small JSON; the store's error if the write fails."""
        if not self._accepting:
            raise RuntimeError("the audit log is not running")
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        request_id = request_id or current_request_id.get()
        entry = _Entry(self._clock(), actor, action, target, outcome, request_id, detail, done)
        self._queue.put_nowait(entry)
        await done

    def note(
        self,
        actor: str,
        action: str,
        target: str,
        outcome: str,
        *,
        request_id: str | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Append without waiting, for the scheduler's hot paths: the record takes its place in
        the chain now and is written with the next batch; a failed write is logged."""
        if not self._accepting:
            log.warning("audit_record_dropped", action=action, target=target)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_log_failure)
        request_id = request_id or current_request_id.get()  # the HTTP request it serves, if any
        self._queue.put_nowait(
            _Entry(self._clock(), actor, action, target, outcome, request_id, detail, done)
        )

    async def close(self) -> None:
        """Write what is queued, then a final checkpoint of the head."""
        if self._writer is None:
            return
        self._accepting = False
        self._queue.put_nowait(None)
        await self._writer
        self._writer = None
        await self._checkpoint()

    async def records(self, after_seq: int = 0, limit: int = MAX_PAGE) -> list[AuditRecord]:
        return await self._store.audit_records(after_seq, limit)

    async def tail(self, n: int) -> list[AuditRecord]:
        """The last `n` records (fewer across a gap)."""
        head = await self._store.last_audit_record()
        if head is None:
            return []
        return await self._store.audit_records(max(0, head.seq - n), n)

    async def verify(self) -> VerifyReport:
        """Read everything back and check it; works without start() (offline, read-only)."""
        # Checkpoints before records: a checkpoint is written after the records it covers, so
        # one written while this reads still covers records this then finds.
        filed, unreadable = await asyncio.to_thread(read_checkpoint_file, self.checkpoint_file)
        stored = await self._store.audit_checkpoints()
        keys = await asyncio.to_thread(load_public_keys, self.directory)
        records: list[AuditRecord] = []
        while page := await self._store.audit_records(records[-1].seq if records else 0):
            records += page
        return verify_chain(
            records,
            [*filed, *stored],
            signature_checker(keys),
            found_before=[*unreadable, *unfiled_checkpoints(stored, filed)],
        )

    # ---- the writer task ----------------------------------------------------------------------

    async def _write_loop(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < MAX_BATCH and not self._queue.empty():
                entry = self._queue.get_nowait()
                if entry is None:
                    stop = True
                    break
                batch.append(entry)
            try:
                await self._write(batch)
            except Exception as exc:  # the loop must survive, or every later record() hangs
                log.exception("audit_write_failed")
                for entry in batch:
                    _settle(entry.done, exc)
            if stop:
                return

    async def _write(self, batch: list[_Entry]) -> None:
        records: list[AuditRecord] = []
        chained: list[_Entry] = []
        head = self._head
        for entry in batch:
            try:
                record = next_record(
                    head,
                    ts=entry.ts,
                    actor=entry.actor,
                    action=entry.action,
                    target=entry.target,
                    outcome=entry.outcome,
                    request_id=entry.request_id,
                    detail=entry.detail,
                )
            except (ValueError, TypeError) as exc:  # this entry's fault alone: it takes no seq
                _settle(entry.done, exc)
                continue
            records.append(record)
            chained.append(entry)
            head = record
        if not records:
            return
        try:
            await self._store.append_audit(records)
        except Exception:
            # Nothing of the batch is stored, or (should another writer share the database)
            # the seqs were taken: continue from whatever the store now ends with.
            self._head = await self._store.last_audit_record()
            raise
        self._head = records[-1]
        for entry in chained:
            _settle(entry.done, None)
        if self._head.seq - self._checkpointed_seq >= self._every:
            try:
                await self._checkpoint()
            except Exception:  # the records are durable; the next checkpoint covers them
                log.exception("audit_checkpoint_failed")

    async def _checkpoint(self) -> None:
        head = self._head
        if head is None or head.seq == self._checkpointed_seq:
            return
        assert self._key is not None, "start() loads the key"
        key_id, key = self._key
        ts = self._clock()
        signature = key.sign(checkpoint_message(head.seq, head.hash, ts)).hex()
        checkpoint = AuditCheckpoint(head.seq, head.hash, ts, key_id, signature)
        # the external file first: it is the copy that shows a truncated database
        await asyncio.to_thread(append_line, self.checkpoint_file, checkpoint_to_json(checkpoint))
        await self._store.save_audit_checkpoint(checkpoint)
        self._checkpointed_seq = head.seq


def _settle(future: "asyncio.Future[None]", error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled; the record is written all the same
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _log_failure(done: "asyncio.Future[None]") -> None:
    if not done.cancelled() and done.exception() is not None:
        log.error("audit_write_failed", error=str(done.exception()))
