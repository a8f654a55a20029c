"""Model usage: the `usage` IPC request (validated, bound to the caller's own run) and its table.

Real unix sockets for the IPC side, real SQLite for the store.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.ipc import GroupIpc
from gateway.ipc_protocol import MAX_MODELS_PER_RUN, MAX_USAGE_TOKENS, Caller, Turn
from gateway.store import Store, UsageTotals
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


async def test_usage_of_the_current_run_reaches_the_services_as_the_sockets_group(sockets) -> None:
    services, servers, agents = sockets
    servers["team"].submit(Turn(41, "hi"))
    assert (await agents["team"].call("next_messages"))["result"]["run_id"] == 41
    assert (await agents["team"].call("usage", report(41)))["result"] == {}
    ((folder, got),) = services.usage
    assert folder == "team"
    assert (got.run_id, got.model, got.input_tokens, got.output_tokens) == (41, "claude-sonnet-4-5", 10, 20)
    assert (got.cache_read_tokens, got.cache_write_tokens, got.calls) == (3000, 400, 2)
    # still accepted after turn_done: the run stays the agent's current one
    assert (await agents["team"].call("turn_done", {"run_id": 41, "text": "ok"}))["result"] == {}
    assert (await agents["team"].call("usage", report(41, model="haiku")))["result"] == {}
    assert [r.model for _, r in services.usage] == ["claude-sonnet-4-5", "haiku"]


async def test_usage_cannot_be_pinned_on_a_run_the_group_was_not_handed(sockets) -> None:
    services, servers, agents = sockets
    servers["other"].submit(Turn(7, "theirs"))
    await agents["other"].call("next_messages")
    assert code(await agents["team"].call("usage", report(7))) == "unknown_run"  # another group's run
    assert code(await agents["team"].call("usage", report(999))) == "unknown_run"
    # and a payload naming a group is refused outright (identity is the socket)
    assert code(await agents["other"].call("usage", {**report(7), "group": "team"})) == "bad_params"
    assert services.usage == []


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"input_tokens": -1}, "bad_params"),
        ({"output_tokens": MAX_USAGE_TOKENS + 1}, "bad_params"),
        ({"cache_read_tokens": 1.5}, "bad_params"),
        ({"cache_write_tokens": True}, "bad_params"),
        ({"calls": 10**6}, "bad_params"),
        ({"model": ""}, "bad_params"),
        ({"model": "m\n1"}, "bad_params"),
        ({"model": "m" * 201}, "bad_params"),
        ({"model": None}, "bad_params"),
    ],
)
async def test_usage_values_are_bounded(sockets, override: dict[str, Any], expected: str) -> None:
    services, servers, agents = sockets
    servers["team"].submit(Turn(5, "hi"))
    await agents["team"].call("next_messages")
    assert code(await agents["team"].call("usage", report(5, **override))) == expected
    params = report(5)
    del params["calls"]
    assert code(await agents["team"].call("usage", params)) == "bad_params"
    assert services.usage == []


async def test_models_per_run_are_capped(sockets) -> None:
    services, servers, agents = sockets
    servers["team"].submit(Turn(9, "hi"))
    await agents["team"].call("next_messages")
    for n in range(MAX_MODELS_PER_RUN):
        assert "result" in await agents["team"].call("usage", report(9, model=f"m{n}"))
    assert code(await agents["team"].call("usage", report(9, model="one-too-many"))) == "too_many_models"
    assert "result" in await agents["team"].call("usage", report(9, model="m0"))  # a known one adds up
    assert len(services.usage) == MAX_MODELS_PER_RUN + 1


async def test_store_sums_reports_per_group_run_and_model(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    try:
        kw = {"input_tokens": 10, "output_tokens": 5, "cache_read_tokens": 100, "cache_write_tokens": 7}
        await store.add_model_usage("team", 1, "sonnet", calls=2, at=1000.0, **kw)
        await store.add_model_usage("team", 1, "sonnet", calls=1, at=1001.0, **kw)  # same run: adds up
        await store.add_model_usage("team", 2, "sonnet", calls=1, at=5000.0, **kw)
        await store.add_model_usage("team", 2, "haiku", calls=1, at=5000.0, **kw)
        await store.add_model_usage("main", 3, "sonnet", calls=4, at=5000.0, **kw)
        assert await store.model_usage("team") == [
            UsageTotals("team", "haiku", 10, 5, 100, 7, calls=1, runs=1),
            UsageTotals("team", "sonnet", 30, 15, 300, 21, calls=4, runs=2),
        ]
        assert await store.model_usage("team", since=2000.0) == [
            UsageTotals("team", "haiku", 10, 5, 100, 7, calls=1, runs=1),
            UsageTotals("team", "sonnet", 10, 5, 100, 7, calls=1, runs=1),
        ]
        assert [(u.group, u.model) for u in await store.model_usage()] == [
            ("main", "sonnet"),
            ("team", "haiku"),
            ("team", "sonnet"),
        ]
        async with store._conn.execute("SELECT COUNT(*) FROM model_usage") as cur:
            assert (await cur.fetchone())[0] == 4  # one row per (group, run, model)
    finally:
        await store.close()
    # the rows are durable: a reopened store (a gateway restart) still has them
    store = await Store.open(tmp_path / "db.sqlite")
    try:
        assert len(await store.model_usage("team")) == 2
    finally:
        await store.close()
