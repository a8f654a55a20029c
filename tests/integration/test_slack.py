"""The real Bolt app against a Slack Web API and Socket Mode server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from channels.base import ApprovalOutcome, ApprovalPrompt, ButtonPress
from channels.slack import SlackChannel
from core.config import SlackConfig
from core.models import InboundMessage
from tests.fakes.slack_api import (
    BOT_ID,
    BOT_USER_ID,
    FakeSlack,
    button_payload,
    event_callback,
    events_envelope,
    interactive_envelope,
    message_event,
)

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


class Inbox:
    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self._changed = asyncio.Condition()

    async def __call__(self, message: InboundMessage) -> None:
        async with self._changed:
            self.messages.append(message)
            self._changed.notify_all()

    async def wait_for(self, count: int, timeout: float = 10) -> list[InboundMessage]:
        async def enough() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: len(self.messages) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.messages


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()


def socket_config(fake: FakeSlack) -> SlackConfig:
    return SlackConfig(
        enabled=True, bot_token="xoxb-test-token", app_token="xapp-test-token", base_url=fake.base_url
    )


@pytest.fixture
async def socket_channel(fake: FakeSlack) -> AsyncIterator[tuple[SlackChannel, Inbox]]:
    channel = SlackChannel(socket_config(fake), "Andy", ping_interval=0.2)
    inbox = Inbox()
    await channel.connect(inbox)
    yield channel, inbox
    await channel.disconnect()


# ---------------------------------------------------------------- HTTP mode


def signed_headers(body: str, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = str(timestamp if timestamp is not None else int(time.time()))
    digest = hmac.new(secret.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


async def test_http_mode_accepts_signed_and_rejects_forged_events(fake: FakeSlack) -> None:
    config = SlackConfig(
        enabled=True,
        mode="http",
        bot_token="xoxb-test-token",
        signing_secret=SECRET,
        base_url=fake.base_url,
        http_port=0,
    )
    channel, inbox = SlackChannel(config, "Andy"), Inbox()
    await channel.connect(inbox)
    try:
        url = f"http://127.0.0.1:{channel.http_port}/slack/events"
        good = json.dumps(event_callback(message_event(f"<@{BOT_USER_ID}> hello", "100.1"), "EvGood"))
        forged = json.dumps(event_callback(message_event("forged", "100.2"), "EvForged"))
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=forged, headers=signed_headers(forged, secret="wrong")) as r:
                assert r.status == 401
            async with http.post(url, data=forged, headers=signed_headers(forged, timestamp=1)) as r:
                assert r.status == 401  # a replayed (stale) request with a once-valid signature
            async with http.post(url, data=good, headers=signed_headers(good)) as r:
                assert r.status == 200
            # Slack's HTTP retry of the same event (X-Slack-Retry-Num) is acknowledged, not reprocessed
            retry_headers = {
                **signed_headers(good),
                "X-Slack-Retry-Num": "1",
                "X-Slack-Retry-Reason": "timeout",
            }
            async with http.post(url, data=good, headers=retry_headers) as r:
                assert r.status == 200
            challenge = json.dumps({"type": "url_verification", "challenge": "abc", "token": "t"})
            async with http.post(url, data=challenge, headers=signed_headers(challenge)) as r:
                assert r.status == 200 and (await r.json())["challenge"] == "abc"
        assert channel.connected
    finally:
        await channel.disconnect()
    assert [m.text for m in inbox.messages] == ["@Andy hello"]
    message = inbox.messages[0]
    assert (message.chat_id, message.sender_id, message.sender_name) == ("slack:C1", "slack:U1", "Alice")
    assert not channel.connected


# ---------------------------------------------------------------- Socket Mode


async def test_socket_mode_acks_dedupes_and_survives_a_dropped_socket(
    fake: FakeSlack, socket_channel: tuple[SlackChannel, Inbox]
) -> None:
    channel, inbox = socket_channel
    assert channel.connected and fake.connections == 1
    first = events_envelope(message_event("hello", "200.1"), "Ev1")
    await fake.push(first)
    await fake.wait_ack(first["envelope_id"])
    await inbox.wait_for(1)

    retry = events_envelope(message_event("hello", "200.1"), "Ev1", retry_attempt=1)
    await fake.push(retry)
    await fake.wait_ack(retry["envelope_id"])  # acknowledged, so Slack stops retrying…

    await fake.drop()
    await fake.wait_until(lambda: fake.connections == 2)
    assert len(fake.called("apps.connections.open")) >= 2
    again = events_envelope(message_event("hello", "200.1"), "Ev1", retry_attempt=2)
    await fake.push(again)
    await fake.wait_ack(again["envelope_id"])
    second = events_envelope(message_event("after the blip", "200.2"), "Ev2")
    await fake.push(second)
    await fake.wait_ack(second["envelope_id"])
    await inbox.wait_for(2)
    await asyncio.sleep(0.2)
    assert [m.text for m in inbox.messages] == ["hello", "after the blip"]  # …but processed once
    assert channel.connected


async def test_mentions_bots_threads_and_names(
    fake: FakeSlack, socket_channel: tuple[SlackChannel, Inbox]
) -> None:
    channel, inbox = socket_channel
    events = [
        message_event("from another bot", "300.1", user="U9", bot_id="B9", subtype="bot_message"),
        message_event("my own echo", "300.2", user=BOT_USER_ID, bot_id=BOT_ID),
        message_event("edited", "300.3", subtype="message_changed"),
        message_event(f"<@{BOT_USER_ID}|clawgate>, what is 1 &lt; 2?", "300.4"),
        message_event("in a thread", "300.5", user="U1", thread_ts="300.4"),
        message_event(f"<@{BOT_USER_ID}> /chatid", "300.6", user="U1", thread_ts="300.4"),
    ]
    for i, event in enumerate(events):
        envelope = events_envelope(event, f"EvT{i}")
        await fake.push(envelope)
        await fake.wait_ack(envelope["envelope_id"])
    # the same message also arrives as app_mention: one message, not two
    mention = {**message_event(f"<@{BOT_USER_ID}> what is 1 &lt; 2?", "300.4"), "type": "app_mention"}
    envelope = events_envelope(mention, "EvMention")
    await fake.push(envelope)
    await fake.wait_ack(envelope["envelope_id"])
    await inbox.wait_for(3)
    await asyncio.sleep(0.2)
    assert [m.text for m in inbox.messages] == ["@Andy what is 1 < 2?", "in a thread", "/chatid"]
    assert {m.sender_name for m in inbox.messages} == {"Alice"}
    assert len(fake.called("users.info")) == 1  # display names are cached

    await channel.send("slack:C1", "the answer")
    post = fake.called("chat.postMessage")[-1]
    assert post.args["channel"] == "C1" and post.args["thread_ts"] == "300.4"  # answered in the thread
    await channel.send("slack:C2:555.5", "explicit thread")
    post = fake.called("chat.postMessage")[-1]
    assert (post.args["channel"], post.args["thread_ts"]) == ("C2", "555.5")
    assert channel.owns_chat("slack:C1") and channel.owns_chat("slack:C1:1.2")
    assert not channel.owns_chat("tg:1") and not channel.owns_chat("console:main")


async def test_long_replies_are_split_and_429_is_honoured(
    fake: FakeSlack, socket_channel: tuple[SlackChannel, Inbox]
) -> None:
    channel, _ = socket_channel
    paragraph = ("**word** " * 80).strip()
    code = "```\n" + "\n".join(f"line {i} <tag>" for i in range(150)) + "\n```"
    text = "\n\n".join([paragraph] * 8 + [code] + [paragraph] * 4)
    fake.rate_limit_once("chat.postMessage", retry_after=1)
    started = time.monotonic()
    await channel.send("slack:C7", text)
    posts = fake.called("chat.postMessage")
    assert fake.rate_limited == ["chat.postMessage"]
    assert posts[0].at - started >= 1.0  # waited out Retry-After, then delivered, nothing lost
    chunks = [p.args["text"] for p in posts]
    assert len(chunks) >= 2 and all(len(c) <= 4000 for c in chunks)
    assert all(c.count("```") % 2 == 0 for c in chunks)  # every chunk renders its code on its own
    assert any("line 0 &lt;tag&gt;" in c and "line 149 &lt;tag&gt;" in c for c in chunks)  # block intact
    joined = "\n".join(chunks)
    assert "*word*" in joined and "**" not in joined
    assert joined.count("word") == 12 * 80


async def test_approval_buttons_are_handled_concurrently(
    fake: FakeSlack, socket_channel: tuple[SlackChannel, Inbox]
) -> None:
    channel, _ = socket_channel
    prompt = ApprovalPrompt(
        id="ab12",
        title="Send 5 NEAR",
        details="to **bob.near** <now>",
        requester_group="family",
        expires_at=time.time() + 600,
    )
    ref = await channel.send_approval("slack:CMAIN", prompt)
    post = fake.called("chat.postMessage")[-1]
    blocks = json.loads(post.args["blocks"]) if isinstance(post.args["blocks"], str) else post.args["blocks"]
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [(b["action_id"], b["value"]) for b in buttons] == [
        ("clawgate_approve", "ab12"),
        ("clawgate_deny", "ab12"),
    ]
    assert ref.startswith("CMAIN:")

    presses: list[ButtonPress] = []
    release = asyncio.Event()

    async def on_button(press: ButtonPress) -> str:
        presses.append(press)
        await release.wait()  # like an approval that waits behind agent work
        return "Approved <for real>"

    channel._on_button = on_button  # the same slot connect(on_message, on_button) fills
    click = interactive_envelope(button_payload("clawgate_approve", "ab12", channel="CMAIN"))
    await fake.push(click)
    await fake.wait_ack(click["envelope_id"], timeout=3)  # acked while on_button is still blocked
    await fake.wait_until(lambda: bool(presses))
    assert presses == [ButtonPress("ab12", "approve", "slack:U1", "alice", "slack:CMAIN")]
    assert not fake.called("chat.postEphemeral")
    release.set()
    await fake.wait_until(lambda: bool(fake.called("chat.postEphemeral")))
    ephemeral = fake.called("chat.postEphemeral")[0]
    assert (ephemeral.args["channel"], ephemeral.args["user"]) == ("CMAIN", "U1")
    assert ephemeral.args["text"] == "Approved &lt;for real&gt;"

    await channel.finish_approval(
        "slack:CMAIN", ref, prompt, ApprovalOutcome("approved", "slack:U1", time.time())
    )
    update = fake.called("chat.update")[-1]
    assert (update.args["channel"], update.args["ts"]) == tuple(ref.split(":", 1))
    blocks = update.args["blocks"]
    blocks = json.loads(blocks) if isinstance(blocks, str) else blocks
    assert not [b for b in blocks if b["type"] == "actions"]
    assert "Approved" in json.dumps(blocks) and "<@U1>" in json.dumps(blocks)


async def test_allow_for_button_is_rendered_and_reported_and_the_note_shown(
    fake: FakeSlack, socket_channel: tuple[SlackChannel, Inbox]
) -> None:
    """A held HTTP request's prompt (gateway/http_approvals.py) has a third button."""
    channel, _ = socket_channel
    prompt = ApprovalPrompt(
        "cd34", "HTTP POST api.x.com/pay", "body: {}", "team", time.time() + 60, "Allow for 10 min"
    )
    ref = await channel.send_approval("slack:CMAIN", prompt)
    post = fake.called("chat.postMessage")[-1]
    blocks = json.loads(post.args["blocks"]) if isinstance(post.args["blocks"], str) else post.args["blocks"]
    buttons = next(b for b in blocks if b["type"] == "actions")["elements"]
    assert [(b["action_id"], b["value"], b["text"]["text"]) for b in buttons] == [
        ("clawgate_approve", "cd34", "Approve"),
        ("clawgate_deny", "cd34", "Deny"),
        ("clawgate_allow_for", "cd34", "Allow for 10 min"),
    ]
    presses: list[ButtonPress] = []

    async def on_button(press: ButtonPress) -> str:
        presses.append(press)
        return "ok"

    channel._on_button = on_button
    click = interactive_envelope(button_payload("clawgate_allow_for", "cd34", channel="CMAIN"))
    await fake.push(click)
    await fake.wait_until(lambda: bool(presses))
    assert presses == [ButtonPress("cd34", "allow", "slack:U1", "alice", "slack:CMAIN")]
    outcome = ApprovalOutcome("approved", "slack:U1", time.time(), note="allow for 10 min")
    await channel.finish_approval("slack:CMAIN", ref, prompt, outcome)
    update = json.dumps(fake.called("chat.update")[-1].args["blocks"])
    assert "Approved" in update and "(allow for 10 min)" in update and "clawgate_allow_for" not in update


async def test_tokens_are_never_in_reprs_or_logs(fake: FakeSlack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    config = socket_config(fake)
    assert "xoxb-test-token" not in repr(config) and "xapp-test-token" not in repr(config)
    channel = SlackChannel(config, "Andy", ping_interval=0.2)
    await channel.connect(Inbox())
    await channel.send("slack:C1", "hi")
    await channel.disconnect()
    await channel.disconnect()  # idempotent
    assert "xoxb-test-token" not in caplog.text and "xapp-test-token" not in caplog.text
