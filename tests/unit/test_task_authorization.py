"""The task rows of the IPC authorization matrix, end to end with the real scheduler and store.

Real unix sockets (`GroupIpc`, identity = the socket), the real `AgentServices`, a real
`Scheduler` on a real SQLite file. Every refusal is checked against the database: a
refused request changes nothing.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from core.config import parse
from core.models import Group
from gateway.agent_services import AgentServices
from gateway.ipc import GroupIpc
from gateway.ipc_protocol import Caller
from gateway.registry import GroupRegistry
from gateway.scheduler import Scheduler
from gateway.store import Store

GROUPS = [
    Group("main", "console:main", "main", "@Andy", requires_trigger=False, is_main=True),
    Group("team", "tg:-1", "team", "@Andy"),
    Group("other", "tg:-2", "other", "@Andy"),
]


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    async def call(self, method: str, **params: object) -> dict:
        self.n += 1
        self.writer.write(json.dumps({"id": self.n, "method": method, "params": params}).encode() + b"\n")
        await self.writer.drain()
        return json.loads(await asyncio.wait_for(self.reader.readline(), 5))


class World:
    def __init__(self, store: Store, scheduler: Scheduler, clients: dict[str, Client]) -> None:
        self.store, self.scheduler, self.clients = store, scheduler, clients

    async def status(self, task_id: int) -> str:
        task = await self.store.task(task_id)
        assert task is not None
        return task.status


@pytest.fixture
async def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = await Store.open(tmp_path / "clawgate.db")
    registry = GroupRegistry(store)
    for group in GROUPS:
        await registry.register(group)

    async def fire(task, firing) -> None:  # type: ignore[no-untyped-def]  # never due in these tests
        raise AssertionError("nothing should fire")

    scheduler = Scheduler(store, fire)
    await scheduler.start()
    services = AgentServices(parse("", Path("test.toml")), store, registry, tasks=scheduler)
    servers, clients = [], {}
    for group in GROUPS:
        server = GroupIpc(
            Caller(group.folder, group.is_main, group.chat_id), tmp_path / f"{group.folder}.sock", services
        )
        await server.start()
        servers.append(server)
        clients[group.folder] = Client(*await asyncio.open_unix_connection(str(server.socket_path)))
    yield World(store, scheduler, clients)
    for client in clients.values():
        client.writer.close()
    for server in servers:
        await server.close()
    await scheduler.stop()
    await store.close()


def error_code(reply: dict) -> str | None:
    return reply.get("error", {}).get("code")


async def test_each_group_schedules_for_itself(world: World) -> None:
    for folder in ("main", "team"):
        reply = await world.clients[folder].call("schedule_task", prompt="daily digest", cron="0 8 * * *")
        task = reply["result"]
        assert task["group"] == folder and task["created_by"] == folder and task["status"] == "active"
    own = await world.clients["team"].call("schedule_task", prompt="p", every_s=600, group="team")
    assert own["result"]["group"] == "team"


async def test_main_schedules_for_another_group(world: World) -> None:
    reply = await world.clients["main"].call(
        "schedule_task", prompt="remind team", every_s=3600, group="team"
    )
    task = reply["result"]
    assert task["group"] == "team" and task["created_by"] == "main"
    [row] = await world.store.tasks("team")
    assert row.created_by == "main"


async def test_non_main_cannot_schedule_for_another_group(world: World) -> None:
    for target in ("main", "other", "nonexistent"):
        reply = await world.clients["team"].call("schedule_task", prompt="x", every_s=60, group=target)
        assert error_code(reply) == "forbidden"
    assert await world.store.tasks() == []


async def test_main_cannot_schedule_for_an_unknown_group(world: World) -> None:
    reply = await world.clients["main"].call("schedule_task", prompt="x", every_s=60, group="ghost")
    assert error_code(reply) == "unknown_group"
    assert await world.store.tasks() == []


async def test_invalid_specs_come_back_as_bad_params(world: World) -> None:
    team = world.clients["team"]
    for spec in ({"cron": "* * * * * *"}, {"every_s": 1}, {"at": "2001-01-01T00:00:00Z"}, {}):
        reply = await team.call("schedule_task", prompt="x", **spec)
        assert error_code(reply) == "bad_params", reply
        assert reply["error"]["message"]
    assert await world.store.tasks() == []


async def test_main_lists_all_non_main_lists_own_only(world: World) -> None:
    main, team, other = (world.clients[f] for f in ("main", "team", "other"))
    await main.call("schedule_task", prompt="m", every_s=600)
    await team.call("schedule_task", prompt="t", every_s=600)
    await other.call("schedule_task", prompt="o", every_s=600)
    everything = (await main.call("list_tasks"))["result"]["tasks"]
    assert sorted(t["group"] for t in everything) == ["main", "other", "team"]
    only_team = (await main.call("list_tasks", group="team"))["result"]["tasks"]
    assert [t["group"] for t in only_team] == ["team"]
    own = (await team.call("list_tasks"))["result"]["tasks"]
    assert [(t["group"], t["prompt"]) for t in own] == [("team", "t")]
    assert [t["group"] for t in (await team.call("list_tasks", group="team"))["result"]["tasks"]] == ["team"]
    assert error_code(await team.call("list_tasks", group="other")) == "forbidden"
    assert error_code(await team.call("list_tasks", group="main")) == "forbidden"


@pytest.mark.parametrize("method", ["pause_task", "resume_task", "cancel_task"])
async def test_each_group_manages_its_own_tasks(world: World, method: str) -> None:
    for folder in ("main", "team"):
        client = world.clients[folder]
        task_id = (await client.call("schedule_task", prompt="p", every_s=600))["result"]["id"]
        if method == "resume_task":
            await client.call("pause_task", task_id=task_id)
        reply = await client.call(method, task_id=task_id)
        expected = {"pause_task": "paused", "resume_task": "active", "cancel_task": "cancelled"}[method]
        assert reply["result"]["status"] == expected
        assert await world.status(task_id) == expected
        assert (await client.call(method, task_id=str(task_id)))["result"]["status"] == expected  # id as text


@pytest.mark.parametrize("method", ["pause_task", "resume_task", "cancel_task"])
async def test_main_manages_another_groups_task(world: World, method: str) -> None:
    task_id = (await world.clients["team"].call("schedule_task", prompt="p", every_s=600))["result"]["id"]
    if method == "resume_task":
        await world.clients["team"].call("pause_task", task_id=task_id)
    reply = await world.clients["main"].call(method, task_id=task_id)
    assert "result" in reply and reply["result"]["group"] == "team"


@pytest.mark.parametrize("method", ["pause_task", "resume_task", "cancel_task"])
async def test_non_main_cannot_touch_another_groups_task(world: World, method: str) -> None:
    victims = {}
    for owner in ("main", "other"):
        reply = await world.clients[owner].call("schedule_task", prompt="p", every_s=600)
        victims[owner] = reply["result"]["id"]
    await world.clients["other"].call("pause_task", task_id=victims["other"])
    before = {owner: await world.status(task_id) for owner, task_id in victims.items()}
    for task_id in victims.values():
        reply = await world.clients["team"].call(method, task_id=task_id)
        # The same answer as for a task that does not exist: existence is not revealed.
        assert error_code(reply) == "not_found"
        assert error_code(await world.clients["team"].call(method, task_id=987654)) == "not_found"
    assert {owner: await world.status(task_id) for owner, task_id in victims.items()} == before
    assert world.scheduler.next_due() is not None  # main's task is still armed


async def test_garbage_task_ids_are_not_found(world: World) -> None:
    team = world.clients["team"]
    for bad in ("abc", "-1", "0", "1; DROP TABLE tasks", "99999999999999999999999"):
        assert error_code(await team.call("cancel_task", task_id=bad)) == "not_found"
