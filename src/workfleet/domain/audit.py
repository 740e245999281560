"""The tamper-evident audit log: records in a SHA-256 hash chain, signed checkpoints, and the
verification that finds edits, deletions, reordering and truncation.

Each record's hash covers its content and the hash of the record before it, so changing,
removing or moving one record breaks the chain at that point. Rewriting the whole chain from
some record on would keep it self-consistent; signed checkpoints (kept in the database and in a
file outside it) pin the head hash at known points, so that needs the signing key too. Records
after the newest checkpoint can still be cut off unnoticed: checkpoint often.

Pure: the caller supplies timestamps and the signature check (see backend/audit.py).
"""

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any, Literal

from workfleet.domain.permissions import Principal

GENESIS_HASH = "0" * 64
MAX_DETAIL_BYTES = 4096  # audit rows stay small; bulky context belongs in logs or traces


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audited event. `actor` says who, e.g. `key:3f2a9c01d4e5 (alice)`, `cluster`,
    `worker:worker-1 serial=ab12...`, `system`."""

    seq: int
    ts: datetime
    actor: str
    action: str
    target: str
    outcome: str
    request_id: str | None
    detail: Mapping[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True, slots=True)
class AuditCheckpoint:
    """A signed statement that record `seq` had hash `hash`; `signature` is hex."""

    seq: int
    hash: str
    ts: datetime
    key_id: str
    signature: str


def format_ts(ts: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a Z: one spelling per instant, so hashes and
    signatures never depend on how a timestamp happened to be written."""
    if ts.tzinfo is None:
        raise ValueError("audit timestamps must be timezone-aware")
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_ts(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def _canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def canonical(
    *,
    seq: int,
    ts: datetime,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    request_id: str | None,
    detail: Mapping[str, Any],
) -> bytes:
    """The bytes a record's hash covers (everything but the chain fields)."""
    return _canonical_json(
        {
            "seq": seq,
            "ts": format_ts(ts),
            "actor": actor,
            "action": action,
            "target": target,
            "outcome": outcome,
            "request_id": request_id,
            "detail": dict(detail),
        }
    )


def chain_hash(prev_hash: str, encoded: bytes) -> str:
    return hashlib.sha256(prev_hash.encode() + encoded).hexdigest()


def _content(record: AuditRecord) -> bytes:
    return canonical(
        seq=record.seq,
        ts=record.ts,
        actor=record.actor,
        action=record.action,
        target=record.target,
        outcome=record.outcome,
        request_id=record.request_id,
        detail=record.detail,
    )


def next_record(
    head: AuditRecord | None,
    *,
    ts: datetime,
    actor: str,
    action: str,
    target: str,
    outcome: str,
    request_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
) -> AuditRecord:
    """The record that follows `head` (None: the first record of the log)."""
    detail = dict(detail or {})
    if len(_canonical_json(detail)) > MAX_DETAIL_BYTES:
        raise ValueError(f"audit detail is over {MAX_DETAIL_BYTES} bytes")
    seq = head.seq + 1 if head else 1
    prev_hash = head.hash if head else GENESIS_HASH
    encoded = canonical(
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        request_id=request_id,
        detail=detail,
    )
    return AuditRecord(
        seq=seq,
        ts=ts,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        request_id=request_id,
        detail=detail,
        prev_hash=prev_hash,
        hash=chain_hash(prev_hash, encoded),
    )


def checkpoint_message(seq: int, head_hash: str, ts: datetime) -> bytes:
    """What a checkpoint signs: `seq|hash|ts`."""
    return f"{seq}|{head_hash}|{format_ts(ts)}".encode()


def checkpoint_to_json(checkpoint: AuditCheckpoint) -> str:
    """One line of the external checkpoint file."""
    fields = {
        "seq": checkpoint.seq,
        "hash": checkpoint.hash,
        "ts": format_ts(checkpoint.ts),
        "key_id": checkpoint.key_id,
        "signature": checkpoint.signature,
    }
    return _canonical_json(fields).decode()


def checkpoint_from_json(line: str) -> AuditCheckpoint:
    """Raises ValueError (or KeyError, TypeError) on anything that is not a checkpoint line."""
    fields = json.loads(line)
    return AuditCheckpoint(
        seq=int(fields["seq"]),
        hash=str(fields["hash"]),
        ts=parse_ts(fields["ts"]),
        key_id=str(fields["key_id"]),
        signature=str(fields["signature"]),
    )


def actor_of(principal: Principal) -> str:
    if principal.key_id is not None:
        return f"key:{principal.key_id} ({principal.name})"
    if principal.certificate_serial is not None:  # mtls: who, and with which certificate
        return (
            f"{principal.role}:{principal.name} serial={principal.certificate_serial:x} "
            f"spki={(principal.key_fingerprint or '')[:16]}"
        )
    return principal.name  # `cluster` (the shared secret) or `local` (auth mode none)


# ---- verification -------------------------------------------------------------------------------

SignatureVerdict = Literal["valid", "invalid", "unknown_key"]
VerifySignature = Callable[[AuditCheckpoint], SignatureVerdict]


@dataclass(frozen=True, slots=True)
class Problem:
    """`seq` is the record concerned; None for a problem with no record (an unreadable line)."""

    seq: int | None
    message: str

    def __str__(self) -> str:
        return self.message if self.seq is None else f"seq {self.seq}: {self.message}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    records: int
    checkpoints: int
    last_seq: int
    problems: tuple[Problem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_chain(
    records: Sequence[AuditRecord],
    checkpoints: Iterable[AuditCheckpoint],
    verify_signature: VerifySignature,
    *,
    found_before: Iterable[Problem] = (),
) -> VerifyReport:
    """Every problem found, by seq. `records` in the order they were read; `found_before`:
    problems the caller met while loading them (so one report says everything)."""
    problems = [*found_before, *_order_problems(records)]
    by_seq: dict[int, AuditRecord] = {}
    for record in records:
        by_seq.setdefault(record.seq, record)
    chain = [by_seq[seq] for seq in sorted(by_seq)]
    problems += _chain_problems(chain)
    distinct = list(dict.fromkeys(checkpoints))  # the file and the database hold the same ones
    last_seq = chain[-1].seq if chain else 0
    for checkpoint in distinct:
        problems += _checkpoint_problems(checkpoint, by_seq, last_seq, verify_signature)
    problems.sort(key=lambda p: -1 if p.seq is None else p.seq)
    return VerifyReport(len(records), len(distinct), last_seq, tuple(problems))


def unfiled_checkpoints(
    stored: Iterable[AuditCheckpoint], filed: Iterable[AuditCheckpoint]
) -> list[Problem]:
    """Checkpoints go to the external file before the database, so each stored one must be in
    the file too: one that is not means the file lost lines."""
    in_file = set(filed)
    return [
        Problem(cp.seq, "checkpoint missing from the external checkpoint file")
        for cp in stored
        if cp not in in_file
    ]


def _order_problems(records: Sequence[AuditRecord]) -> list[Problem]:
    problems = []
    for before, after in pairwise(records):
        if after.seq == before.seq:
            problems.append(Problem(after.seq, "the record appears twice"))
        elif after.seq < before.seq:
            problems.append(Problem(after.seq, f"out of order: read after seq {before.seq}"))
    return problems


def _chain_problems(chain: list[AuditRecord]) -> list[Problem]:
    """`chain` sorted by seq, one record per seq."""
    problems = []
    # What the next record may link to: the previous record's stored hash or its recomputed
    # one. They differ only when that record is itself reported as edited; accepting either
    # names the edited record alone rather than it and its successor.
    links = {GENESIS_HASH}
    expected = 1
    for record in chain:
        if record.seq > expected:
            # reported once as a gap, not again as the broken link it causes
            missing = (
                f"record {expected} was"
                if record.seq == expected + 1
                else f"records {expected}-{record.seq - 1} were"
            )
            problems.append(Problem(expected, f"missing: {missing} deleted"))
        elif record.prev_hash not in links:
            problems.append(
                Problem(record.seq, f"prev_hash does not link to the record at seq {expected - 1}")
            )
        recomputed = chain_hash(record.prev_hash, _content(record))
        if recomputed != record.hash:
            problems.append(Problem(record.seq, "edited: the content does not match its hash"))
        links = {record.hash, recomputed}
        expected = record.seq + 1
    return problems


def _checkpoint_problems(
    checkpoint: AuditCheckpoint,
    by_seq: Mapping[int, AuditRecord],
    last_seq: int,
    verify_signature: VerifySignature,
) -> list[Problem]:
    seq = checkpoint.seq
    verdict = verify_signature(checkpoint)
    if verdict == "unknown_key":
        return [Problem(seq, f"checkpoint signed by an unknown key {checkpoint.key_id}")]
    if verdict == "invalid":
        return [Problem(seq, f"checkpoint signature does not verify (key {checkpoint.key_id})")]
    if seq > last_seq:
        return [
            Problem(
                seq,
                f"truncated: a checkpoint covers seq {seq} but the log ends at seq {last_seq}",
            )
        ]
    record = by_seq.get(seq)
    if record is None:
        return []  # inside a gap, already reported
    if record.hash != checkpoint.hash:
        return [Problem(seq, "the record's hash differs from the signed checkpoint's")]
    return []
