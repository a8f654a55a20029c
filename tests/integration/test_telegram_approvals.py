"""Approvals end to end through Telegram (issue 6 acceptance).

A real Gateway (Docker sandbox, vault, SQLite, fake model) whose main chat is a Telegram
supergroup; the real TelegramChannel is built from config (python-telegram-bot, long
polling) and talks to the fake Bot API server on loopback. Buttons are pressed by pushing
`callback_query` updates; the toast is the `answerCallbackQuery` text and the finished
prompt is the message after `editMessageText`.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from channels.telegram import TelegramChannel
from gateway.app import Gateway
from gateway.approvals import REFUSE_CHAT, REFUSE_USER
from tests.fakes.model_server import FakeModelServer, Recorded, last_user_text
from tests.fakes.telegram_api import TOKEN, FakeBotApi
from tests.integration.test_gateway_docker import config_for

MAIN = -1009000000001  # the owner's main chat (a supergroup)
TEAM = -1009000000002  # a registered, non-main group
ADMIN = {"id": 4242, "is_bot": False, "first_name": "Alice"}
STRANGER = {"id": 5151, "is_bot": False, "first_name": "Mallory"}
TODAY = datetime.now(UTC).strftime("%Y-%m-%d")


class Env:
    def __init__(self, gw: Gateway, api: FakeBotApi, model: FakeModelServer) -> None:
        self.gw, self.api, self.model = gw, api, model

    async def api_wait(self, predicate: Callable[[], Any], timeout: float = 15) -> Any:
        return await asyncio.to_thread(self.api.wait_for, predicate, timeout)

    def ask(self, title: str, expires_in: float = 600, group: str = "team") -> asyncio.Task[str]:
        return asyncio.create_task(
            self.gw.approvals.request_approval(title, f"details of {title}", group, expires_in)
        )

    async def prompt(self, title: str) -> tuple[dict[str, Any], str]:
        """The prompt message posted into the main chat, and its approval id."""
        sent = await self.api_wait(
            lambda: [m for m in self.api.sent if m.get("reply_markup") and title in m["text"]]
        )
        [message] = sent
        buttons = message["reply_markup"]["inline_keyboard"][0]
        approve, deny = (b["callback_data"] for b in buttons)
        match = re.fullmatch(r"ap:([A-Za-z0-9_-]+):a", approve)
        assert match is not None and deny == f"ap:{match.group(1)}:d"
        assert len(approve.encode()) <= 64
        return message, match.group(1)

    async def click(
        self, message: dict[str, Any], data: str, user: dict[str, Any], chat: dict[str, Any] | None = None
    ) -> str:
        """Press a button on `message` (optionally as seen in another chat); returns the toast text."""
        current = dict(self.api.messages[(message["chat"]["id"], message["message_id"])])
        current["reply_markup"] = message["reply_markup"]  # the keyboard as the clicker saw it
        if chat is not None:
            current["chat"] = chat
        query_id = self.api.push_callback(current, data, user=user)
        [answer] = await self.api_wait(
            lambda: [a for a in self.api.answers if a["callback_query_id"] == query_id]
        )
        return str(answer.get("text", ""))

    async def edited(self, message: dict[str, Any]) -> dict[str, Any]:
        """The prompt after the gateway edited it (buttons removed)."""
        key = (message["chat"]["id"], message["message_id"])
        return await self.api_wait(lambda: "edit_date" in self.api.messages[key] and self.api.messages[key])

    def edit_calls(self, message: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            p
            for name, p in self.api.calls
            if name == "editMessageText" and int(p["message_id"]) == message["message_id"]
        ]


def telegram_main_chat_toml(config_dir: Path, api: FakeBotApi) -> str:
    """Config for a gateway whose only channel is Telegram (admin tg:4242), and the vault egress
    both groups need; the vault reads its policy from config.toml, so that part is written there."""
    egress = '[vault.egress]\nmain = ["*"]\nteam = ["*"]\n'
    (config_dir / "config.toml").write_text(egress)
    return (
        egress
        + '[console]\nenabled = false\n[admin]\nusers = ["tg:4242"]\n'
        + f'[telegram]\nenabled = true\ntoken = "{TOKEN}"\nbase_url = "{api.base_url}"\n'
    )


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    from core.models import Group

    config_dir, data_dir = dirs
    api = FakeBotApi().start()
    extra = telegram_main_chat_toml(config_dir, api)
    config = config_for(model_server, sandbox_image, extra=extra, top=f'main_chat = "tg:{MAIN}"')
    gw = Gateway(config, config_dir, data_dir)
    await gw.start()  # default channels: the real TelegramChannel, built from config
    try:
        [channel] = gw.channels
        assert isinstance(channel, TelegramChannel) and channel.connected
        assert gw.registry.main is not None and gw.registry.main.chat_id == f"tg:{MAIN}"
        await gw.registry.register(Group("team", f"tg:{TEAM}", "team", "@Andy"))
        yield Env(gw, api, model_server)
    finally:
        await gw.stop(grace_s=5)
        api.stop()


async def test_admin_approves_by_button_others_are_refused_and_double_click_counts_once(env: Env) -> None:
    task = env.ask("Send 5 NEAR")
    prompt, approval_id = await env.prompt("Send 5 NEAR")
    assert prompt["chat"]["id"] == MAIN and f"/approve {approval_id}" in prompt["text"]
    approve, deny = f"ap:{approval_id}:a", f"ap:{approval_id}:d"

    # A non-admin in the main chat: a polite refusal, nothing decided.
    assert await env.click(prompt, approve, STRANGER) == REFUSE_USER
    # The admin, but the press comes from another chat (a replayed/forwarded prompt): refused.
    team_chat = {"id": TEAM, "type": "supergroup", "title": "Team"}
    assert await env.click(prompt, approve, ADMIN, chat=team_chat) == REFUSE_CHAT
    await asyncio.sleep(0.3)
    assert not task.done()
    record = await env.gw.store.approval(approval_id)
    assert record is not None and record.state == "pending"
    assert env.edit_calls(prompt) == []

    # The admin in the main chat decides.
    assert await env.click(prompt, approve, ADMIN) == "Approved: Send 5 NEAR"
    assert await asyncio.wait_for(task, 15) == "approved"
    edited = await env.edited(prompt)
    assert "reply_markup" not in edited
    assert re.search(rf"Approved by tg:4242 at {TODAY} \d\d:\d\d UTC", edited["text"]), edited["text"]
    [edit] = env.edit_calls(prompt)
    assert "reply_markup" not in edit and int(edit["chat_id"]) == MAIN

    # Double click (and a late Deny): decided once, told so, prompt not edited again.
    assert (await env.click(prompt, approve, ADMIN)).startswith("already decided: approved by tg:4242")
    assert (await env.click(prompt, deny, ADMIN)).startswith("already decided: approved by tg:4242")
    record = await env.gw.store.approval(approval_id)
    assert record is not None and record.state == "approved" and record.decided_by == "tg:4242"
    assert len(env.edit_calls(prompt)) == 1


async def test_admin_denies_by_button(env: Env) -> None:
    task = env.ask("Delete the backups")
    prompt, approval_id = await env.prompt("Delete the backups")
    assert await env.click(prompt, f"ap:{approval_id}:d", ADMIN) == "Denied: Delete the backups"
    assert await asyncio.wait_for(task, 15) == "denied"
    edited = await env.edited(prompt)
    assert "reply_markup" not in edited
    assert re.search(rf"Denied by tg:4242 at {TODAY} \d\d:\d\d UTC", edited["text"]), edited["text"]


async def test_expiry_means_deny_and_edits_the_prompt(env: Env) -> None:
    started = time.monotonic()
    task = env.ask("Rotate the keys", expires_in=1.5)
    prompt, approval_id = await env.prompt("Rotate the keys")
    assert await asyncio.wait_for(task, 15) == "expired"
    assert time.monotonic() - started >= 1.4
    edited = await env.edited(prompt)
    assert "reply_markup" not in edited
    assert re.search(rf"Expired at {TODAY} \d\d:\d\d UTC \(denied\)", edited["text"]), edited["text"]
    # A late click cannot revive it.
    toast = await env.click(prompt, f"ap:{approval_id}:a", ADMIN)
    assert toast.startswith("already decided: expired")
    record = await env.gw.store.approval(approval_id)
    assert record is not None and record.state == "expired"


async def test_text_fallback_approve_in_the_main_chat(env: Env) -> None:
    task = env.ask("Install a package")
    prompt, approval_id = await env.prompt("Install a package")
    # Not an admin, or not the main chat: the command is ignored.
    env.api.push_message(MAIN, f"/approve {approval_id}", user=STRANGER, title="Main")
    env.api.push_message(TEAM, f"/deny {approval_id}", user=ADMIN, title="Team")
    await asyncio.sleep(1.0)
    assert not task.done()
    record = await env.gw.store.approval(approval_id)
    assert record is not None and record.state == "pending"

    env.api.push_message(MAIN, f"/approve {approval_id}", user=ADMIN, title="Main")
    assert await asyncio.wait_for(task, 15) == "approved"
    replies = await env.api_wait(
        lambda: [
            m for m in env.api.sent if m["chat"]["id"] == MAIN and "Approved: Install a package" in m["text"]
        ]
    )
    assert len(replies) == 1
    edited = await env.edited(prompt)
    assert "reply_markup" not in edited and "Approved by tg:4242" in edited["text"]
    assert not [m for m in env.api.sent if m["chat"]["id"] == TEAM]  # nothing answered the ignored /deny


async def test_button_is_handled_while_an_agent_turn_waits_in_the_same_group(env: Env) -> None:
    """The main group's agent turn is stuck (waiting, as if for this very approval): the click still lands."""
    in_turn, release = threading.Event(), threading.Event()

    def responder(record: Recorded) -> tuple[int, dict[str, Any]]:
        if "wait for approval" in last_user_text(record.body):
            in_turn.set()
            release.wait(60)
        return FakeModelServer._echo(record)

    env.model.default = responder
    try:
        env.api.push_message(MAIN, "please wait for approval", user=ADMIN, title="Main")
        assert await asyncio.to_thread(in_turn.wait, 120), "the agent turn never reached the model"

        task = env.ask("Pay the invoice", group="main")
        prompt, approval_id = await env.prompt("Pay the invoice")
        toast = await asyncio.wait_for(env.click(prompt, f"ap:{approval_id}:a", ADMIN), 15)
        assert toast == "Approved: Pay the invoice"
        assert await asyncio.wait_for(task, 15) == "approved"
        assert not release.is_set()  # decided while the turn was still in progress
    finally:
        release.set()
    reply = await env.api_wait(
        lambda: [m for m in env.api.sent if m["chat"]["id"] == MAIN and m["text"].startswith("echo: ")], 120
    )
    assert "wait for approval" in reply[0]["text"]
