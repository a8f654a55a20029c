"""Issue 15 acceptance: a group over its daily budget gets no model call through (the model server
sees none), its chat a short message, the main chat one notice; `/budget set` lifts it at once.

Real gateway, real Docker sandbox, real vault (which meters the fake model's responses and reports
them to the gateway), SQLite, the real TelegramChannel against the fake Bot API, a fake model
server on loopback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.app import Gateway
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_api import FakeBotApi
from tests.integration.test_gateway_docker import config_for
from tests.integration.test_telegram_approvals import ADMIN, MAIN, TEAM, telegram_main_chat_toml

MEMBER = {"id": 777, "is_bot": False, "first_name": "Bob"}


class Env:
    def __init__(self, gw: Gateway, api: FakeBotApi, model: FakeModelServer) -> None:
        self.gw, self.api, self.model = gw, api, model

    async def wait(self, predicate: Callable[[], Any], timeout: float = 60) -> Any:
        return await asyncio.to_thread(self.api.wait_for, predicate, timeout)

    def sent_to(self, chat: int) -> list[str]:
        return [m["text"] for m in self.api.sent if m["chat"]["id"] == chat]

    async def say(self, chat: int, text: str, user: dict[str, Any], expect: Callable[[str], bool]) -> str:
        """Post a message; return the first new message in that chat that `expect` accepts."""
        before = len(self.sent_to(chat))
        self.api.push_message(chat, text, user=user, title="Team" if chat == TEAM else "Main")
        found = await self.wait(lambda: [t for t in self.sent_to(chat)[before:] if expect(t)])
        return str(found[0])

    def notices(self, word: str) -> list[str]:
        return [t for t in self.sent_to(MAIN) if word in t and "team" in t]


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    from core.models import Group

    config_dir, data_dir = dirs
    api = FakeBotApi().start()
    # Each fake answer uses 2 tokens (1 in, 1 out): the first turn spends the whole day.
    extra = telegram_main_chat_toml(config_dir, api) + "[budget.groups.team]\ndaily_tokens = 2\n"
    config = config_for(model_server, sandbox_image, extra=extra, top=f'main_chat = "tg:{MAIN}"')
    gw = Gateway(config, config_dir, data_dir)
    await gw.start()
    try:
        await gw.registry.register(Group("team", f"tg:{TEAM}", "team", "@Andy"))
        yield Env(gw, api, model_server)
    finally:
        await gw.stop(grace_s=5)
        api.stop()


async def test_group_over_its_daily_budget_is_refused_main_told_once_and_budget_set_lifts_it(
    env: Env,
) -> None:
    answer = await env.say(TEAM, "@Andy first question", MEMBER, lambda t: "echo" in t)
    assert "first question" in answer
    # The vault metered the answer and reported it; the gateway stored it and told main.
    [notice] = await env.wait(lambda: env.notices("used up"))
    assert "/budget set team daily-tokens 100000" in notice
    calls = len(env.model.requests)

    refusal = await env.say(TEAM, "@Andy second question", MEMBER, lambda t: "budget" in t)
    assert "used up" in refusal and "owner can raise it" in refusal and "echo" not in refusal
    await env.say(TEAM, "@Andy third question", MEMBER, lambda t: "budget" in t)
    assert len(env.model.requests) == calls  # the model server saw no call
    assert len(env.notices("used up")) == 1  # main was told exactly once
    assert not [t for t in env.sent_to(TEAM) if "Sorry, I could not answer" in t]  # no dead letter
    assert await env.gw.store.dead_letters() == []

    reply = await env.say(MAIN, "/budget set team daily-tokens 1000", ADMIN, lambda t: "budget set" in t)
    assert "team daily-tokens: 1,000 tokens" in reply
    answer = await env.say(TEAM, "@Andy fourth question", MEMBER, lambda t: "echo" in t)
    assert "fourth question" in answer and len(env.model.requests) == calls + 1
