"""The fault-injection proxy's toxics against a real echo server on loopback (sockets, so not
a unit test): latency delays without adding up, keeps the byte order, lost responses reach
the server and never the caller. Lower bounds only: an upper bound on a busy machine flakes
(the one exception is ten times the expected time, there to catch delays adding up)."""

import asyncio
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from workfleet.harness.proxy import Latency, Proxy


@dataclass
class Echo:
    """Echoes every chunk back; remembers what it received and whether the caller hung up."""

    received: bytearray = field(default_factory=bytearray)
    hung_up: asyncio.Event = field(default_factory=asyncio.Event)
    port: int = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            self.received += data
            writer.write(data)
            await writer.drain()
        self.hung_up.set()
        writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[Echo]:
    found = Echo()
    server = await asyncio.start_server(found.serve, "127.0.0.1", 0)
    found.port = server.sockets[0].getsockname()[1]
    yield found
    server.close()


@pytest.fixture
async def proxy(echo: Echo) -> AsyncIterator[Proxy]:
    started = await Proxy("127.0.0.1", echo.port, seed=3).start()
    yield started
    await started.close()


async def connect(proxy: Proxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def round_trip(proxy: Proxy, data: bytes) -> float:
    reader, writer = await connect(proxy)
    began = time.monotonic()
    writer.write(data)
    assert await reader.readexactly(len(data)) == data
    elapsed = time.monotonic() - began
    writer.close()
    return elapsed


def test_a_drawn_delay_stays_within_its_jitter() -> None:
    rng = random.Random(1)
    draws = [Latency(0.2, 0.1).draw(rng) for _ in range(1000)]
    assert all(0.1 <= d <= 0.3 for d in draws)
    assert max(draws) - min(draws) > 0.15  # really jittered
    wide = [Latency(0.01, 0.05).draw(rng) for _ in range(1000)]  # jitter above the delay
    assert min(wide) == 0.0 and all(d >= 0.0 for d in wide)  # clamped, never negative


async def test_latency_delays_each_direction_it_is_set_on(proxy: Proxy) -> None:
    proxy.latency(0.2, direction="up")
    assert await round_trip(proxy, b"x") >= 0.2
    proxy.latency(0.2)  # both ways: the round trip pays it twice
    assert await round_trip(proxy, b"x") >= 0.4
    proxy.heal()
    assert await round_trip(proxy, b"x") < 0.2 * 10  # gone (a bound ten times over)


async def test_delays_of_successive_chunks_overlap_instead_of_adding_up(proxy: Proxy) -> None:
    proxy.latency(0.3, direction="up")
    reader, writer = await connect(proxy)
    began = time.monotonic()
    for n in range(10):  # ten separate chunks, each delayed 0.3 s from its own arrival
        writer.write(bytes([n]))
        await writer.drain()
        await asyncio.sleep(0.05)
    assert await reader.readexactly(10) == bytes(range(10))
    elapsed = time.monotonic() - began
    writer.close()
    assert elapsed >= 0.3
    assert elapsed < 10 * 0.3  # what sleeping 0.3 s before each write would at least cost


async def test_jitter_never_reorders_bytes(proxy: Proxy) -> None:
    proxy.latency(0.02, jitter_s=0.02)
    reader, writer = await connect(proxy)
    sent = bytes(range(256)) * 4
    for start in range(0, len(sent), 16):
        writer.write(sent[start : start + 16])
        await writer.drain()
        await asyncio.sleep(0.002)
    assert await reader.readexactly(len(sent)) == sent
    writer.close()


async def test_a_lost_response_reaches_the_server_never_the_caller(
    proxy: Proxy, echo: Echo
) -> None:
    reader, writer = await connect(proxy)
    proxy.lose_responses()
    writer.write(b"charge the card")
    await writer.drain()
    for _ in range(100):
        if echo.received:
            break
        await asyncio.sleep(0.01)
    assert bytes(echo.received) == b"charge the card"  # the request took effect
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)
    assert proxy.responses_lost == 1

    proxy.heal()
    writer.write(b"again")  # healed, but this connection's path is broken for good
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.5)
    await round_trip(proxy, b"new")  # a new connection works (round_trip checks the echo)

    writer.close()  # the caller gives up: the server hears it
    await asyncio.wait_for(echo.hung_up.wait(), 5)


async def test_a_partition_stalls_an_open_connection_until_healed(proxy: Proxy) -> None:
    reader, writer = await connect(proxy)
    writer.write(b"a")
    assert await reader.readexactly(1) == b"a"
    proxy.partition()
    writer.write(b"b")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.read(1), 0.3)
    proxy.heal()
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"b"
    writer.close()
