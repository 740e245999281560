"""Worker sessions: each worker keeps one long request open to the backend. When its process
dies, the kernel closes the socket and the backend learns of it at once (the fast path of
failure detection); when the backend dies, the worker learns of it at once and re-registers."""

import asyncio
from collections.abc import Callable

from starlette.requests import Request


class SessionHub:
    def __init__(self, on_drop: Callable[[str], None]) -> None:
        self._on_drop = on_drop
        self._closing = asyncio.Event()
        self._ended: dict[str, asyncio.Event] = {}

    def close(self) -> None:
        """Release every held session (server shutdown): not a drop, so nothing is probed."""
        self._closing.set()

    def end(self, worker_id: str) -> None:
        """The backend forgot this worker (removed): end its session so it registers again."""
        ended = self._ended.get(worker_id)
        if ended is not None:
            ended.set()

    async def hold(self, worker_id: str, request: Request) -> None:
        ended = asyncio.Event()
        self._ended[worker_id] = ended
        disconnected = asyncio.ensure_future(_until_disconnect(request))
        waits = {
            disconnected,
            asyncio.ensure_future(self._closing.wait()),
            asyncio.ensure_future(ended.wait()),
        }
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if self._ended.get(worker_id) is ended:
            del self._ended[worker_id]
        if disconnected in done and not self._closing.is_set() and not ended.is_set():
            self._on_drop(worker_id)


async def _until_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
