"""Writes of one operation reach the store in the order they were made, and a save still
waiting its turn takes the newer state instead of queueing another (states only move
forward, so the newer record is what every waiting caller wanted stored)."""

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from workfleet.domain.operations import Operation
from workfleet.store.base import Store

log = structlog.get_logger(__name__)


class WriteChains:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._unsaved: dict[str, Operation] = {}

    def insert(self, op: Operation) -> "asyncio.Task[None]":
        return self._chain(op.operation_id, lambda: self._store.add_operation(op))

    def save(self, op: Operation) -> "asyncio.Task[None]":
        waiting = op.operation_id in self._unsaved
        self._unsaved[op.operation_id] = op
        if waiting:
            return self._tails[op.operation_id]
        return self._chain(op.operation_id, lambda: self._save_latest(op.operation_id))

    def pending(self, operation_id: str) -> "asyncio.Task[None] | None":
        return self._tails.get(operation_id)

    async def drain(self) -> None:
        tails = list(self._tails.values())
        if tails:
            await asyncio.gather(*tails, return_exceptions=True)

    async def _save_latest(self, operation_id: str) -> None:
        await self._store.save_operation(self._unsaved.pop(operation_id))

    def _chain(
        self, operation_id: str, write: Callable[[], Awaitable[None]]
    ) -> "asyncio.Task[None]":
        previous = self._tails.get(operation_id)

        async def after_previous() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            await write()

        task = asyncio.get_running_loop().create_task(after_previous())
        self._tails[operation_id] = task

        def done(t: "asyncio.Task[None]") -> None:
            if self._tails.get(operation_id) is t:
                del self._tails[operation_id]
            if not t.cancelled() and t.exception() is not None:
                log.error("store_write_failed", operation_id=operation_id, error=str(t.exception()))

        task.add_done_callback(done)
        return task
