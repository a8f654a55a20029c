"""A sandbox has no say in what its group spent: there is no `usage` IPC request any more.

Agents used to report their own token counts, which the gateway stored and nothing decided on;
spend is what the vault metered (proxy/metering.py). An agent that still sends the old request
is told it is unknown, and its turn goes on. Real unix sockets.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.ipc import GroupIpc
from gateway.ipc_protocol import Caller, Turn
from tests.fakes.ipc_services import RecordingServices

TEAM = Caller("team", False, "tg:-1")
OTHER = Caller("other", False, "tg:-2")


def report(run_id: int, **overrides: Any) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model": "claude-sonnet-4-5",
        "input_tokens": 10,
        "output_tokens": 20,
        "cache_read_tokens": 3000,
        "cache_write_tokens": 400,
        "calls": 2,
        **overrides,
    }


class Agent:
    """An agent's end of one group's socket."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self.n += 1
        line = {"id": self.n, "method": method, "params": params or {}}
        self.writer.write(json.dumps(line).encode() + b"\n")
        await self.writer.drain()
        return json.loads(await asyncio.wait_for(self.reader.readline(), 5))


@pytest.fixture
async def sockets(tmp_path: Path):  # type: ignore[no-untyped-def]
    services = RecordingServices()
    servers = {c.folder: GroupIpc(c, tmp_path / f"{c.folder}.sock", services) for c in (TEAM, OTHER)}
    agents = {}
    for folder, server in servers.items():
        await server.start()
        agents[folder] = Agent(*await asyncio.open_unix_connection(str(server.socket_path)))
    yield services, servers, agents
    for agent in agents.values():
        agent.writer.close()
    for server in servers.values():
        await server.close()


def code(reply: dict[str, Any]) -> str | None:
    return reply.get("error", {}).get("code")


async def test_a_usage_report_is_an_unknown_request_and_the_turn_goes_on(sockets) -> None:
    services, servers, agents = sockets
    servers["team"].submit(Turn(41, "hi"))
    assert (await agents["team"].call("next_messages"))["result"]["run_id"] == 41
    assert code(await agents["team"].call("usage", report(41))) == "unknown_method"
    assert (await agents["team"].call("turn_done", {"run_id": 41, "text": "ok"}))["result"] == {}
    assert services.calls == []
