"""One group's IPC socket under abuse, over real unix sockets: caps, timeouts, rate limits, nesting."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.ipc import REFUSALS_PER_S, GroupIpc
from gateway.ipc_limits import IpcLimits
from gateway.ipc_protocol import Caller, Turn
from tests.fakes.ipc_services import RecordingServices

LIMITS = IpcLimits(
    max_connections=4,
    max_line_bytes=64 * 1024,
    line_timeout_s=0.3,
    idle_timeout_s=60,
    requests_per_s=5,
    requests_burst=10,
)


@pytest.fixture
async def ipc(tmp_path: Path) -> AsyncIterator[GroupIpc]:
    server = GroupIpc(Caller("team", False, "tg:-1"), tmp_path / "ipc.sock", RecordingServices(), LIMITS)
    await server.start()
    yield server
    await server.close()


async def connect(ipc: GroupIpc) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(str(ipc.socket_path))


async def call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: dict | bytes) -> dict:
    raw = request if isinstance(request, bytes) else json.dumps(request).encode() + b"\n"
    writer.write(raw)
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), 10))


async def wait_for(predicate, timeout: float = 10) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def test_connections_past_the_cap_are_refused_at_once_and_slots_free_up(ipc: GroupIpc) -> None:
    held = [await connect(ipc) for _ in range(4)]
    for reader, writer in held:  # all four are served
        assert await call(reader, writer, {"id": 1, "method": "status", "params": {"state": "x"}}) == {
            "id": 1,
            "result": {},
        }
    extra_reader, _ = await connect(ipc)
    refusal = json.loads(await asyncio.wait_for(extra_reader.readline(), 10))
    assert refusal["error"]["code"] == "too_many_connections"
    assert await asyncio.wait_for(extra_reader.read(), 10) == b""  # and closed
    assert ipc.connections == 4
    held[0][1].close()
    await wait_for(lambda: ipc.connections == 3)
    reader, writer = await connect(ipc)
    assert "result" in await call(reader, writer, {"id": 2, "method": "status", "params": {"state": "x"}})
    for _, w in [*held[1:], (reader, writer)]:
        w.close()


async def test_a_half_sent_line_is_dropped_and_its_connection_closed(ipc: GroupIpc) -> None:
    reader, writer = await connect(ipc)
    writer.write(b'{"id": 1, "method": "log", "params": {"level": "info", "message": "' + b"x" * 60_000)
    await writer.drain()
    reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
    assert reply["error"]["code"] == "line_timeout"
    assert await asyncio.wait_for(reader.read(), 10) == b""
    await wait_for(lambda: ipc.connections == 0)


async def test_a_line_over_the_cap_is_refused_before_its_end_arrives(ipc: GroupIpc) -> None:
    reader, writer = await connect(ipc)
    writer.write(b"[" + b"1," * 40_000)  # 80 KB, no newline: never completes
    await writer.drain()
    reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
    assert reply["error"]["code"] == "too_large"
    writer.close()


async def test_an_idle_connection_is_closed(tmp_path: Path) -> None:
    limits = IpcLimits(idle_timeout_s=0.2)
    server = GroupIpc(Caller("team", False, "tg:-1"), tmp_path / "ipc.sock", RecordingServices(), limits)
    await server.start()
    try:
        reader, writer = await connect(server)
        reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
        assert reply["error"]["code"] == "idle_timeout"
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
    finally:
        await server.close()


async def test_hundred_thousand_nested_brackets_get_an_error_and_the_connection_keeps_serving(
    ipc: GroupIpc, caplog: pytest.LogCaptureFixture
) -> None:
    reader, writer = await connect(ipc)
    for line in (b"[" * 60_000 + b"\n", b'{"id": 7, "method": "log", "params": ' + b"[" * 60_000 + b"\n"):
        reply = await call(reader, writer, line)
        assert reply["error"]["code"] == "too_deep"
    assert "result" in await call(reader, writer, {"id": 8, "method": "status", "params": {"state": "x"}})
    assert "RecursionError" not in caplog.text and "Traceback" not in caplog.text
    writer.close()


async def test_a_request_flood_is_refused_past_the_burst_but_the_turn_protocol_never(
    ipc: GroupIpc,
) -> None:
    reader, writer = await connect(ipc)
    log = {"method": "log", "params": {"level": "info", "message": "spam"}}
    codes = [(await call(reader, writer, {"id": i, **log})).get("error", {}).get("code") for i in range(40)]
    assert codes.count(None) >= 10 and codes.count("rate_limited") >= 20, codes
    garbage = await call(reader, writer, b"not json\n")
    assert garbage["error"]["code"] == "rate_limited"  # malformed lines are requests too
    # The bucket is empty, yet the turn protocol goes through: a turn is handed out and its answer taken.
    _, result = ipc.submit(Turn(5, "hi"))
    got = await call(reader, writer, {"id": 100, "method": "next_messages"})
    assert got["result"]["run_id"] == 5
    assert "result" in await call(reader, writer, {"id": 101, "method": "received", "params": {"run_id": 5}})
    done = {"id": 102, "method": "turn_done", "params": {"run_id": 5, "text": "the answer"}}
    assert "result" in await call(reader, writer, done)
    assert (await result).text == "the answer"
    writer.close()


async def test_turn_done_arrives_while_other_connections_flood_the_group(ipc: GroupIpc) -> None:
    """Three connections hammer the socket; the agent's answer on the fourth still lands."""
    stop = asyncio.Event()

    async def flood() -> int:
        reader, writer = await connect(ipc)
        sent = 0
        try:
            while not stop.is_set():
                await call(reader, writer, {"id": sent, "method": "status", "params": {"state": "x" * 2000}})
                sent += 1
        finally:
            writer.close()
        return sent

    floods = [asyncio.create_task(flood()) for _ in range(3)]
    await asyncio.sleep(0.2)
    _, result = ipc.submit(Turn(9, "question"))
    reader, writer = await connect(ipc)
    assert (await call(reader, writer, {"id": 1, "method": "next_messages"}))["result"]["run_id"] == 9
    done = {"id": 2, "method": "turn_done", "params": {"run_id": 9, "text": "still here"}}
    assert await call(reader, writer, done) == {"id": 2, "result": {}}
    assert (await asyncio.wait_for(result, 10)).text == "still here"
    stop.set()
    counts = await asyncio.gather(*floods)
    assert all(n > 0 for n in counts)
    writer.close()


async def test_a_peer_that_never_reads_its_answers_is_dropped(ipc: GroupIpc) -> None:
    _, writer = await connect(ipc)
    request = json.dumps({"id": 1, "method": "list_tasks", "params": {}}).encode() + b"\n"
    # Pipelined in batches of 500 lines per write (asyncio sums its write buffer entry by entry,
    # so one write per line makes the loop itself quadratic), answers never read: the server
    # must not wait forever.
    batch = request * 500
    with contextlib.suppress(ConnectionError):
        for _ in range(400):
            writer.write(batch)
            if writer.transport.get_write_buffer_size() > 1 << 20:
                await asyncio.sleep(0.01)
            if ipc.connections == 0:
                break
    await wait_for(lambda: ipc.connections == 0, timeout=30)
    writer.close()


async def test_a_connect_storm_gets_a_bounded_number_of_refusals(ipc: GroupIpc) -> None:
    """Past the cap, refusals are throttled: the storm waits in the kernel backlog instead."""
    held = [await connect(ipc) for _ in range(4)]

    def storm(seconds: float) -> int:
        attempts, deadline = 0, time.monotonic() + seconds
        while time.monotonic() < deadline:
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            with contextlib.suppress(OSError):
                s.connect(str(ipc.socket_path))
            s.close()
            attempts += 1
        return attempts

    start = time.monotonic()
    attempts = await asyncio.to_thread(storm, 1.5)
    elapsed = time.monotonic() - start
    assert attempts > 1000
    assert 0 < ipc.refused_connections <= REFUSALS_PER_S * (1 + 1.2 * elapsed) + 10, ipc.refused_connections
    assert ipc.connections == 4
    held[0][1].close()  # a slot frees up: a client that retries is served again
    status = {"id": 1, "method": "status", "params": {"state": "x"}}
    for _ in range(50):  # the storm's abandoned connects may still sit in the backlog
        reader, writer = await connect(ipc)
        with contextlib.suppress(ConnectionError, ValueError):  # refused: reset, or EOF
            if await asyncio.wait_for(call(reader, writer, status), 10) == {"id": 1, "result": {}}:
                break
        writer.close()
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("no connection was served after the storm")
    for _, w in [*held[1:], (reader, writer)]:
        w.close()
