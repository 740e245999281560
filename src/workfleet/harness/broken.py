"""Backends broken on purpose, to prove that the ledger checker (harness/ledger.py) sees each
kind of bug it claims to see: a checker that passes a broken backend is worth nothing.

Test only. `workfleet backend` takes one of these orchestrators instead of the real one when
the environment variable WORKFLEET_TEST_BREAK names a mode (`workfleet loadtest ...
--break-backend MODE` sets it for the backend it starts); it then logs a warning at startup
that it is deliberately broken, and refuses to start for a mode it does not know. It is not a
setting: never set it on a real backend.

Each mode is one small subclass of Orchestrator that breaks one guarantee, and names the
invariant of the ledger that must catch it (`catches`). The bugs hit every EVERY-th event
rather than all of them, so the checker has to find a few bad operations among good ones."""

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any, ClassVar

from workfleet.backend.admission import Submission
from workfleet.backend.orchestrator import Orchestrator
from workfleet.backend.writes import WriteChains
from workfleet.domain import operations as ops_domain
from workfleet.domain.operations import Lease, Operation, Outcome
from workfleet.domain.workers import Worker
from workfleet.store.base import Store

ENV = "WORKFLEET_TEST_BREAK"
EVERY = 3


class Broken(Orchestrator):
    catches: ClassVar[str]  # the ledger invariant this bug must show up in

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._events = itertools.count(1)

    def _now_and_then(self) -> bool:
        """True for every EVERY-th call: when the bug strikes."""
        return next(self._events) % EVERY == 0


class ForgetSubmits(Broken):
    """An acknowledged operation is never written (as if the answer went out before a write
    that never reached the disk): the backend has no record of it."""

    catches = "lost"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writes = _ForgetfulWrites(self.store, self._now_and_then)


class _ForgetfulWrites(WriteChains):
    def __init__(self, store: Store, now_and_then: Callable[[], bool]) -> None:
        super().__init__(store)
        self._now_and_then = now_and_then

    def insert(self, op: Operation) -> "asyncio.Task[None]":
        if self._now_and_then():
            return asyncio.ensure_future(asyncio.sleep(0))  # "written"; its later updates fail
        return super().insert(op)


class StrandSubmits(Broken):
    """An acknowledged operation is stored but never queued: nobody ever runs it."""

    catches = "stuck"

    async def submit(self, submission: Submission, **kwargs: Any) -> tuple[Operation, bool]:
        op, created = await super().submit(submission, **kwargs)
        if created and self._now_and_then():
            self.queue.discard(op.operation_id)  # before the dispatcher could look (no await)
        return op, created


class DuplicateSubmits(Broken):
    """A submit is stored twice, the second time without its idempotency key (what a retried
    submit without deduplication does): an operation nobody was told about runs too."""

    catches = "unexpected"

    async def submit(self, submission: Submission, **kwargs: Any) -> tuple[Operation, bool]:
        op, created = await super().submit(submission, **kwargs)
        if created and self._now_and_then():
            await super().submit(submission, **(kwargs | {"idempotency_key": None}))
        return op, created


class InventResults(Broken):
    """An operation placed on a worker is recorded completed without being sent to it: an
    outcome no worker produced."""

    catches = "stale_accepted"

    def next_assignment(self) -> tuple[Operation, Worker] | None:
        assignment = super().next_assignment()
        if assignment is None or not self._now_and_then():
            return assignment
        op, _ = assignment
        assert op.lease is not None
        self._finish(ops_domain.finish(op, op.lease, "completed", at=self.clock()))
        return self.next_assignment()  # the next one is dispatched instead


class AcceptStale(Broken):
    """Fencing skipped: a report quoting a superseded lease is taken as the current attempt's
    (progress too, so the stale attempt lives on to send its result). The frozen scenario's
    paused worker then records its late result over the re-run's."""

    catches = "stale_accepted"

    def _unfenced(self, operation_id: str, lease: Lease) -> Lease:
        op = self.active.get(operation_id)
        return op.lease if op is not None and op.lease is not None else lease

    async def report_progress(
        self, operation_id: str, lease: Lease, progress: Any, *, started_at: datetime | None
    ) -> None:
        current = self._unfenced(operation_id, lease)
        await super().report_progress(operation_id, current, progress, started_at=started_at)

    async def report_completion(
        self, operation_id: str, lease: Lease, outcome: Outcome, **kwargs: Any
    ) -> Operation:
        current = self._unfenced(operation_id, lease)
        return await super().report_completion(operation_id, current, outcome, **kwargs)


class RedispatchFinished(Broken):
    """A completed operation goes back to the queue (a requeue that forgets to check the
    state): it leaves its terminal state, runs again and ends a second time."""

    catches = "double_terminal"

    async def report_completion(
        self, operation_id: str, lease: Lease, outcome: Outcome, **kwargs: Any
    ) -> Operation:
        finished = await super().report_completion(operation_id, lease, outcome, **kwargs)
        if finished.status == "completed" and self._now_and_then():
            again = replace(finished, status="pending", lease=None)
            self._remember(again)
            self._enqueue(again)
            self.on_work()
        return finished


class Miscount(Broken):
    """A completion counted twice in workfleet_operations_completed_total."""

    catches = "metrics_mismatch"

    async def report_completion(
        self, operation_id: str, lease: Lease, outcome: Outcome, **kwargs: Any
    ) -> Operation:
        finished = await super().report_completion(operation_id, lease, outcome, **kwargs)
        if self._now_and_then():
            self.metrics.completed.labels(finished.operation_type, finished.status).inc()
        return finished


MODES: dict[str, type[Broken]] = {
    "forget-submits": ForgetSubmits,
    "strand-submits": StrandSubmits,
    "duplicate-submits": DuplicateSubmits,
    "invent-results": InventResults,
    "accept-stale": AcceptStale,
    "redispatch-finished": RedispatchFinished,
    "miscount": Miscount,
}


def broken_orchestrator(mode: str) -> type[Broken]:
    """The orchestrator of a mode; ValueError naming the modes for any other name."""
    try:
        return MODES[mode]
    except KeyError:
        raise ValueError(f"unknown {ENV} mode {mode!r}; one of: {', '.join(MODES)}") from None
