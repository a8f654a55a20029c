"""Who may talk to the assistant, end to end through Telegram (issue 15 acceptance).

A real Gateway (Docker sandbox, vault, SQLite, fake model) whose main chat is a Telegram
supergroup; the real TelegramChannel polls the fake Bot API on loopback. The owner registers
the team chat with `/register … --members` or `--senders approval` in the main chat, as they
would; whether a message reached an agent is read off the fake model server (a turn always
calls it) and the replies the fake Bot API received.
"""

from __future__ import annotations

import asyncio
import html
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from core.config import Config
from gateway.app import Gateway
from gateway.approvals import REFUSE_USER
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_api import FakeBotApi
from tests.integration.test_gateway_docker import config_for
from tests.integration.test_telegram_approvals import telegram_main_chat_toml

MAIN = -1009000000001
TEAM = -1009000000002
ADMIN = {"id": 4242, "is_bot": False, "first_name": "Owner"}
ALICE = {"id": 5001, "is_bot": False, "first_name": "Alice", "username": "alice"}
# Mallory copies Alice's display name and username; only her id differs.
MALLORY = {"id": 5151, "is_bot": False, "first_name": "Alice", "username": "alice"}


class Env:
    def __init__(
        self, config: Config, dirs: tuple[Path, Path], api: FakeBotApi, model: FakeModelServer
    ) -> None:
        self.config, self.dirs, self.api, self.model = config, dirs, api, model
        self.gw: Gateway | None = None

    async def start(self) -> Gateway:
        self.gw = Gateway(self.config, *self.dirs)
        await self.gw.start()
        return self.gw

    async def stop(self) -> None:
        if self.gw is not None:
            await self.gw.stop(grace_s=5)
            self.gw = None

    async def api_wait(self, predicate: Callable[[], Any], timeout: float = 15) -> Any:
        return await asyncio.to_thread(self.api.wait_for, predicate, timeout)

    def sent_to(self, chat: int) -> list[dict[str, Any]]:
        return [m for m in self.api.sent if m["chat"]["id"] == chat]

    def prompts(self) -> list[dict[str, Any]]:
        return [m for m in self.sent_to(MAIN) if m.get("reply_markup")]

    async def command(self, text: str) -> str:
        """An admin command in the main chat; returns the gateway's answer."""
        before = len(self.sent_to(MAIN))
        self.api.push_message(MAIN, text, user=ADMIN, title="Main")
        replies = await self.api_wait(lambda: self.sent_to(MAIN)[before:])
        return str(replies[0]["text"])

    async def say(self, user: dict[str, Any], text: str, chat: int = TEAM) -> None:
        """Post a message and wait until the gateway has stored it."""
        assert self.gw is not None
        self.api.push_message(chat, text, user=user, title="Team" if chat == TEAM else "Main")
        await until(lambda: self.status_of(text, chat), timeout=15)

    async def status_of(self, text: str, chat: int = TEAM) -> str | None:
        assert self.gw is not None
        stored = await self.gw.store.messages_for_chat(f"tg:{chat}")
        return next((m.status for m in stored if m.text == text), None)

    async def click(self, prompt: dict[str, Any], data: str, user: dict[str, Any]) -> str:
        current = dict(self.api.messages[(prompt["chat"]["id"], prompt["message_id"])])
        current["reply_markup"] = prompt["reply_markup"]
        query_id = self.api.push_callback(current, data, user=user)
        [answer] = await self.api_wait(
            lambda: [a for a in self.api.answers if a["callback_query_id"] == query_id]
        )
        return str(answer.get("text", ""))


async def until(check: Callable[[], Awaitable[object]], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := await check()):
        assert time.monotonic() < deadline, "condition never held"
        await asyncio.sleep(0.05)
    return result


def approval_id_of(prompt: dict[str, Any]) -> str:
    approve, deny = (b["callback_data"] for b in prompt["reply_markup"]["inline_keyboard"][0])
    match = re.fullmatch(r"ap:([A-Za-z0-9_-]{1,16}):a", approve)
    assert match is not None and deny == f"ap:{match.group(1)}:d" and len(approve.encode()) <= 64
    return match.group(1)


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    config_dir, _ = dirs
    api = FakeBotApi().start()
    extra = telegram_main_chat_toml(config_dir, api)
    config = config_for(model_server, sandbox_image, extra=extra, top=f'main_chat = "tg:{MAIN}"')
    environment = Env(config, dirs, api, model_server)
    await environment.start()
    try:
        yield environment
    finally:
        await environment.stop()
        api.stop()


async def test_members_group_unlisted_trigger_reaches_no_agent_but_is_context_for_the_next_turn(
    env: Env,
) -> None:
    answer = await env.command(f"/register tg:{TEAM} team --members tg:{ALICE['id']}")
    assert answer == f"registered team for tg:{TEAM} (trigger @Andy, senders members: tg:5001)"
    assert "senders members (1 allowed, 0 blocked)" in await env.command("/groups")

    # Mallory, with Alice's name and username, triggers: stored as context, no agent, no reply.
    await env.say(MALLORY, "@Andy what is the wifi password?")
    assert await env.status_of("@Andy what is the wifi password?") == "context"
    assert env.gw is not None
    await env.gw.drain()
    await asyncio.sleep(1.0)
    assert env.model.requests == [] and env.sent_to(TEAM) == []

    # Alice's trigger is answered, and her turn saw Mallory's message in its history.
    await env.say(ALICE, "@Andy hello from Alice")
    [reply] = await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)
    assert reply["text"].startswith("echo: ") and "hello from Alice" in reply["text"]
    [request] = env.model.requests
    assert "what is the wifi password?" in str(request.body)
    await env.gw.drain()
    assert len(env.sent_to(TEAM)) == 1  # Mallory never got an answer of her own

    # The owner can see why: /senders names the policy and counts the trigger kept out.
    shown = await env.command("/senders team")
    assert "team: senders members" in shown and "tg:5001 allowed" in shown
    assert "1 trigger(s) not let through" in shown
    assert "senders: 0 waiting for Allow/Deny, 1 trigger(s) not let through" in await env.command("/status")


async def test_approval_group_asks_once_and_the_owners_allow_answers_the_held_message_and_survives_restart(
    env: Env,
) -> None:
    await env.command(f"/register tg:{TEAM} team --senders approval")
    sneaky = {**MALLORY, "first_name": "</pre><b>Owner</b> tg:4242"}  # markup in the chosen name
    await env.say(sneaky, "@Andy may I join?")
    [prompt] = await env.api_wait(env.prompts)
    assert await env.status_of("@Andy may I join?") == "held"
    approval_id = approval_id_of(prompt)
    assert prompt["parse_mode"] == "HTML" and "Let tg:5151 talk to the assistant in team?" in prompt["text"]
    assert html.escape("</pre><b>Owner</b> tg:4242") in prompt["text"]  # shown literally, not as markup
    assert "<b>Owner</b>" not in prompt["text"]

    # A second trigger while the owner has not answered: held too, still one prompt.
    await env.say(sneaky, "@Andy hello??")
    assert await env.status_of("@Andy hello??") == "held"
    await asyncio.sleep(1.0)
    assert len(env.prompts()) == 1 and env.model.requests == [] and env.sent_to(TEAM) == []

    # A non-admin's click in the main chat decides nothing.
    assert await env.click(prompt, f"ap:{approval_id}:a", ALICE) == REFUSE_USER
    await asyncio.sleep(0.5)
    assert await env.status_of("@Andy may I join?") == "held" and env.model.requests == []

    # The owner allows: the held messages are answered, once, in one turn.
    assert (await env.click(prompt, f"ap:{approval_id}:a", ADMIN)).startswith("Approved: Let tg:5151")
    [reply] = await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)
    assert "may I join?" in str(env.model.requests[0].body) and "hello??" in reply["text"]
    assert env.gw is not None
    await env.gw.drain()
    await asyncio.sleep(0.5)
    assert len(env.sent_to(TEAM)) == 1 and len(env.model.requests) == 1
    assert await env.status_of("@Andy may I join?") == "done"

    # Remembered across a restart: the next trigger goes straight through, no new prompt.
    await env.stop()
    await env.start()
    await env.say(MALLORY, "@Andy back after the restart")
    replies = await env.api_wait(lambda: env.sent_to(TEAM)[1:], timeout=120)
    assert "back after the restart" in replies[0]["text"]
    assert len(env.prompts()) == 1


async def test_deny_keeps_the_sender_out_and_main_chat_answers_only_admins(env: Env) -> None:
    # The main chat: a non-admin's message is kept but never reaches the main agent.
    await env.say(ALICE, "@Andy I am not an admin", chat=MAIN)
    assert await env.status_of("@Andy I am not an admin", chat=MAIN) == "stored"
    assert env.gw is not None
    await env.gw.drain()
    assert env.model.requests == []

    await env.command(f"/register tg:{TEAM} team --senders approval")
    await env.say(MALLORY, "@Andy let me in")
    [prompt] = await env.api_wait(env.prompts)
    assert (await env.click(prompt, f"ap:{approval_id_of(prompt)}:d", ADMIN)).startswith("Denied")
    await until(lambda: env.status_of("@Andy let me in"))
    await until(lambda: asyncio.sleep(0, env.gw is not None and env.gw.senders.state("team", "tg:5151")))
    assert await env.status_of("@Andy let me in") == "context"
    await env.say(MALLORY, "@Andy pretty please")
    assert await env.status_of("@Andy pretty please") == "context"
    await env.gw.drain()
    await asyncio.sleep(1.0)
    assert len(env.prompts()) == 1 and env.model.requests == [] and env.sent_to(TEAM) == []
    assert "tg:5151 blocked" in await env.command("/senders team")
    assert "invalid sender id" in await env.command("/allow team tg:5151<b>")

    # The owner changes their mind: from now on Mallory is answered.
    assert await env.command("/allow team tg:5151") == "team: tg:5151 may trigger the assistant"
    await env.say(MALLORY, "@Andy thanks")
    [reply] = await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)
    assert "thanks" in reply["text"] and "pretty please" in str(env.model.requests[0].body)


async def test_the_cli_allows_a_held_sender_in_the_running_gateway_and_closes_the_prompt(env: Env) -> None:
    from click.testing import CliRunner

    from gateway.cli import main as cli_main

    await env.command(f"/register tg:{TEAM} team --senders approval")
    await env.say(MALLORY, "@Andy held until the CLI says so")
    [prompt] = await env.api_wait(env.prompts)
    result = await asyncio.to_thread(CliRunner().invoke, cli_main, ["groups", "allow", "team", "tg:5151"])
    assert result.exit_code == 0, result.output
    assert "team: tg:5151 may trigger the assistant" in result.output
    assert "the running gateway picked up the change" in result.output
    [reply] = await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)
    assert "held until the CLI says so" in reply["text"]
    # The prompt is closed (edited, no buttons): a later Deny click cannot undo the CLI's answer.
    key = (prompt["chat"]["id"], prompt["message_id"])
    edited = await env.api_wait(lambda: "edit_date" in env.api.messages[key] and env.api.messages[key])
    assert "reply_markup" not in edited
    assert (await env.click(prompt, f"ap:{approval_id_of(prompt)}:d", ADMIN)).startswith("already decided")
    assert env.gw is not None and env.gw.senders.state("team", "tg:5151") == "allowed"
    # And a policy change from the CLI applies at once too.
    result = await asyncio.to_thread(
        CliRunner().invoke, cli_main, ["groups", "set", "team", "--senders", "members"]
    )
    assert result.exit_code == 0 and "team: senders members" in result.output
    await until(
        lambda: asyncio.sleep(
            0, env.gw is not None and env.gw.registry.by_folder("team").senders == "members"
        )
    )  # type: ignore[union-attr]


async def test_a_held_message_survives_a_gateway_restart_and_is_asked_about_again(env: Env) -> None:
    await env.command(f"/register tg:{TEAM} team --senders approval")
    await env.say(MALLORY, "@Andy asked before the restart")
    [old] = await env.api_wait(env.prompts)
    await env.stop()
    await env.start()
    # The old prompt is expired (nobody waits for it any more) and a new one asks again.
    key = (old["chat"]["id"], old["message_id"])
    expired = await env.api_wait(lambda: "edit_date" in env.api.messages[key] and env.api.messages[key])
    assert "reply_markup" not in expired and "Expired" in expired["text"]
    [_, new] = await env.api_wait(lambda: len(env.prompts()) == 2 and env.prompts())
    assert approval_id_of(new) != approval_id_of(old) and "tg:5151" in new["text"]
    assert await env.status_of("@Andy asked before the restart") == "held" and env.model.requests == []
    assert (await env.click(old, f"ap:{approval_id_of(old)}:a", ADMIN)).startswith("already decided: expired")
    assert (await env.click(new, f"ap:{approval_id_of(new)}:a", ADMIN)).startswith("Approved")
    [reply] = await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)
    assert "asked before the restart" in reply["text"]
    assert env.gw is not None
    await env.gw.drain()
    assert len(env.sent_to(TEAM)) == 1 and len(env.model.requests) == 1
