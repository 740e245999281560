"""The pending queue: priority order (higher first, then first come) within eligibility classes.

Operations with the same type and requirements can run on the same workers, so they form a
class; the dispatcher looks only at the head of each class. That keeps one unplaceable
operation from blocking others (no head-of-line blocking across types) and makes a placement
round cost O(classes), not O(pending operations).
"""

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field

from workfleet.domain.operations import Operation, Requirements

ClassKey = tuple[str, Requirements]


@dataclass(order=True, slots=True)
class _Entry:
    sort_key: tuple[int, int]
    operation_id: str = field(compare=False)


class PendingQueue:
    def __init__(self) -> None:
        self._classes: dict[ClassKey, list[_Entry]] = {}
        self._live: dict[str, ClassKey] = {}
        self._counter = itertools.count()

    def __len__(self) -> int:
        return len(self._live)

    def __contains__(self, operation_id: object) -> bool:
        return operation_id in self._live

    def push(self, op: Operation) -> None:
        if op.operation_id in self._live:
            return
        key = (op.operation_type, op.requirements)
        entry = _Entry((-op.priority, next(self._counter)), op.operation_id)
        heapq.heappush(self._classes.setdefault(key, []), entry)
        self._live[op.operation_id] = key

    def discard(self, operation_id: str) -> None:
        """Forget an operation; its heap entry is dropped lazily when it reaches the head."""
        self._live.pop(operation_id, None)

    def heads(self) -> Iterator[tuple[ClassKey, str, tuple[int, int]]]:
        """The first live operation of every class, with its sort key."""
        for key in list(self._classes):
            heap = self._classes[key]
            while heap and heap[0].operation_id not in self._live:
                heapq.heappop(heap)
            if not heap:
                del self._classes[key]
                continue
            yield key, heap[0].operation_id, heap[0].sort_key

    def pop(self, key: ClassKey) -> str:
        entry = heapq.heappop(self._classes[key])
        self._live.pop(entry.operation_id, None)
        return entry.operation_id
