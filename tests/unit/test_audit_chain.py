"""The audit hash chain and its verification (domain/audit.py): pure, no keys, no store.

Signatures are judged here by a stub; test_audit_log.py checks them with real Ed25519 keys."""

import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from workfleet.domain.audit import (
    GENESIS_HASH,
    AuditCheckpoint,
    AuditRecord,
    SignatureVerdict,
    actor_of,
    canonical,
    checkpoint_from_json,
    checkpoint_to_json,
    format_ts,
    next_record,
    unfiled_checkpoints,
    verify_chain,
)
from workfleet.domain.permissions import Principal

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def chain(n: int) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    for i in range(n):
        records.append(
            next_record(
                records[-1] if records else None,
                ts=T0 + timedelta(seconds=i),
                actor=f"key:k{i % 3} (alice)",
                action="submit",
                target=f"operation:op_{i}",
                outcome="ok",
                request_id=f"req-{i}",
                detail={"priority": i, "tags": ["a", "b"]},
            )
        )
    return records


def checkpoint_of(record: AuditRecord, key_id: str = "k1") -> AuditCheckpoint:
    return AuditCheckpoint(record.seq, record.hash, T0, key_id, "00" * 64)


def all_valid(_: AuditCheckpoint) -> SignatureVerdict:
    return "valid"


def problems(records: list[AuditRecord], checkpoints: Any = ()) -> list[tuple[int | None, str]]:
    report = verify_chain(records, checkpoints, all_valid)
    return [(p.seq, p.message) for p in report.problems]


def seqs_named(records: list[AuditRecord], checkpoints: Any = ()) -> list[int | None]:
    return [seq for seq, _ in problems(records, checkpoints)]


# ---- building the chain -------------------------------------------------------------------------


def test_the_first_record_follows_the_genesis_hash_and_each_next_one_its_predecessor() -> None:
    records = chain(3)
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS_HASH == "0" * 64
    assert [r.prev_hash for r in records[1:]] == [r.hash for r in records[:-1]]


def test_a_records_hash_is_sha256_of_the_previous_hash_and_its_canonical_json() -> None:
    first = chain(1)[0]
    expected_json = json.dumps(
        {
            "action": "submit",
            "actor": "key:k0 (alice)",
            "detail": {"priority": 0, "tags": ["a", "b"]},
            "outcome": "ok",
            "request_id": "req-0",
            "seq": 1,
            "target": "operation:op_0",
            "ts": "2026-03-01T12:00:00.123456Z",
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    assert canonical(**_fields(first)) == expected_json
    assert first.hash == hashlib.sha256(GENESIS_HASH.encode() + expected_json).hexdigest()


def _fields(record: AuditRecord) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "ts": record.ts,
        "actor": record.actor,
        "action": record.action,
        "target": record.target,
        "outcome": record.outcome,
        "request_id": record.request_id,
        "detail": record.detail,
    }


def test_timestamps_are_written_in_utc_with_microseconds_and_a_z() -> None:
    paris = datetime(2026, 3, 1, 13, 0, 0, tzinfo=timezone(timedelta(hours=1)))
    assert format_ts(paris) == "2026-03-01T12:00:00.000000Z"
    with pytest.raises(ValueError, match="timezone-aware"):
        format_ts(datetime(2026, 3, 1))  # noqa: DTZ001 - the point of the test


def test_the_same_instant_in_another_zone_hashes_the_same() -> None:
    utc = next_record(None, ts=T0, actor="system", action="a", target="t", outcome="ok")
    elsewhere = next_record(
        None,
        ts=T0.astimezone(timezone(timedelta(hours=-5))),
        actor="system",
        action="a",
        target="t",
        outcome="ok",
    )
    assert utc.hash == elsewhere.hash


def test_a_detail_over_the_size_limit_or_not_json_is_refused() -> None:
    with pytest.raises(ValueError, match="4096"):
        next_record(
            None, ts=T0, actor="a", action="a", target="t", outcome="ok", detail={"x": "y" * 5000}
        )
    with pytest.raises(TypeError):
        next_record(None, ts=T0, actor="a", action="a", target="t", outcome="ok", detail={"x": T0})


def test_actors_name_the_key_and_its_owner_or_the_shared_identity() -> None:
    assert (
        actor_of(Principal("admin", "alice", key_id="3f2a9c01d4e5")) == "key:3f2a9c01d4e5 (alice)"
    )
    assert actor_of(Principal("worker", "cluster")) == "cluster"


def test_a_checkpoint_line_reads_back_equal() -> None:
    checkpoint = AuditCheckpoint(7, "ab" * 32, T0, "0123456789abcdef", "cd" * 64)
    line = checkpoint_to_json(checkpoint)
    assert "\n" not in line
    assert checkpoint_from_json(line) == checkpoint
    with pytest.raises((ValueError, KeyError)):
        checkpoint_from_json('{"seq": 1}')


# ---- verification -------------------------------------------------------------------------------


def test_an_untouched_chain_verifies() -> None:
    records = chain(10)
    report = verify_chain(
        records, [checkpoint_of(records[4]), checkpoint_of(records[9])], all_valid
    )
    assert (report.ok, report.records, report.checkpoints, report.last_seq) == (True, 10, 2, 10)


def test_an_empty_log_verifies() -> None:
    assert verify_chain([], [], all_valid).ok


@pytest.mark.parametrize(
    "change",
    [
        {"actor": "key:k9 (mallory)"},
        {"action": "cancel"},
        {"target": "operation:op_x"},
        {"outcome": "denied"},
        {"request_id": "req-x"},
        {"detail": {"priority": 99, "tags": ["a", "b"]}},
        {"ts": T0 + timedelta(microseconds=1)},
    ],
)
def test_changing_any_field_of_record_k_names_k_alone(change: dict[str, Any]) -> None:
    records = chain(10)
    records[4] = replace(records[4], **change)
    assert problems(records) == [(5, "edited: the content does not match its hash")]


def test_flipping_one_byte_of_the_stored_hash_or_link_names_that_record_alone() -> None:
    for field in ("hash", "prev_hash"):
        records = chain(10)
        value = getattr(records[4], field)
        flipped = ("1" if value[0] == "0" else "0") + value[1:]
        records[4] = replace(records[4], **{field: flipped})
        assert set(seqs_named(records)) == {5}, field


def test_a_record_rewritten_with_a_fresh_hash_breaks_the_link_of_the_next() -> None:
    records = chain(10)
    forged = next_record(
        records[3],
        ts=records[4].ts,
        actor="key:k9 (mallory)",
        action="submit",
        target="operation:op_4",
        outcome="ok",
    )
    records[4] = forged
    assert problems(records) == [(6, "prev_hash does not link to the record at seq 5")]


def test_a_deleted_record_is_a_gap_naming_its_seq() -> None:
    records = chain(10)
    del records[4]
    assert problems(records) == [(5, "missing: record 5 was deleted")]


def test_deleted_records_in_a_row_are_one_gap_naming_the_range() -> None:
    records = chain(10)
    del records[3:6]
    assert problems(records) == [(4, "missing: records 4-6 were deleted")]


def test_deleting_the_first_record_is_a_gap_at_seq_1() -> None:
    assert seqs_named(chain(5)[1:]) == [1]


def test_two_swapped_records_are_reported_out_of_order() -> None:
    records = chain(10)
    records[4], records[5] = records[5], records[4]
    assert problems(records) == [(5, "out of order: read after seq 6")]


def test_two_records_swapped_under_their_seqs_fail_both() -> None:
    """What swapping two rows' contents in a table looks like: each seq holds the other's."""
    records = chain(10)
    a, b = records[4], records[5]
    records[4], records[5] = replace(b, seq=5), replace(a, seq=6)
    assert {5, 6} <= set(seqs_named(records))


def test_a_duplicated_record_is_reported() -> None:
    records = chain(5)
    records.insert(3, records[2])
    assert problems(records) == [(3, "the record appears twice")]


def test_a_chain_rewritten_consistently_is_caught_by_a_checkpoint_it_passes() -> None:
    records = chain(10)
    checkpoints = [checkpoint_of(records[7])]
    rewritten = records[:4]
    for old in records[4:]:
        rewritten.append(
            next_record(
                rewritten[-1],
                ts=old.ts,
                actor="key:k9 (mallory)",
                action=old.action,
                target=old.target,
                outcome=old.outcome,
            )
        )
    assert problems(rewritten) == []  # self-consistent: the chain alone cannot tell
    assert problems(rewritten, checkpoints) == [
        (8, "the record's hash differs from the signed checkpoint's")
    ]


def test_a_tail_cut_below_a_checkpoint_is_reported_as_truncation() -> None:
    records = chain(10)
    assert problems(records[:7], [checkpoint_of(records[9])]) == [
        (10, "truncated: a checkpoint covers seq 10 but the log ends at seq 7")
    ]


def test_a_tail_cut_after_the_newest_checkpoint_goes_unnoticed() -> None:
    """The documented limit: records after the newest checkpoint are not pinned yet."""
    records = chain(10)
    assert problems(records[:7], [checkpoint_of(records[5])]) == []


def test_checkpoints_with_a_bad_signature_or_an_unknown_key_are_reported() -> None:
    records = chain(10)
    forged = checkpoint_of(records[4], key_id="forged")
    stranger = checkpoint_of(records[9], key_id="stranger")

    def verdict(checkpoint: AuditCheckpoint) -> SignatureVerdict:
        if checkpoint.key_id == "forged":
            return "invalid"
        return "unknown_key" if checkpoint.key_id == "stranger" else "valid"

    report = verify_chain(records, [forged, stranger], verdict)
    assert [(p.seq, p.message) for p in report.problems] == [
        (5, "checkpoint signature does not verify (key forged)"),
        (10, "checkpoint signed by an unknown key stranger"),
    ]


def test_a_forged_checkpoint_beyond_the_head_is_reported_as_forged_not_as_truncation() -> None:
    records = chain(5)
    fake = AuditCheckpoint(99, "ab" * 32, T0, "k1", "00" * 64)
    report = verify_chain(records, [fake], lambda _: "invalid")
    assert [p.seq for p in report.problems] == [99]
    assert "signature" in report.problems[0].message


def test_the_same_checkpoint_from_the_file_and_the_database_counts_once() -> None:
    records = chain(5)
    checkpoint = checkpoint_of(records[4])
    assert verify_chain(records, [checkpoint, checkpoint], all_valid).checkpoints == 1


def test_every_problem_is_listed_in_seq_order() -> None:
    records = chain(20)
    records[2] = replace(records[2], actor="x")
    del records[10]
    records[15] = replace(records[15], outcome="x")
    assert seqs_named(records) == [3, 11, 17]


def test_a_stored_checkpoint_missing_from_the_file_is_reported() -> None:
    records = chain(5)
    kept, lost = checkpoint_of(records[1]), checkpoint_of(records[3])
    found = unfiled_checkpoints(stored=[kept, lost], filed=[kept])
    assert [(p.seq, p.message) for p in found] == [
        (4, "checkpoint missing from the external checkpoint file")
    ]
    report = verify_chain(records, [kept, lost], all_valid, found_before=found)
    assert not report.ok
    assert str(report.problems[0]) == "seq 4: checkpoint missing from the external checkpoint file"
