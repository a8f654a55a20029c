"""Slack end to end: the real Gateway with the real Bolt SlackChannel against the fake Slack.

The Gateway builds its SlackChannel from config (`[slack]`, `main_chat = "slack:CMAIN"`,
`[admin] users = ["slack:U1"]`) and talks Socket Mode (or HTTP mode) to the loopback Web
API + WebSocket server of `tests.fakes.slack_api`; agent turns run in real Docker
containers behind the real vault, answered by the fake model. Approval prompts are Block
Kit messages in the main channel, decided by `block_actions` envelopes over the socket or
by `@bot /approve <id>`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from channels.slack import SlackChannel
from core.models import Group
from gateway.app import Gateway
from gateway.approvals import REFUSE_CHAT, REFUSE_USER
from proxy.secrets import SecretStore
from tests.fakes.model_server import FakeModelServer, Recorded
from tests.fakes.slack_api import (
    BOT_USER_ID,
    Call,
    FakeSlack,
    button_payload,
    event_callback,
    events_envelope,
    interactive_envelope,
    message_event,
)
from tests.integration.test_gateway_docker import REAL_KEY, config_for

MAIN = "CMAIN"
TEAM = "CTEAM"
ADMIN, GUEST = "U1", "U2"
SECRET = "8f742231b10e8888abcd99yyyzzz85a5"

Factory = Callable[..., Awaitable[Gateway]]


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def start_gateway(  # type: ignore[no-untyped-def]
    dirs, model_server, sandbox_image, docker_client, fake
) -> AsyncIterator[Factory]:
    config_dir, data_dir = dirs
    SecretStore(config_dir).add(  # team's turns call the model too: the key is scoped to it
        "anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}", groups=("main", "team")
    )
    started: list[Gateway] = []

    async def start(mode: str = "socket") -> Gateway:
        slack = f"""
[slack]
enabled = true
mode = "{mode}"
bot_token = "xoxb-test-token"
app_token = "xapp-test-token"
signing_secret = "{SECRET}"
base_url = "{fake.base_url}"
http_port = 0
[console]
enabled = false
[admin]
users = ["slack:{ADMIN}"]
"""
        config = config_for(model_server, sandbox_image, top=f'main_chat = "slack:{MAIN}"', extra=slack)
        gw = Gateway(config, config_dir, data_dir)
        await gw.start()  # no channels given: the real SlackChannel is built from config
        started.append(gw)
        assert [type(c) for c in gw.channels] == [SlackChannel]
        assert gw.registry.main is not None and gw.registry.main.chat_id == f"slack:{MAIN}"
        await gw.registry.register(
            Group(folder="team", chat_id=f"slack:{TEAM}", name="team", trigger="@Andy")
        )
        return gw

    yield start
    for gw in started:
        await gw.stop(grace_s=5)


def posts(fake: FakeSlack, channel: str) -> list[Call]:
    return [c for c in fake.called("chat.postMessage") if c.args.get("channel") == channel]


def ephemerals(fake: FakeSlack) -> list[Call]:
    return fake.called("chat.postEphemeral")


def blocks_of(call: Call) -> list[dict[str, Any]]:
    blocks = call.args["blocks"]
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def buttons(call: Call) -> list[dict[str, Any]]:
    return [e for b in blocks_of(call) if b["type"] == "actions" for e in b["elements"]]


async def push_event(fake: FakeSlack, event: dict[str, Any], event_id: str, retry: int = 0) -> None:
    envelope = events_envelope(event, event_id, retry_attempt=retry)
    await fake.push(envelope)
    await fake.wait_ack(envelope["envelope_id"])


async def click(
    fake: FakeSlack, action: str, approval_id: str, user: str = ADMIN, channel: str = MAIN
) -> None:
    envelope = interactive_envelope(button_payload(action, approval_id, user=user, channel=channel))
    await fake.push(envelope)
    await fake.wait_ack(envelope["envelope_id"], timeout=3)


async def poll(check: Callable[[], Awaitable[object]], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def approval_ref(gw: Gateway, approval_id: str) -> str | None:
    record = await gw.store.approval(approval_id)
    return None if record is None else record.message_ref


async def ask(
    gw: Gateway, fake: FakeSlack, title: str, expires_in: float = 120
) -> tuple[asyncio.Task, str, Call]:
    """Start an approval request as a task; returns it, its id and the Block Kit prompt."""
    before = len(posts(fake, MAIN))

    def prompts() -> list[Call]:  # other notices may reach the main chat meanwhile
        return [c for c in posts(fake, MAIN)[before:] if "blocks" in c.args]

    task = asyncio.create_task(gw.approvals.request_approval(title, "to **bob.near**", "team", expires_in))
    await fake.wait_until(lambda: len(prompts()) > 0)
    [prompt] = prompts()
    approval_id = buttons(prompt)[0]["value"]
    assert [(b["action_id"], b["value"]) for b in buttons(prompt)] == [
        ("clawgate_approve", approval_id),
        ("clawgate_deny", approval_id),
    ]
    await poll(lambda: approval_ref(gw, approval_id))  # the prompt's ref is stored: clicks can edit it
    return task, approval_id, prompt


# ---------------------------------------------------------------- messages through the agent


async def test_mention_reaches_agent_and_reply_returns_in_thread_once(
    start_gateway: Factory, fake: FakeSlack, model_server: FakeModelServer
) -> None:
    gw = await start_gateway()
    # chatter without the mention: stored as context, no turn
    await push_event(fake, message_event("just chatting", "500.1", channel=TEAM, user=GUEST), "EvCtx")
    question = message_event(f"<@{BOT_USER_ID}> what is up?", "500.2", channel=TEAM, thread_ts="500.0")
    await push_event(fake, question, "EvAsk")
    await fake.wait_until(lambda: bool(posts(fake, TEAM)), timeout=120)
    [reply] = posts(fake, TEAM)
    assert reply.args["thread_ts"] == "500.0"  # answered in the thread it was asked in
    assert reply.args["text"].startswith("echo: ") and "what is up?" in reply.args["text"]
    assert "just chatting" in json.dumps(model_server.requests[-1].body)  # the context went along

    # Slack redelivers the same event (same event_id): acknowledged, not answered again
    await push_event(fake, question, "EvAsk", retry=1)
    await push_event(fake, question, "EvAsk", retry=2)
    await gw.drain()
    await asyncio.sleep(0.5)
    assert len(posts(fake, TEAM)) == 1
    assert len(model_server.requests) == 1
    stored = await gw.store.messages_for_chat(f"slack:{TEAM}")
    # once, and the context consumed by the turn it went along with
    assert [(m.text, m.status) for m in stored] == [("just chatting", "done"), ("@Andy what is up?", "done")]


async def test_untriggered_message_is_context_only(
    start_gateway: Factory, fake: FakeSlack, model_server: FakeModelServer
) -> None:
    gw = await start_gateway()
    await push_event(fake, message_event("no mention here", "510.1", channel=TEAM), "EvNoMention")
    await asyncio.sleep(1)
    await gw.drain()
    assert posts(fake, TEAM) == [] and model_server.requests == []
    [stored] = await gw.store.messages_for_chat(f"slack:{TEAM}")
    assert (stored.text, stored.status) == ("no mention here", "context")


# ---------------------------------------------------------------- approvals by button


async def test_admin_approves_by_button(start_gateway: Factory, fake: FakeSlack) -> None:
    gw = await start_gateway()
    task, approval_id, prompt = await ask(gw, fake, "Send 5 NEAR")
    assert prompt.args["channel"] == MAIN
    assert f"/approve {approval_id}" in prompt.args["text"]  # the text fallback is advertised

    # a non-admin in the main chat: refused, nothing decided
    await click(fake, "clawgate_approve", approval_id, user=GUEST)
    await fake.wait_until(lambda: len(ephemerals(fake)) == 1)
    refusal = ephemerals(fake)[0]
    assert (refusal.args["channel"], refusal.args["user"], refusal.args["text"]) == (MAIN, GUEST, REFUSE_USER)
    # the admin, but from a non-main channel: refused, nothing decided
    await click(fake, "clawgate_approve", approval_id, channel=TEAM)
    await fake.wait_until(lambda: len(ephemerals(fake)) == 2)
    refusal = ephemerals(fake)[1]
    assert (refusal.args["channel"], refusal.args["user"], refusal.args["text"]) == (TEAM, ADMIN, REFUSE_CHAT)
    assert not task.done() and not fake.called("chat.update")
    record = await gw.store.approval(approval_id)
    assert record is not None and record.state == "pending"

    # the admin in the main chat, double-clicking: decided once
    await click(fake, "clawgate_approve", approval_id)
    await click(fake, "clawgate_deny", approval_id)
    assert await asyncio.wait_for(task, 5) == "approved"
    await fake.wait_until(lambda: len(ephemerals(fake)) == 4)
    answers = sorted(c.args["text"] for c in ephemerals(fake)[2:])
    assert answers[0] == "Approved: Send 5 NEAR"
    assert answers[1].startswith("already decided: approved by slack:U1 at ")
    assert all(c.args["user"] == ADMIN for c in ephemerals(fake)[2:])

    await fake.wait_until(lambda: bool(fake.called("chat.update")))
    await asyncio.sleep(0.3)
    [update] = fake.called("chat.update")
    assert update.args["channel"] == MAIN
    blocks = blocks_of(update)
    assert not [b for b in blocks if b["type"] == "actions"]  # buttons removed
    shown = json.dumps(blocks)
    assert "Approved" in shown and f"<@{ADMIN}>" in shown and "Send 5 NEAR" in shown
    record = await gw.store.approval(approval_id)
    assert record is not None and (record.state, record.decided_by) == ("approved", f"slack:{ADMIN}")
    assert record.message_ref == f"{MAIN}:{update.args['ts']}"


async def test_deny_expiry_and_text_fallback(start_gateway: Factory, fake: FakeSlack) -> None:
    gw = await start_gateway()
    # Deny by button
    task, approval_id, _ = await ask(gw, fake, "Delete backups")
    await click(fake, "clawgate_deny", approval_id)
    assert await asyncio.wait_for(task, 5) == "denied"
    await fake.wait_until(lambda: len(fake.called("chat.update")) == 1)
    assert "Denied" in json.dumps(blocks_of(fake.called("chat.update")[0]))

    # Expiry: nobody answers, the request is denied as expired and the prompt edited
    task, approval_id, _ = await ask(gw, fake, "Rotate keys", expires_in=1)
    assert await asyncio.wait_for(task, 10) == "expired"
    await fake.wait_until(lambda: len(fake.called("chat.update")) == 2)
    update = fake.called("chat.update")[1]
    assert not [b for b in blocks_of(update) if b["type"] == "actions"]
    assert "Expired" in json.dumps(blocks_of(update))
    await click(fake, "clawgate_approve", approval_id)  # a late click cannot decide
    await fake.wait_until(
        lambda: bool(ephemerals(fake)) and "already decided" in ephemerals(fake)[-1].args["text"]
    )
    record = await gw.store.approval(approval_id)
    assert record is not None and record.state == "expired"

    # Text fallback: Slack users type `@bot /approve <id>`; a guest's attempt is ignored
    task, approval_id, _ = await ask(gw, fake, "Pay the invoice")
    await push_event(
        fake,
        message_event(f"<@{BOT_USER_ID}> /approve {approval_id}", "600.1", channel=MAIN, user=GUEST),
        "EvG",
    )
    await asyncio.sleep(0.3)
    assert not task.done()
    before = len(posts(fake, MAIN))
    await push_event(
        fake,
        message_event(f"<@{BOT_USER_ID}> /approve {approval_id}", "600.2", channel=MAIN, user=ADMIN),
        "EvA",
    )
    assert await asyncio.wait_for(task, 5) == "approved"
    await fake.wait_until(lambda: len(posts(fake, MAIN)) > before)
    assert posts(fake, MAIN)[-1].args["text"] == "Approved: Pay the invoice"
    await fake.wait_until(lambda: len(fake.called("chat.update")) == 3)
    assert "Approved" in json.dumps(blocks_of(fake.called("chat.update")[2]))


async def test_button_is_handled_while_an_agent_turn_is_in_progress(
    start_gateway: Factory, fake: FakeSlack, model_server: FakeModelServer
) -> None:
    gw = await start_gateway()
    entered, release = threading.Event(), threading.Event()
    echo = model_server.default

    def slow(record: Recorded) -> tuple[int, dict[str, Any]]:
        entered.set()
        release.wait(60)  # the turn hangs "in the model" until the approval is decided
        return echo(record)

    model_server.default = slow
    try:
        await push_event(fake, message_event(f"<@{BOT_USER_ID}> pay bob", "700.1", channel=TEAM), "EvTurn")
        started = time.monotonic()
        while not entered.is_set():
            assert time.monotonic() - started < 120, "the agent turn never reached the model"
            await asyncio.sleep(0.1)
        task, approval_id, _ = await ask(gw, fake, "Send 5 NEAR")
        await click(fake, "clawgate_approve", approval_id)
        assert await asyncio.wait_for(task, 5) == "approved"  # decided while the turn still runs
        assert not posts(fake, TEAM)
    finally:
        release.set()
    await fake.wait_until(lambda: bool(posts(fake, TEAM)), timeout=60)
    assert "pay bob" in posts(fake, TEAM)[0].args["text"]


# ---------------------------------------------------------------- HTTP mode


def signed_headers(body: str, secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


async def test_http_mode_answers_signed_events_and_rejects_forged_ones(
    start_gateway: Factory, fake: FakeSlack
) -> None:
    gw = await start_gateway(mode="http")
    [channel] = gw.channels
    assert isinstance(channel, SlackChannel) and channel.http_port
    url = f"http://127.0.0.1:{channel.http_port}/slack/events"
    forged = json.dumps(
        event_callback(message_event(f"<@{BOT_USER_ID}> forged", "800.1", channel=TEAM), "EvF")
    )
    good = json.dumps(
        event_callback(message_event(f"<@{BOT_USER_ID}> genuine", "800.2", channel=TEAM), "EvG")
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data=forged, headers=signed_headers(forged, secret="wrong")) as response:
            assert response.status == 401
        async with http.post(url, data=good, headers=signed_headers(good)) as response:
            assert response.status == 200
    await fake.wait_until(lambda: bool(posts(fake, TEAM)), timeout=120)
    [reply] = posts(fake, TEAM)
    assert "genuine" in reply.args["text"] and "forged" not in reply.args["text"]
    stored = await gw.store.messages_for_chat(f"slack:{TEAM}")
    assert [m.text for m in stored] == ["@Andy genuine"]
