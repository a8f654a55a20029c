"""The IPC server over a real unix socket: strict parsing, identity from the socket."""

import asyncio
import json
from pathlib import Path

import pytest

from gateway.ipc import MAX_LINE_BYTES, GroupIpc
from gateway.ipc_protocol import Caller, Turn
from tests.fakes.ipc_services import RecordingServices


@pytest.fixture
async def ipc(tmp_path: Path):  # type: ignore[no-untyped-def]
    services = RecordingServices()
    server = GroupIpc(Caller("team", False, "tg:-1"), tmp_path / "ipc.sock", services)
    await server.start()
    server.sent = services.sent  # type: ignore[attr-defined]
    yield server
    await server.close()


async def call(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> dict:
    writer.write(raw)
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), 5))


async def test_turn_roundtrip(ipc: GroupIpc) -> None:
    reader, writer = await asyncio.open_unix_connection(str(ipc.socket_path))
    received, result = ipc.submit(Turn(3, "<messages>hi</messages>"))
    reply = await call(reader, writer, b'{"id": 1, "method": "next_messages"}\n')
    assert reply == {"id": 1, "result": {"run_id": 3, "prompt": "<messages>hi</messages>"}}
    await call(reader, writer, b'{"id": 2, "method": "received", "params": {"run_id": 3}}\n')
    assert received.done()
    await call(reader, writer, b'{"id": 3, "method": "send_message", "params": {"text": "working"}}\n')
    assert ipc.sent == [("team", 3, "tg:-1", "working")]  # type: ignore[attr-defined]
    await call(reader, writer, b'{"id": 4, "method": "turn_done", "params": {"run_id": 3, "text": "done"}}\n')
    assert (await result).text == "done"
    writer.close()


@pytest.mark.parametrize(
    ("line", "code"),
    [
        (b"not json\n", "bad_json"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"method": "log"}\n', "bad_request"),
        (b'{"id": 1, "method": "rm_rf"}\n', "unknown_method"),
        (b'{"id": 1, "method": "log", "params": {"level": 1, "message": "x"}}\n', "bad_params"),
        (b'{"id": 1, "method": "send_message", "params": {"text": "x", "group": "main"}}\n', "bad_params"),
        (
            b'{"id": 1, "method": "send_message", "params": {"text": "x", "chat_id": "console:main"}}\n',
            "forbidden",
        ),
        (b'{"id": 1, "method": "log", "params": {"level": "i", "message": [[[[[[[1]]]]]]]}}\n', "too_deep"),
        (b'{"id": 1, "method": "send_message", "group": "main", "params": {"text": "x"}}\n', "bad_request"),
        (b'{"id": 1, "method": "turn_done", "params": {"run_id": 999}}\n', "unknown_run"),
        (b'{"id": 1, "method": "received", "params": {"run_id": true}}\n', "bad_params"),
        (b"\xff\xfe\n", "bad_json"),
    ],
)
async def test_bad_requests_get_errors_and_the_server_keeps_serving(
    ipc: GroupIpc, line: bytes, code: str
) -> None:
    reader, writer = await asyncio.open_unix_connection(str(ipc.socket_path))
    reply = await call(reader, writer, line)
    assert reply["error"]["code"] == code
    assert ipc.sent == []  # type: ignore[attr-defined]  # nothing was half-applied
    ok = await call(
        reader, writer, b'{"id": 9, "method": "log", "params": {"level": "info", "message": "x"}}\n'
    )
    assert ok == {"id": 9, "result": {}}
    writer.close()


async def test_oversized_line_is_refused_without_crashing(ipc: GroupIpc) -> None:
    reader, writer = await asyncio.open_unix_connection(str(ipc.socket_path))
    writer.write(
        b'{"id": 1, "method": "log", "params": {"level": "info", "message": "' + b"x" * MAX_LINE_BYTES
    )
    await writer.drain()
    reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert reply["error"]["code"] == "too_large"
    writer.close()
    reader2, writer2 = await asyncio.open_unix_connection(str(ipc.socket_path))
    assert await call(reader2, writer2, b'{"id": 2, "method": "status", "params": {"state": "ok"}}\n') == {
        "id": 2,
        "result": {},
    }
    writer2.close()


async def test_abort_fails_outstanding_turns(ipc: GroupIpc) -> None:
    _, result = ipc.submit(Turn(1, "x"))
    ipc.abort_all("container died")
    with pytest.raises(ConnectionError):
        await result
