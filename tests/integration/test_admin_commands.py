"""Admin commands end to end: a real Gateway (Docker sandbox, mitmproxy vault, SQLite), fake model.

Two capture channels: the console owns the main chat `console:main`, a second one owns the
`tg:` chats (a registered non-main group and unregistered chats). `tg:1` is an admin by
config; the console's local user (`OWNER_ID`) always is. Every test also proves that no
command text ever reached the model server.
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from channels.console import OWNER_ID
from core.models import Group
from gateway.app import Gateway
from gateway.approvals import REFUSE_USER
from gateway.commands import GROUP_COMMANDS, PUBLIC, USAGE, Command, parse
from groups.folders import group_dirs
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.integration.test_gateway_docker import config_for, containers

MAIN = "console:main"
TEAM = "tg:-100"  # registered as group `team` by the tests that need it
STRANGER_CHAT = "tg:-999"  # never registered
ADMIN = "tg:1"  # admin by config
GUEST = "tg:2"  # nobody
ADMIN_ONLY = [name for name in USAGE if name not in PUBLIC]


@dataclass
class Harness:
    gw: Gateway
    console: CaptureChannel
    tg: CaptureChannel
    model: FakeModelServer
    issued: list[str] = field(default_factory=list)

    def _channel(self, chat_id: str) -> CaptureChannel:
        return self.console if chat_id.startswith("console:") else self.tg

    async def send(
        self, text: str, chat_id: str = MAIN, sender: str = OWNER_ID, *, expect: str | None = None
    ) -> str:
        """Ingest one message; returns the status the router gave it."""
        channel = self._channel(chat_id)
        status = await self.gw.ingest(channel.message(text, chat_id=chat_id, sender=sender, sender_name="x"))
        if expect is not None:
            assert status == expect, (text, status)
        return status

    async def cmd(self, text: str, chat_id: str = MAIN, sender: str = OWNER_ID) -> str | None:
        """Send a command; its reply (one message into the same chat), or None when nothing came back."""
        self.issued.append(text)
        before = (len(self.console.sent), len(self.tg.sent))
        await self.send(text, chat_id, sender, expect="command")
        await asyncio.sleep(0)  # a reply is posted inline; give a stray task one chance anyway
        new = self.console.sent[before[0] :] + self.tg.sent[before[1] :]
        if not new:
            return None
        replies = [text for to, text in new if to == chat_id]  # (a /retry may also flush one elsewhere)
        assert len(replies) == 1, (text, new)
        [reply] = replies
        return reply

    async def ok(self, text: str, chat_id: str = MAIN, sender: str = OWNER_ID) -> str:
        reply = await self.cmd(text, chat_id, sender)
        assert reply is not None and not reply.startswith("usage:"), (text, reply)
        return reply

    async def usage(self, text: str, contains: str = "") -> str:
        reply = await self.cmd(text)
        name = parse(text).name  # type: ignore[union-attr]
        assert reply is not None and reply.startswith(f"usage: {USAGE[name]}"), (text, reply)
        assert contains in reply, (text, reply)
        return reply

    async def answered(self, text: str, chat_id: str = MAIN, timeout: float = 90) -> str:
        """Send an ordinary message and wait for the agent's reply in that chat."""
        channel = self._channel(chat_id)
        before = len(channel.sent)
        await self.send(text, chat_id)
        sent = await channel.wait_for(before + 1, timeout)
        to, reply = sent[before]
        assert to == chat_id
        return reply


@pytest.fixture
async def h(dirs, model_server, sandbox_image, docker_client):  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    console = CaptureChannel()
    tg = CaptureChannel(prefix="tg:")
    tg.name = "tg"  # type: ignore[misc]
    cfg = config_for(model_server, sandbox_image, extra=f'[admin]\nusers = ["{ADMIN}"]')
    gw = Gateway(cfg, config_dir, data_dir)
    await gw.start([console, tg])
    harness = Harness(gw, console, tg, model_server)
    try:
        yield harness
        # Checked after every test: command text was stored as such and never reached the model.
        seen = json.dumps([r.body for r in model_server.requests])
        for text in harness.issued:
            assert json.dumps(text)[1:-1] not in seen, f"command text reached the model: {text!r}"
        stored = {
            m.text: m.status
            for chat in (MAIN, TEAM, STRANGER_CHAT)
            for m in await gw.store.messages_for_chat(chat)
        }
        for text in harness.issued:
            assert stored.get(text) == "command", (text, stored.get(text))
    finally:
        await gw.stop(grace_s=5)
    assert containers(docker_client, gw) == []


async def register_team(h: Harness) -> None:
    assert await h.ok(f"/register {TEAM} team") == f"registered team for {TEAM} (trigger @Andy)"


# -- parsing (no gateway needed) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/status", Command("status", [])),
        ("  /STATUS  ", Command("status", [])),
        ("/status@clawgate_bot", Command("status", [])),
        (
            '/register tg:-1 team --trigger "@Bob"',
            Command("register", ["tg:-1", "team", "--trigger", "@Bob"]),
        ),
        ("/register\ttg:-1 team", Command("register", ["tg:-1", "team"])),
        ("/pause\n7", Command("pause", ["7"])),
        ("/statusx", None),
        ("/unknown thing", None),
        ("status", None),
        ("/", None),
        ("hello /status", None),
    ],
)
def test_parse_is_strict_about_names(text: str, expected: Command | None) -> None:
    assert parse(text) == expected


def test_unbalanced_quotes_parse_to_args_no_handler_accepts() -> None:
    command = parse('/register "tg:-1 team')
    assert command is not None and command.name == "register" and len(command.args) == 1


# -- public commands ---------------------------------------------------------------------------


async def test_help_shows_admins_everything_and_others_only_the_public_commands(h: Harness) -> None:
    everything = "\n".join(USAGE.values())
    public = "\n".join(USAGE[name] for name in PUBLIC)
    assert await h.cmd("/help") == everything
    assert await h.cmd("/help", MAIN, ADMIN) == everything  # admin by config
    assert await h.cmd("/help", MAIN, GUEST) == public  # not an admin
    await register_team(h)
    in_group = "\n".join(USAGE[name] for name in (*PUBLIC, *GROUP_COMMANDS))
    assert await h.cmd("/help", TEAM, ADMIN) == in_group  # an admin, but not in the main chat
    assert await h.cmd("/help", STRANGER_CHAT, GUEST) == public  # unregistered chat
    for line in ("/status", "/register", "/dlq", "/retry"):
        assert line not in public


async def test_chatid_and_whoami_work_everywhere(h: Harness) -> None:
    await register_team(h)
    for chat in (MAIN, TEAM, STRANGER_CHAT):
        assert await h.cmd("/chatid", chat, GUEST) == f"This chat's id: {chat}"
    assert await h.cmd("/whoami") == f"You are {OWNER_ID} (x); admin here: yes"
    assert await h.cmd("/whoami", MAIN, ADMIN) == f"You are {ADMIN} (x); admin here: yes"
    assert await h.cmd("/whoami", MAIN, GUEST) == f"You are {GUEST} (x); admin here: no"
    assert await h.cmd("/whoami", TEAM, ADMIN) == f"You are {ADMIN} (x); admin here: no"
    assert await h.cmd("/whoami", STRANGER_CHAT, GUEST) == f"You are {GUEST} (x); admin here: no"


# -- status and groups ---------------------------------------------------------------------------


async def test_status_reports_vault_containers_queue_dead_letters_and_tasks(h: Harness) -> None:
    status = await h.ok("/status")
    assert status.startswith("up ")
    assert "channels: capture (connected), tg (connected)" in status
    assert "containers: 0/3" in status
    assert "vault: healthy" in status
    assert "dead letters: 0" in status
    assert "queue: 0 running, 0 waiting, 0 messages pending" in status
    assert "next task" not in status

    assert (await h.answered("hello")).startswith("echo: ")
    await h.gw.drain()
    task = await h.gw.services.tasks.schedule("main", "daily digest", every_s=3600, created_by="main")
    main = h.gw.registry.main
    await h.gw.store.ingest(h.console.message("left over"), "pending")  # pending, not yet woken
    await h.gw.store.dead_letter_pending(main, "test: gave up")
    status = await h.ok("/status", MAIN, ADMIN)
    assert "containers: 1/3 (main)" in status
    assert "dead letters: 1" in status
    assert (
        f"next task {task['id']} (main) in 59m" in status or f"next task {task['id']} (main) in 1h" in status
    )

    await h.gw.vault.stop()
    assert "vault: DOWN" in await h.ok("/status")
    await h.usage("/status now")


async def test_groups_register_and_unregister(h: Harness) -> None:
    # The command itself is activity in the main chat (it is stored like any message).
    assert await h.ok("/groups") == f"main (main): {MAIN}, no trigger, active 0s ago"
    await register_team(h)
    assert await h.ok("/register tg:-200 ops --trigger @Bob") == "registered ops for tg:-200 (trigger @Bob)"
    assert await h.ok("/register tg:-300 free --no-trigger") == "registered free for tg:-300 (no trigger)"
    listing = (await h.ok("/groups")).splitlines()
    assert len(listing) == 4
    assert f"team: {TEAM}, @Andy, never active" in listing
    assert "ops: tg:-200, @Bob, never active" in listing
    assert "free: tg:-300, no trigger, never active" in listing
    assert any(line.startswith(f"main (main): {MAIN}, no trigger, active ") for line in listing)
    stored = {g.folder: (g.chat_id, g.trigger, g.requires_trigger) for g in await h.gw.store.groups()}
    assert stored["team"] == (TEAM, "@Andy", True)
    assert stored["ops"] == ("tg:-200", "@Bob", True)
    assert stored["free"][2] is False
    # The new groups route as registered: untriggered chatter is context, the trigger asks for a reply.
    await h.send("just chatting", TEAM, GUEST, expect="context")
    await h.send("@Andy is ops trigger", "tg:-200", GUEST, expect="context")

    # Strict arguments: usage text, and nothing registered.
    await h.usage("/register")
    await h.usage("/register tg:-400")
    await h.usage("/register tg:-400 x --trigger", "unexpected argument '--trigger'")
    await h.usage("/register tg:-400 x --trigger Bob", "unexpected argument '--trigger'")
    await h.usage("/register tg:-400 x --trigger @", "unexpected argument '--trigger'")
    await h.usage("/register tg:-400 x --bogus", "unexpected argument '--bogus'")
    await h.usage("/register tg:-400 x extra")
    await h.usage('/register "tg:-400 x')
    await h.usage("/register tg:-400 ../evil")
    await h.usage("/register tg:-400 Bad/Name")
    await h.usage("/register tg:-400 team", "already registered")  # duplicate name
    await h.usage(f"/register {TEAM} other", "already registered")  # duplicate chat
    await h.usage(f"/register {MAIN} other", "already registered")
    await h.usage("/register tg:-400 x --runtime codex", "unknown runtime 'codex'")
    await h.usage("/register tg:-400 x --runtime", "unexpected argument '--runtime'")
    assert len(await h.gw.store.groups()) == 4
    assert h.gw.registry.for_chat("tg:-400") is None
    reply = await h.ok("/register tg:-500 sdk --runtime claude")
    assert reply == "registered sdk for tg:-500 (trigger @Andy, runtime claude)"
    assert "sdk: tg:-500, @Andy, never active, runtime claude" in (await h.ok("/groups")).splitlines()
    assert {g.folder: g.runtime for g in await h.gw.store.groups()}["sdk"] == "claude"
    assert await h.ok("/unregister sdk") == "unregistered sdk (its folder is kept)"

    assert await h.ok("/unregister ops") == "unregistered ops (its folder is kept)"
    assert "ops" not in await h.ok("/groups")
    assert h.gw.registry.for_chat("tg:-200") is None
    assert await h.send("@Bob hello?", "tg:-200", GUEST) == "stored"  # no longer a group
    await h.usage("/unregister ops", "no registered group 'ops'")
    await h.usage("/unregister main", "the main group cannot be unregistered")
    await h.usage("/unregister")
    await h.usage("/unregister team free")
    assert {g.folder for g in await h.gw.store.groups()} == {"main", "team", "free"}
    await h.usage("/groups all")


# -- tasks ----------------------------------------------------------------------------------------


async def test_tasks_pause_resume_cancel(h: Harness) -> None:
    assert await h.ok("/tasks") == "no tasks"
    await register_team(h)
    book = h.gw.services.tasks
    mine = await book.schedule("main", "nightly report", cron="0 2 * * *", created_by="main")
    theirs = await book.schedule("team", "standup reminder", every_s=600, created_by="team")
    listing = await h.ok("/tasks")
    assert f"{mine['id']} [main] active 0 2 * * *: nightly report" in listing
    assert f"{theirs['id']} [team] active every 600" in listing and "standup reminder" in listing
    only_team = await h.ok("/tasks team")
    assert "standup reminder" in only_team and "nightly report" not in only_team
    await h.usage("/tasks nosuch", "no registered group 'nosuch'")
    await h.usage("/tasks main team")

    async def status(task_id: int) -> str:
        task = await h.gw.store.task(task_id)
        assert task is not None
        return task.status

    assert await h.ok(f"/pause {theirs['id']}") == f"task {theirs['id']}: paused"
    assert await status(theirs["id"]) == "paused"
    assert "paused" in await h.ok("/tasks team")
    assert await h.ok(f"/resume #{theirs['id']}") == f"task {theirs['id']}: active"
    assert await status(theirs["id"]) == "active"
    assert await h.ok(f"/cancel {theirs['id']}") == f"task {theirs['id']}: cancelled"
    assert await status(theirs["id"]) == "cancelled"
    assert "standup reminder" not in await h.ok("/tasks")
    await h.usage(f"/resume {theirs['id']}", "only a paused task can be resumed")
    await h.usage(f"/pause {theirs['id']}", "only an active task can be paused")
    await h.usage("/pause 999", "no task '999'")
    await h.usage("/pause abc", "no task 'abc'")
    await h.usage("/pause")
    await h.usage(f"/cancel {mine['id']} {theirs['id']}")
    assert await status(mine["id"]) == "active"


# -- containers and sessions ---------------------------------------------------------------------------


async def test_stop_removes_the_running_container(h: Harness, docker_client) -> None:  # type: ignore[no-untyped-def]
    assert (await h.answered("wake up")).startswith("echo: ")
    assert len(containers(docker_client, h.gw, "main")) == 1
    assert await h.ok("/stop main") == "stopped the container of main"
    assert containers(docker_client, h.gw, "main") == []
    assert "main" not in h.gw.pool.live
    assert await h.ok("/stop main") == "main has no running container"
    await h.usage("/stop nosuch", "no registered group 'nosuch'")
    await h.usage("/stop")
    # The group keeps working: the next message gets a fresh container.
    assert (await h.answered("still there?")).startswith("echo: ")


async def test_reset_clears_the_agent_session(h: Harness, docker_client) -> None:  # type: ignore[no-untyped-def]
    await h.answered("remember the word pineapple")
    await h.answered("and the word banana")
    assert len(h.model.requests[-1].body["messages"]) > 1  # the second turn saw the first one
    history = group_dirs(h.gw.data_dir, "main").group / ".clawgate" / "history.json"
    assert history.exists()
    assert await h.ok("/reset main") == "cleared the agent session of main"
    assert not history.exists()
    assert containers(docker_client, h.gw, "main") == []
    assert (await h.gw.store.session("main") or "").startswith("reset-")
    await h.answered("fresh start")
    assert len(h.model.requests[-1].body["messages"]) == 1  # no memory of the earlier turns
    assert "pineapple" not in json.dumps(h.model.requests[-1].body)
    await h.usage("/reset")
    await h.usage("/reset nosuch", "no registered group")


async def test_status_shows_metered_spend_and_compact_asks_for_a_summary(h: Harness) -> None:  # type: ignore[no-untyped-def]
    state = group_dirs(h.gw.data_dir, "main").group / ".clawgate"
    assert await h.ok("/compact main") == "main has no conversation history yet; nothing to compact"
    assert not state.exists()  # never created by the gateway: the agent must own it
    assert "model spend" not in await h.ok("/status")  # nothing used yet
    await h.answered("remember the word pineapple")
    await h.gw.drain()
    # The vault metered the turn's model call (the echo model reports 1 in, 1 out) and reported it;
    # /status shows what the vault measured.
    for _ in range(200):
        if await h.gw.store.metered_totals("main", 0):
            break
        await asyncio.sleep(0.05)
    calls = len([r for r in h.model.requests if r.path.startswith("/v1/messages")])
    assert f"model spend today: main {2 * calls:,} tokens $0.0000" in await h.ok("/status")
    assert await h.ok("/compact main") == "main: its older conversation will be summarised at its next turn"
    assert (state / "compact-requested").exists()
    await h.usage("/compact")
    await h.usage("/compact nosuch", "no registered group")
    # a link planted where the request goes is refused, never followed
    (state / "compact-requested").unlink()
    (state / "compact-requested").symlink_to("/etc/passwd")
    assert (await h.ok("/compact main")).startswith(
        "main: its older"
    )  # replaced by a rename, not written through
    assert not (state / "compact-requested").is_symlink()
    moved = state.with_name("elsewhere")
    state.rename(moved)
    state.symlink_to(moved)
    assert (await h.ok("/compact main")).startswith("could not ask main to compact its history")
    await h.gw.registry.register(Group("claudy", "tg:-777", "claudy", "@Andy", runtime="claude"))
    assert "runs the claude runtime" in await h.ok("/compact claudy")  # not a promise it cannot keep


# -- dead letters ---------------------------------------------------------------------------------------


async def test_dlq_retry_and_drop(h: Harness) -> None:
    assert await h.ok("/dlq") == "no dead letters"
    main = h.gw.registry.main
    assert main is not None
    await h.gw.store.ingest(h.console.message("please answer me later"), "pending")  # never woken
    letter = await h.gw.store.dead_letter_pending(main, "model kept failing (test)")
    await h.gw.store.ingest(h.console.message("a hopeless one"), "pending")
    hopeless = await h.gw.store.dead_letter_pending(main, "malformed (test)")
    entry = await h.gw.store.enqueue_reply(None, 0, TEAM, "a reply that could not be delivered")
    assert entry is not None
    await register_team(h)
    reply_letter = await h.gw.store.dead_letter_reply(entry, "telegram timed out (test)")

    listing = (await h.ok("/dlq")).splitlines()
    assert listing == [
        f"#{letter} run main: model kept failing (test)",
        f"#{hopeless} run main: malformed (test)",
        f"#{reply_letter} reply {entry}: telegram timed out (test)",
    ]

    before = len(h.console.sent)
    assert await h.ok(f"/retry {letter}") == f"dead letter #{letter} queued again"
    sent = await h.console.wait_for(before + 2)
    assert sent[-1][1].startswith("echo: ") and "please answer me later" in sent[-1][1]
    await h.gw.drain()
    statuses = {m.text: m.status for m in await h.gw.store.messages_for_chat(MAIN)}
    assert statuses["please answer me later"] == "done"
    assert statuses["a hopeless one"] == "dead"

    assert await h.ok(f"/retry #{reply_letter}", MAIN, ADMIN) == f"dead letter #{reply_letter} queued again"
    assert h.tg.sent[-1] == (TEAM, "a reply that could not be delivered")

    assert await h.ok(f"/drop {hopeless}") == f"dropped dead letter #{hopeless}"
    assert await h.ok("/dlq") == "no dead letters"
    await h.usage(f"/drop {hopeless}", f"no dead letter #{hopeless}")
    await h.usage(f"/retry {letter}", f"no dead letter #{letter}")
    await h.usage("/retry x", "the id is a number")
    await h.usage("/retry")
    await h.usage("/drop 1 2")
    await h.usage("/dlq all")
    assert [t for t, _ in h.tg.sent].count(TEAM) == 1  # the revived reply went out exactly once


# -- refusals ---------------------------------------------------------------------------------------------


async def test_admin_commands_are_ignored_outside_main_and_from_non_admins(h: Harness, docker_client) -> None:  # type: ignore[no-untyped-def]
    await register_team(h)
    assert (await h.answered("start a container")).startswith("echo: ")
    await h.gw.drain()  # the lane is idle, so the message below stays pending until dead-lettered
    history = group_dirs(h.gw.data_dir, "main").group / ".clawgate" / "history.json"
    assert history.exists()
    task = await h.gw.services.tasks.schedule("team", "weekly", cron="0 9 * * 1", created_by="team")
    main = h.gw.registry.main
    assert main is not None
    await h.gw.store.ingest(h.console.message("dead one"), "pending")
    letter = await h.gw.store.dead_letter_pending(main, "test")
    asking = asyncio.create_task(h.gw.approvals.request_approval("transfer 1 NEAR", "to bob", "team"))
    await h.console.wait_until(lambda: len(h.console.prompts) == 1, 10)
    approval_id = h.console.prompts[0][1].id

    def snapshot() -> object:
        return (
            sorted(g.folder for g in h.gw.registry.all()),
            sorted(h.gw.pool.live),
            history.exists(),
            (history.parent / "compact-requested").exists(),
        )

    async def durable() -> object:
        task_row = await h.gw.store.task(task["id"])
        return (
            [(g.folder, g.chat_id, g.senders) for g in await h.gw.store.groups()],
            await h.gw.store.group_senders(),
            await h.gw.store.dead_letters(),
            task_row.status if task_row else None,
            (await h.gw.store.approval(approval_id)).state,  # type: ignore[union-attr]
            await h.gw.store.wallet_settings(),
            h.gw.wallet.engine.policy,
            await h.gw.store.budget_overrides(),
        )

    every = {
        "status": "/status",
        "groups": "/groups",
        "register": "/register tg:-555 sneaky --no-trigger",
        "unregister": "/unregister team",
        "senders": "/senders team members",
        "allow": "/allow team tg:9",
        "block": "/block team tg:9",
        "tasks": "/tasks",
        "pause": f"/pause {task['id']}",
        "resume": f"/resume {task['id']}",
        "cancel": f"/cancel {task['id']}",
        "stop": "/stop main",
        "reset": "/reset main",
        "compact": "/compact main",
        "dlq": "/dlq",
        "retry": f"/retry {letter}",
        "drop": f"/drop {letter}",
        "approve": f"/approve {approval_id}",
        "deny": f"/deny {approval_id}",
        "wallet": "/wallet",
        "policy": "/policy set daily_limit 1000",
        "usage": "/usage main",
        "budget": "/budget set team daily 0",
    }
    assert sorted(every) == sorted(ADMIN_ONLY)  # a new admin command must be added here
    before_mem, before_db = snapshot(), await durable()
    for chat, sender in (
        (TEAM, ADMIN),  # an admin, but in a non-main chat
        (TEAM, GUEST),
        (STRANGER_CHAT, ADMIN),  # an unregistered chat
        (MAIN, GUEST),  # the main chat, but not an admin
    ):
        for name, text in every.items():
            if chat == TEAM and name in GROUP_COMMANDS:
                continue  # answered, about the group itself (test_usage_and_budget_set)
            assert await h.cmd(text, chat, sender) is None, (chat, sender, text)
        # Bad arguments are ignored just as silently: no usage text that reveals the command.
        assert await h.cmd("/register", chat, sender) is None
        assert await h.cmd("/retry x", chat, sender) is None
    assert snapshot() == before_mem
    assert await durable() == before_db
    assert h.tg.sent == []
    assert not asking.done() and h.console.outcomes == []
    assert (await h.ok(f"/deny {approval_id}")).startswith("Denied")
    assert await asking == "denied"
    # The refused commands sit in the database as commands; a later run in main does not see them.
    before = len(h.model.requests)
    assert (await h.answered("anything new?")).startswith("echo: ")
    assert len(h.model.requests) > before


async def test_usage_and_budget_set_validate_store_and_stay_in_their_group(h: Harness) -> None:
    await register_team(h)
    await h.usage("/budget set team daily lots", "not a USD amount")
    await h.usage("/budget set team daily -1", "must not be negative")
    await h.usage("/budget set team daily nan", "finite")
    await h.usage("/budget set team weekly 1", "unknown limit 'weekly'")
    await h.usage("/budget set nobody daily 1", "no registered group 'nobody'")
    await h.usage("/budget set team daily-tokens 1.5", "whole number")
    assert "no budgets set" in await h.ok("/budget")
    said = await h.ok("/budget set team daily 2.50")
    assert said.startswith("budget set: team daily: $2.50") and "$2.50 left" in said
    assert (await h.ok("/budget set global monthly-tokens 5m")).startswith(
        "budget set: global monthly-tokens: 5,000,000 tokens"
    )
    assert await h.gw.store.budget_overrides() == {
        ("team", "daily_usd"): 2_500_000,
        ("global", "monthly_tokens"): 5_000_000,
    }
    listing = await h.ok("/budget")
    # The words /budget set takes, never the config key, and the same line in /budget and /usage.
    assert listing.splitlines() == [
        "team: daily $2.50 (used $0.00, 0%), set in chat",
        "global: monthly-tokens 5,000,000 tokens (used 0 tokens, 0%), shared by all groups, set in chat",
    ]
    usage = await h.ok("/usage")
    assert "  global: monthly-tokens 5,000,000 tokens (used 0 tokens, 0%) for " in usage
    assert "_usd" not in usage + listing and "_tokens" not in usage + listing
    # In the group itself, anyone sees that group's spend only, whatever they ask for.
    mine = await h.cmd("/usage main", TEAM, GUEST)
    assert mine is not None and "group team" in mine and "main" not in mine
    assert "  team: daily $2.50 (used $0.00, 0%) for " in mine
    assert (await h.ok("/budget set team daily default")).startswith(
        "budget set: team daily: back to the config"
    )
    assert await h.gw.store.budget_overrides() == {("global", "monthly_tokens"): 5_000_000}


async def test_approvals_reach_the_gateway_by_button_and_by_text(h: Harness) -> None:
    """The gateway hands `approvals.on_button` to every channel; the click and `/approve` both decide."""
    asking = asyncio.create_task(h.gw.approvals.request_approval("send 5 NEAR", "to bob.near", "main"))
    await h.console.wait_until(lambda: len(h.console.prompts) == 1, 10)
    chat, prompt = h.console.prompts[0]
    assert chat == MAIN
    assert await h.console.press(prompt.id, user_id=GUEST) == REFUSE_USER
    assert (await h.console.press(prompt.id, user_id=ADMIN)).startswith("Approved")
    assert await asking == "approved"
    assert (await h.ok(f"/deny {prompt.id}")).startswith(f"already decided: approved by {ADMIN}")
    [(to, _, _, outcome)] = h.console.outcomes
    assert (to, outcome.state, outcome.decided_by) == (MAIN, "approved", ADMIN)
    second = asyncio.create_task(h.gw.approvals.request_approval("send 1 NEAR", "", "main"))
    await h.console.wait_until(lambda: len(h.console.prompts) == 2, 10)
    assert (await h.ok(f"/approve {h.console.prompts[1][1].id}")).startswith("Approved")
    assert await second == "approved"


# -- the CLI twins against this running gateway ----------------------------------------------------------


async def clawgate(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "clawgate"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_cli_changes_reach_the_running_gateway(h: Harness, docker_client) -> None:  # type: ignore[no-untyped-def]
    out = await clawgate("groups", "register", TEAM, "team", "--no-trigger")
    assert "registered team" in out and "running gateway picked up the change" in out
    assert h.gw.registry.for_chat(TEAM) is not None
    assert (await h.answered("hello from the team", TEAM)).startswith("echo: ")  # answered: no trigger
    assert len(containers(docker_client, h.gw, "team")) == 1

    # Another runtime for the group: its running container goes (the next message starts the other image).
    out = await clawgate("groups", "set", "team", "--runtime", "claude")
    assert "team: runtime claude" in out and "running gateway picked up the change" in out
    registered = h.gw.registry.for_chat(TEAM)
    assert registered is not None and registered.runtime == "claude"
    assert containers(docker_client, h.gw, "team") == []
    await clawgate("groups", "set", "team", "--runtime", "default")
    assert (await h.answered("back on the builtin runtime", TEAM)).startswith("echo: ")

    out = await clawgate("groups", "unregister", "team")
    assert "running gateway picked up the change" in out
    assert h.gw.registry.for_chat(TEAM) is None
    assert containers(docker_client, h.gw, "team") == []  # its container went with it
    assert await h.send("anyone?", TEAM, GUEST) == "stored"

    entry = await h.gw.store.enqueue_reply(None, 0, STRANGER_CHAT, "late reply")
    assert entry is not None
    letter = await h.gw.store.dead_letter_reply(entry, "timed out (test)")
    assert f"#{letter}" in await clawgate("dlq", "list")
    out = await clawgate("dlq", "retry", str(letter))
    assert "running gateway picked up the change" in out
    assert h.tg.sent[-1] == (STRANGER_CHAT, "late reply")  # sent by the gateway at once
    assert await h.gw.store.dead_letters() == []

    status = await clawgate("status")
    assert (
        status.startswith("up ")
        and "vault: healthy" in status
        and "channels: capture (connected), tg (connected)" in status
    )
