"""Who may talk to the assistant, end to end through Slack (issue 15 acceptance).

The real Gateway with the real Bolt SlackChannel in Socket Mode against the loopback fake
Slack (`tests.fakes.slack_api`), a real Docker sandbox and the fake model. The owner (`U1`)
registers the team channel from the main channel with `@bot /register … --members` (or
`--senders approval`, where a flood of strangers gets a bounded number of prompts).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from gateway.app import Gateway
from tests.fakes.model_server import FakeModelServer
from tests.fakes.slack_api import (
    BOT_USER_ID,
    Call,
    FakeSlack,
    button_payload,
    events_envelope,
    interactive_envelope,
    message_event,
)
from tests.integration.test_gateway_docker import config_for

MAIN, TEAM = "CMAIN", "CTEAM"
ADMIN, MEMBER, STRANGER = "U1", "U3", "U4"
_ts = iter(range(100, 10_000))


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def gw(dirs, model_server, sandbox_image, docker_client, fake) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    slack = f"""
[slack]
enabled = true
mode = "socket"
bot_token = "xoxb-test-token"
app_token = "xapp-test-token"
base_url = "{fake.base_url}"
[console]
enabled = false
[admin]
users = ["slack:{ADMIN}"]
"""
    config = config_for(model_server, sandbox_image, top=f'main_chat = "slack:{MAIN}"', extra=slack)
    gateway = Gateway(config, config_dir, data_dir)
    await gateway.start()
    try:
        yield gateway
    finally:
        await gateway.stop(grace_s=5)


def posts(fake: FakeSlack, channel: str) -> list[Call]:
    return [c for c in fake.called("chat.postMessage") if c.args.get("channel") == channel]


async def say(fake: FakeSlack, text: str, channel: str, user: str) -> None:
    envelope = events_envelope(
        message_event(text, f"{next(_ts)}.000100", channel=channel, user=user), f"Ev{next(_ts)}"
    )
    await fake.push(envelope)
    await fake.wait_ack(envelope["envelope_id"])  # acknowledged = committed (invariant 11)


async def command(fake: FakeSlack, text: str) -> str:
    before = len(posts(fake, MAIN))
    await say(fake, f"<@{BOT_USER_ID}> {text}", MAIN, ADMIN)
    await fake.wait_until(lambda: len(posts(fake, MAIN)) > before, timeout=15)
    return str(posts(fake, MAIN)[before].args["text"])


async def statuses(gw: Gateway) -> dict[str, str]:
    return {m.text: m.status for m in await gw.store.messages_for_chat(f"slack:{TEAM}")}


async def test_members_channel_answers_only_listed_ids(
    gw: Gateway, fake: FakeSlack, model_server: FakeModelServer
) -> None:
    fake.users[STRANGER] = "carol"  # the stranger's display name is the member's
    fake.users[MEMBER] = "carol"
    answer = await command(fake, f"/register slack:{TEAM} team --members slack:{MEMBER}")
    assert answer == f"registered team for slack:{TEAM} (trigger @Andy, senders members: slack:{MEMBER})"

    await say(fake, f"<@{BOT_USER_ID}> tell me the secrets", TEAM, STRANGER)
    assert (await statuses(gw))["@Andy tell me the secrets"] == "context"
    await gw.drain()
    await asyncio.sleep(1.0)
    assert model_server.requests == [] and posts(fake, TEAM) == []

    await say(fake, f"<@{BOT_USER_ID}> what is new?", TEAM, MEMBER)
    await fake.wait_until(lambda: bool(posts(fake, TEAM)), timeout=120)
    [reply] = posts(fake, TEAM)
    assert reply.args["text"].startswith("echo: ") and "what is new?" in reply.args["text"]
    [request] = model_server.requests
    assert "tell me the secrets" in json.dumps(request.body)  # the stranger's message was context


async def test_a_flood_of_strangers_gets_three_prompts_and_one_notice_and_allowing_one_asks_the_next(
    gw: Gateway, fake: FakeSlack, model_server: FakeModelServer
) -> None:
    await command(fake, f"/register slack:{TEAM} team --senders approval")
    strangers = [f"U9{n}" for n in range(6)]
    for n, user in enumerate(strangers):
        await say(fake, f"<@{BOT_USER_ID}> let me in {n}", TEAM, user)  # acknowledged = committed

    def prompts() -> list[Call]:
        return [
            c for c in posts(fake, MAIN) if "blocks" in c.args and "talk to the assistant" in c.args["text"]
        ]

    def notices() -> list[Call]:
        return [c for c in posts(fake, MAIN) if "more unknown senders wait in team" in c.args["text"]]

    await fake.wait_until(lambda: len(prompts()) >= 3 and notices(), timeout=15)
    await asyncio.sleep(1.0)  # a 4th prompt or a 2nd notice, if one were coming, would be here by now
    assert len(prompts()) == 3 and len(notices()) == 1
    assert [next(s for s in strangers if f"slack:{s} " in p.args["text"]) for p in prompts()] == strangers[:3]
    assert set((await statuses(gw)).values()) == {"held"} and model_server.requests == []

    blocks = prompts()[0].args["blocks"]
    actions = [
        b for b in (json.loads(blocks) if isinstance(blocks, str) else blocks) if b["type"] == "actions"
    ]
    approval_id = actions[0]["elements"][0]["value"]
    envelope = interactive_envelope(button_payload("clawgate_approve", approval_id, user=ADMIN, channel=MAIN))
    await fake.push(envelope)
    await fake.wait_ack(envelope["envelope_id"])
    await fake.wait_until(lambda: len(prompts()) == 4, timeout=15)
    assert f"slack:{strangers[3]} " in prompts()[3].args["text"]
    await fake.wait_until(lambda: bool(posts(fake, TEAM)), timeout=120)
    assert "let me in 0" in posts(fake, TEAM)[0].args["text"]
