"""Queue order: priority with aging, then fair share between submitters.

An operation's effective priority is its priority plus one level per `interval_s` it has
waited. So nothing starves: with priorities at most P, an operation of priority p goes before
every operation submitted more than (P - p + 1) intervals after it. Among equal effective
priorities, the submitter with the fewest running operations goes first, then the one served
least recently, then the oldest operation. One submitter's 1,000 backtests therefore don't
hold back another's one: it takes the next free slot.
"""

import heapq
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from workfleet.domain.operations import Operation, Requirements

DEFAULT_AGING_INTERVAL_S: Final = 300.0


@dataclass(frozen=True, slots=True)
class Aging:
    interval_s: float = DEFAULT_AGING_INTERVAL_S

    def __post_init__(self) -> None:
        if not self.interval_s > 0:
            raise ValueError(f"the aging interval must be positive, not {self.interval_s}")


def effective_priority(op: Operation, now: datetime, aging: Aging) -> int:
    waited_s = max(0.0, (now - op.created_at).total_seconds())
    return op.priority + int(waited_s // aging.interval_s)


class ShareLedger:
    """Who is being served: running operations per submitter, and who was served last."""

    def __init__(self) -> None:
        self._running: dict[str, int] = {}
        self._last_served: dict[str, int] = {}
        self._served = itertools.count(1)

    def started(self, submitter: str) -> None:
        self._running[submitter] = self._running.get(submitter, 0) + 1
        self._last_served[submitter] = next(self._served)

    def stopped(self, submitter: str) -> None:
        left = self._running.get(submitter, 0) - 1
        if left > 0:
            self._running[submitter] = left
        else:
            self._running.pop(submitter, None)

    def running(self, submitter: str) -> int:
        return self._running.get(submitter, 0)

    def share_key(self, submitter: str) -> tuple[int, int]:
        """Smaller goes first: fewer running operations, then served less recently."""
        return (self._running.get(submitter, 0), self._last_served.get(submitter, 0))


DispatchKey = tuple[int, int, int, datetime]


def dispatch_key(op: Operation, now: datetime, aging: Aging, ledger: ShareLedger) -> DispatchKey:
    """Smaller goes first."""
    running, last_served = ledger.share_key(op.owner)
    return (-effective_priority(op, now, aging), running, last_served, op.created_at)


def fair_order(
    ops: Iterable[Operation], now: datetime, aging: Aging, ledger: ShareLedger
) -> list[Operation]:
    """The pending operations in dispatch order (stable: equal keys keep their order)."""
    return sorted(ops, key=lambda op: dispatch_key(op, now, aging, ledger))


BucketKey = tuple[str, int, str, Requirements]  # submitter, priority, type, requirements


@dataclass(order=True, slots=True)
class _Entry:
    sort_key: tuple[datetime, int]
    operation: Operation = field(compare=False)


class FairQueue:
    """Pending operations in buckets of (submitter, priority, type, requirements).

    Within a bucket the oldest operation has the highest effective priority and the same
    share, so it is the bucket's best: the dispatcher ranks the buckets' heads only, which
    costs O(buckets), and an operation no worker can take blocks only its own bucket.
    """

    def __init__(self, aging: Aging | None = None) -> None:
        self.aging = aging or Aging()
        self._buckets: dict[BucketKey, list[_Entry]] = {}
        self._live: dict[str, tuple[BucketKey, int]] = {}  # operation -> its bucket, its entry
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, operation_id: object) -> bool:
        return operation_id in self._live

    def push(self, op: Operation) -> None:
        if op.operation_id in self._live:
            return
        key = (op.owner, op.priority, op.operation_type, op.requirements)
        seq = next(self._counter)
        heapq.heappush(self._buckets.setdefault(key, []), _Entry((op.created_at, seq), op))
        self._live[op.operation_id] = (key, seq)

    def discard(self, operation_id: str) -> None:
        """Forget an operation; its entry is dropped lazily when it reaches its bucket's head."""
        self._live.pop(operation_id, None)

    def heads(
        self, now: datetime, ledger: ShareLedger
    ) -> list[tuple[BucketKey, Operation, DispatchKey]]:
        """Each bucket's first operation, best first."""
        heads = []
        for key in list(self._buckets):
            bucket = self._buckets[key]
            while bucket and not self._is_live(key, bucket[0]):
                heapq.heappop(bucket)
            if not bucket:
                del self._buckets[key]
                continue
            op = bucket[0].operation
            heads.append((key, op, dispatch_key(op, now, self.aging, ledger)))
        heads.sort(key=lambda head: (head[2], head[0][0]))
        return heads

    def depths(self) -> dict[tuple[str, int], int]:
        """Queued operations by (submitter, priority as submitted)."""
        counts: dict[tuple[str, int], int] = {}
        for (submitter, priority, _, _), _ in self._live.values():
            counts[(submitter, priority)] = counts.get((submitter, priority), 0) + 1
        return counts

    def pop(self, key: BucketKey) -> Operation:
        """Take the head of a bucket that `heads` just listed."""
        entry = heapq.heappop(self._buckets[key])
        self._live.pop(entry.operation.operation_id, None)
        return entry.operation

    def _is_live(self, key: BucketKey, entry: _Entry) -> bool:
        # a discarded operation pushed again has a newer entry: the old one is stale
        return self._live.get(entry.operation.operation_id) == (key, entry.sort_key[1])
