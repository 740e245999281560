"""A small TCP proxy for fault injection on one machine (no root, no netem): put one in front
of a worker or the backend and hurt the link. Each connection carries bytes two ways: `up`
(client to target: the requests) and `down` (target to client: the responses).

- `partition()`: every connection, old and new, stalls both ways (nothing is read, nothing is
  refused, as when packets are dropped).
- `latency(delay_s, jitter_s, direction)`: each chunk is delivered at its arrival time plus a
  delay drawn in delay ± jitter, in order, through a timestamped queue (sleeping before each
  write instead would add the delays up, chunk after chunk).
- `lose_responses()`: the target's bytes are dropped: a request takes effect and its caller
  never hears back. A connection that lost bytes stays silent for good (a broken path: on a
  live one TCP would retransmit them), so the caller's own timeout decides, as with a real
  lost response; it is closed when the caller gives up.

`heal()` lifts all of them (a connection that lost bytes stays silent)."""

import asyncio
import contextlib
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

Direction = Literal["up", "down"]
Directions = Literal["up", "down", "both"]
CHUNK = 65536


@dataclass(frozen=True, slots=True)
class Latency:
    delay_s: float
    jitter_s: float = 0.0

    def draw(self, rng: random.Random) -> float:
        return max(0.0, self.delay_s + rng.uniform(-self.jitter_s, self.jitter_s))


@dataclass(slots=True)
class _Link:
    """One proxied connection: the writers towards its client and its target."""

    client: asyncio.StreamWriter
    target: asyncio.StreamWriter
    lost: bool = False  # response bytes were dropped: silent towards the client from now on


class Proxy:
    def __init__(
        self, target_host: str, target_port: int, *, listen_port: int = 0, seed: int = 0
    ) -> None:
        self.target = (target_host, target_port)
        self._listen_port = listen_port
        self._open = asyncio.Event()
        self._open.set()
        self._latency: dict[Direction, Latency | None] = {"up": None, "down": None}
        self._losing = False
        self._rng = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.responses_lost = 0  # connections whose response bytes were dropped

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> "Proxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        return self

    def partition(self) -> None:
        self._open.clear()

    def latency(
        self, delay_s: float, jitter_s: float = 0.0, direction: Directions = "both"
    ) -> None:
        chosen: tuple[Direction, ...] = ("up", "down") if direction == "both" else (direction,)
        for way in chosen:
            self._latency[way] = Latency(delay_s, jitter_s)

    def lose_responses(self) -> None:
        self._losing = True

    def heal(self) -> None:
        self._latency = {"up": None, "down": None}
        self._losing = False
        self._open.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        link = _Link(client=writer, target=up_writer)
        ways: tuple[tuple[asyncio.StreamReader, Direction], ...] = (
            (reader, "up"),
            (up_reader, "down"),
        )
        for source, way in ways:
            queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
            self._spawn(self._read(source, queue, way, link))
            self._spawn(self._deliver(queue, way, link))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read(
        self,
        source: asyncio.StreamReader,
        queue: "asyncio.Queue[tuple[float, bytes] | None]",
        way: Direction,
        link: _Link,
    ) -> None:
        """Stamp each chunk with the time it is due; None ends the stream."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                await self._open.wait()
                data = await source.read(CHUNK)
                if not data:
                    break
                if way == "down" and (self._losing or link.lost):
                    if not link.lost:
                        link.lost = True
                        self.responses_lost += 1
                    continue
                latency = self._latency[way]
                due = loop.time() + (latency.draw(self._rng) if latency else 0.0)
                queue.put_nowait((due, data))
        queue.put_nowait(None)

    async def _deliver(
        self, queue: "asyncio.Queue[tuple[float, bytes] | None]", way: Direction, link: _Link
    ) -> None:
        sink = link.target if way == "up" else link.client
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - loop.time()))
                await self._open.wait()  # partitioned while in flight: hold the bytes
                sink.write(data)
                await sink.drain()
        if way == "down" and link.lost:
            return  # the target hung up: its caller still hears nothing, until it gives up
        with contextlib.suppress(OSError):
            sink.close()
            if way == "up" and link.lost:  # the caller gave up on its silent connection
                link.client.close()
