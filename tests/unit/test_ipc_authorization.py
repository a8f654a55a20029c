"""The IPC authorization matrix, one test per cell, over real unix sockets.

Identity is fixed by which socket a request arrives on; every refused request gets an
error, an audit line, and never reaches the services (nothing partially applies).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from gateway.ipc import GroupIpc
from gateway.ipc_protocol import Caller
from tests.fakes.ipc_services import RecordingServices

MAIN = Caller("main", True, "console:main")
TEAM = Caller("team", False, "tg:-1")


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.n = reader, writer, 0

    async def call(self, method: str, /, **params: object) -> dict:
        self.n += 1
        self.writer.write(json.dumps({"id": self.n, "method": method, "params": params}).encode() + b"\n")
        await self.writer.drain()
        return json.loads(await asyncio.wait_for(self.reader.readline(), 5))


@pytest.fixture
async def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Two groups' sockets sharing one set of services, as in the gateway."""
    services = RecordingServices()
    servers = {c.folder: GroupIpc(c, tmp_path / f"{c.folder}.sock", services) for c in (MAIN, TEAM)}
    clients = {}
    for folder, server in servers.items():
        await server.start()
        clients[folder] = Client(*await asyncio.open_unix_connection(str(server.socket_path)))
    yield services, clients["main"], clients["team"]
    for client in clients.values():
        client.writer.close()
    for server in servers.values():
        await server.close()


def refused(reply: dict, code: str = "forbidden") -> bool:
    return reply.get("error", {}).get("code") == code


# -- send a message ---------------------------------------------------------------------


async def test_main_sends_to_own_chat(world) -> None:
    services, main, _ = world
    assert (await main.call("send_message", text="hi"))["result"] == {"ok": True}
    assert services.sent == [("main", None, "console:main", "hi")]


async def test_non_main_sends_to_own_chat(world) -> None:
    services, _, team = world
    assert (await team.call("send_message", text="hi"))["result"] == {"ok": True}
    assert (await team.call("send_message", text="hi2", chat_id="tg:-1"))["result"] == {"ok": True}
    assert [s[2] for s in services.sent] == ["tg:-1", "tg:-1"]


async def test_main_sends_to_another_registered_chat(world) -> None:
    services, main, _ = world
    assert (await main.call("send_message", text="hi", chat_id="tg:-2"))["result"] == {"ok": True}
    assert services.sent == [("main", None, "tg:-2", "hi")]
    assert refused(await main.call("send_message", text="x", chat_id="tg:999"), "unknown_chat")


async def test_non_main_cannot_send_to_another_chat(world, caplog: pytest.LogCaptureFixture) -> None:
    services, _, team = world
    with caplog.at_level(logging.WARNING, logger="clawgate.audit"):
        assert refused(await team.call("send_message", text="spam", chat_id="tg:-2"))
        assert refused(await team.call("send_message", text="spam", chat_id="console:main"))
        assert refused(await team.call("send_message", text="spam", chat_id="tg:999"))
    assert services.sent == []
    audit = [r.getMessage() for r in caplog.records if r.name == "clawgate.audit"]
    assert len(audit) == 3 and all("group=team" in line for line in audit)


# -- tasks -------------------------------------------------------------------------------


async def test_both_schedule_for_themselves(world) -> None:
    services, main, team = world
    assert (await main.call("schedule_task", prompt="p", cron="* * * * *"))["result"]["group"] == "main"
    assert (await team.call("schedule_task", prompt="p", every_s=60))["result"]["group"] == "team"
    assert (await team.call("schedule_task", prompt="p", every_s=60, group="team"))["result"][
        "group"
    ] == "team"


async def test_main_schedules_for_another_group(world) -> None:
    _, main, _ = world
    assert (await main.call("schedule_task", prompt="p", every_s=60, group="team"))["result"][
        "group"
    ] == "team"


async def test_non_main_cannot_schedule_for_another_group(world) -> None:
    services, _, team = world
    assert refused(await team.call("schedule_task", prompt="p", every_s=60, group="main"))
    assert services.calls == []


@pytest.mark.parametrize("action", ["pause_task", "resume_task", "cancel_task"])
async def test_both_manage_their_own_tasks(world, action: str) -> None:
    _, main, team = world
    own_main = (await main.call("schedule_task", prompt="p", every_s=60))["result"]["id"]
    own_team = (await team.call("schedule_task", prompt="p", every_s=60))["result"]["id"]
    assert "result" in await main.call(action, task_id=own_main)
    assert "result" in await team.call(action, task_id=own_team)


@pytest.mark.parametrize("action", ["pause_task", "resume_task", "cancel_task"])
async def test_main_manages_another_groups_task(world, action: str) -> None:
    _, main, team = world
    theirs = (await team.call("schedule_task", prompt="p", every_s=60))["result"]["id"]
    assert (await main.call(action, task_id=theirs))["result"]["status"] == action.removesuffix("_task")


@pytest.mark.parametrize("action", ["pause_task", "resume_task", "cancel_task"])
async def test_non_main_cannot_manage_another_groups_task(world, action: str) -> None:
    services, main, team = world
    theirs = (await main.call("schedule_task", prompt="p", every_s=60))["result"]["id"]
    reply = await team.call(action, task_id=theirs)
    missing = await team.call(action, task_id="t999")
    # Someone else's task and a missing one look the same: existence is not revealed.
    assert refused(reply, "not_found") and refused(missing, "not_found")
    assert reply["error"]["message"].replace(theirs, "X") == missing["error"]["message"].replace("t999", "X")
    assert services.tasks[theirs]["status"] == "active"


async def test_main_lists_all_tasks(world) -> None:
    _, main, team = world
    await team.call("schedule_task", prompt="p", every_s=60)
    await main.call("schedule_task", prompt="p", every_s=60)
    assert {t["group"] for t in (await main.call("list_tasks"))["result"]["tasks"]} == {"main", "team"}
    assert {t["group"] for t in (await main.call("list_tasks", group="team"))["result"]["tasks"]} == {"team"}


async def test_non_main_lists_only_its_own_tasks(world) -> None:
    _, main, team = world
    await team.call("schedule_task", prompt="p", every_s=60)
    await main.call("schedule_task", prompt="p", every_s=60)
    assert {t["group"] for t in (await team.call("list_tasks"))["result"]["tasks"]} == {"team"}
    assert refused(await team.call("list_tasks", group="main"))


# -- groups and chats ----------------------------------------------------------------------


async def test_main_registers_unregisters_and_sets_mounts(world) -> None:
    services, main, _ = world
    assert "result" in await main.call("register_group", chat_id="tg:-3", folder="new")
    assert "result" in await main.call("set_mounts", folder="new", mounts=[{"host_path": "~/x"}])
    assert "result" in await main.call("unregister_group", folder="new")
    assert [c[0] for c in services.calls] == ["register_group", "set_mounts", "unregister_group"]


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("register_group", {"chat_id": "tg:-3", "folder": "evil"}),
        ("unregister_group", {"folder": "main"}),
        ("unregister_group", {"folder": "team"}),
        ("set_mounts", {"folder": "team", "mounts": [{"host_path": "/"}]}),
    ],
)
async def test_non_main_cannot_manage_groups(world, method: str, params: dict) -> None:
    services, _, team = world
    assert refused(await team.call(method, **params))
    assert services.calls == []


async def test_main_sees_known_chats(world) -> None:
    _, main, _ = world
    assert len((await main.call("list_chats"))["result"]["chats"]) == 3


async def test_non_main_cannot_see_known_chats(world) -> None:
    services, _, team = world
    assert refused(await team.call("list_chats"))
    assert services.calls == []


async def test_requests_are_rate_limited(world) -> None:
    _, _, team = world
    replies = [await team.call("log", level="info", message="x") for _ in range(130)]
    assert any(refused(r, "rate_limited") for r in replies)
    # The turn protocol itself is never throttled, even right after the bucket ran dry.
    assert "result" in await team.call("status", state="busy")
    assert refused(await team.call("turn_done", run_id=1, text="x"), "unknown_run")


# -- NEAR wallet requests ---------------------------------------------------------------------

NEAR_REQUESTS = [
    ("near_balance", {}),
    ("near_view", {"contract_id": "c.near", "method": "get"}),
    ("near_transfer", {"receiver_id": "bob.near", "amount": "1"}),
    ("near_function_call", {"receiver_id": "c.near", "method": "go", "deposit": "0"}),
    ("near_sign_message", {"message": "hi", "recipient": "app.near"}),
]


@pytest.mark.parametrize(("method", "params"), NEAR_REQUESTS)
async def test_wallet_requests_reach_the_wallet_as_their_socket(world, method: str, params: dict) -> None:
    """Every group may ask; the wallet policy (key_groups) decides per key, with the socket's identity."""
    services, main, team = world
    assert "result" in await team.call(method, **params)
    assert "result" in await main.call(method, **params)
    assert services.calls[-2:] == [(method, "team"), (method, "main")]


@pytest.mark.parametrize(
    "params",
    [
        {"receiver_id": "bob.near", "amount": "1", "group": "main"},  # claiming another identity
        {"receiver_id": "bob.near", "amount": "1", "signer_id": "owner.near"},
        {"receiver_id": "bob.near", "amount": "1", "secret_key": "ed25519:x"},
        {"receiver_id": "bob.near"},  # missing amount
        {"receiver_id": "bob.near", "amount": 1.5},  # floats lose yoctoNEAR
    ],
)
async def test_malformed_wallet_requests_never_reach_the_wallet(world, params: dict) -> None:
    services, _, team = world
    reply = await team.call("near_transfer", **params)
    assert refused(reply, "bad_params")
    assert services.calls == []
