"""Fuzzing Slack: Events API callbacks and block-action payloads through the real Bolt app.

Setup: the real `SlackChannel` in HTTP mode (signing secret on), its Web API pointed at the
Slack fake on loopback. Every example POSTs a correctly signed body to the channel's own
endpoint, exactly as Slack would: an `event_callback` (message / app_mention with hostile
subtypes, users, channels, timestamps and text) or an `interactive` block_actions payload.

Properties:
- Bolt answers 200 and logs no error (nothing escapes the channel's normalisation);
- at most one `InboundMessage` per event and never twice for one `channel:ts`; only from a
  human (no bot id, not this bot, a human subtype); ids are the event's own; well-formed for
  storage and the prompt wrapper once stored (tests/fuzz/checks.py); a `<@BOT>` mention
  becomes the trigger;
- a button press is reported only for clawgate's two action ids, with the clicker's own id and
  channel and the button's value as the approval id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import logging
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from hypothesis import strategies as st

from channels.base import ButtonPress
from channels.slack import APPROVE, DENY, SlackChannel
from core.config import SlackConfig
from core.models import InboundMessage
from gateway.store import storable
from tests.fakes.slack_api import BOT_ID, BOT_USER_ID, FakeSlack
from tests.fuzz import harness
from tests.fuzz.checks import assert_well_formed
from tests.fuzz.loop import BackgroundLoop
from tests.fuzz.strategies import json_values, nasty_text

SECRET = "fuzz-signing-secret"
TRIGGER = re.compile(r"(?<![\w@])@Andy(?!\w)", re.IGNORECASE)
HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message"}


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Env:
    loop: BackgroundLoop
    channel: SlackChannel
    http: aiohttp.ClientSession
    url: str
    errors: ErrorLog
    inbound: list[InboundMessage] = field(default_factory=list)
    presses: list[ButtonPress] = field(default_factory=list)
    examples: itertools.count[int] = field(default_factory=itertools.count)


@contextlib.contextmanager
def slack_env() -> Iterator[Env]:
    loop = BackgroundLoop()
    fake = FakeSlack()
    loop.run(fake.start())
    config = SlackConfig(
        enabled=True,
        mode="http",
        bot_token="xoxb-fuzz",
        signing_secret=SECRET,
        base_url=fake.base_url,
        http_host="127.0.0.1",
        http_port=0,
    )
    channel = SlackChannel(config, "Andy")
    errors = ErrorLog()
    env: Env

    async def on_message(message: InboundMessage) -> None:
        env.inbound.append(message)

    async def on_button(press: ButtonPress) -> str:
        env.presses.append(press)
        return "ok"

    async def start() -> aiohttp.ClientSession:
        await channel.connect(on_message, on_button)
        return aiohttp.ClientSession()

    http = loop.run(start())
    env = Env(loop, channel, http, f"http://127.0.0.1:{channel.http_port}{config.http_path}", errors)
    loggers = [logging.getLogger(n) for n in ("clawgate.slack.bolt", "channels.slack", "slack_bolt")]
    saved = [(lg, lg.propagate) for lg in loggers]
    for lg in loggers:
        lg.addHandler(errors)
        lg.propagate = False
    try:
        yield env
    finally:
        for lg, propagate in saved:
            lg.removeHandler(errors)
            lg.propagate = propagate

        async def stop() -> None:
            await http.close()
            await channel.disconnect()
            await fake.stop()

        loop.run(stop())
        loop.close()


def _signed(body: str, content_type: str) -> dict[str, str]:
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:{body}".encode(), hashlib.sha256).hexdigest()
    return {
        "Content-Type": content_type,
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": f"v0={digest}",
    }


async def _post(env: Env, body: str, content_type: str) -> int:
    data = body.encode("utf-8", "surrogatepass")
    async with env.http.post(env.url, data=data, headers=_signed(body, content_type)) as response:
        await response.read()
        status = response.status
    while env.channel._tasks:  # button presses are answered in their own tasks
        await asyncio.gather(*list(env.channel._tasks), return_exceptions=True)
    return status


_text = nasty_text()
_any = json_values()
_mention = st.sampled_from(
    [f"<@{BOT_USER_ID}>", f"<@{BOT_USER_ID}|claw>", f"<@{BOT_USER_ID}>:", "<@U1>", "/chatid"]
)
_message_text = st.one_of(_text, st.lists(st.one_of(_text, _mention), max_size=4).map(" ".join), _any)
_ts = st.one_of(
    st.builds(lambda s, us: f"{s}.{us:06d}", st.integers(0, 2**33), st.integers(0, 999_999)),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "", "1_000.5", " 12 ", "0x10"]),
    _text,
)
# Ids and times are Slack's own strings (Bolt itself assumes so); people control their content.
_users = st.one_of(st.sampled_from(["U1", "U2", BOT_USER_ID, ""]), _text)
_channels = st.one_of(st.sampled_from(["C1", "C2", "D1", "G1"]), _text)
_valid_ts = st.builds(lambda s, us: f"{s}.{us:06d}", st.integers(0, 2**33), st.integers(0, 999_999))
_event_base = {
    "type": st.sampled_from(["message", "app_mention"]),
    "user": _users,
    "channel": _channels,
    "ts": _ts,
    "text": _message_text,
}
# A person's message (most examples, so most get delivered) or anything else Slack may send.
_human_event = st.fixed_dictionaries(
    _event_base | {"user": st.sampled_from(["U1", "U2"]), "ts": _valid_ts},
    optional={
        "subtype": st.sampled_from(sorted(HUMAN_SUBTYPES - {None})),
        "thread_ts": _ts,
        "channel_type": st.sampled_from(["channel", "im", "group"]),
    },
)
_other_event = st.fixed_dictionaries(
    _event_base,
    optional={
        "subtype": st.one_of(
            st.sampled_from(sorted(HUMAN_SUBTYPES - {None}) + ["bot_message", "message_changed"]), _text
        ),
        "thread_ts": _ts,
        "bot_id": st.one_of(st.just(BOT_ID), _any),
        "bot_profile": _any,
        "channel_type": st.sampled_from(["channel", "im", "group"]),
    },
)
_event = st.one_of(_human_event, _other_event)
_callback = st.fixed_dictionaries(
    {
        "token": st.just("t"),
        "team_id": st.just("T1"),
        "api_app_id": st.just("A1"),
        "type": st.just("event_callback"),
        "event": _event,
        "event_id": st.one_of(st.text(max_size=12), _any),
        "event_time": st.integers(0, 2**31),
    }
)
# Slack builds the envelope (objects stay objects); what people control are the values inside.
_user_objects = st.fixed_dictionaries(
    {"id": _users}, optional={"name": _any, "username": _any, "team_id": _any}
)
_channel_objects = st.fixed_dictionaries({"id": _channels}, optional={"name": _any})
_actions = st.fixed_dictionaries(
    {
        "action_id": st.one_of(st.sampled_from([APPROVE, DENY, "other"]), _text),
        "block_id": _text,
        "type": st.just("button"),
        "action_ts": _ts,
    },
    optional={"value": st.one_of(_text, _any)},
)
_interactive = st.fixed_dictionaries(
    {
        "type": st.just("block_actions"),
        "user": _user_objects,
        "api_app_id": st.just("A1"),
        "token": st.just("t"),
        "team": st.just({"id": "T1", "domain": "fuzz"}),
        "trigger_id": st.just("1.2.3"),
        "actions": st.lists(_actions, min_size=1, max_size=2),
    },
    optional={
        "channel": _channel_objects,
        "container": st.fixed_dictionaries(
            {"type": st.just("message")}, optional={"channel_id": _channels, "thread_ts": _ts}
        ),
    },
)
_payloads = st.one_of(st.tuples(st.just("event"), _callback), st.tuples(st.just("action"), _interactive))


def _unique(body: dict[str, Any], n: int) -> None:
    """Make the example's channel and event id its own: the channel's redelivery filter remembers
    every `channel:ts` and event id it saw, which would make examples depend on each other."""
    event = body.get("event")
    if isinstance(event, dict) and isinstance(event.get("channel"), str):
        event["channel"] += f"-{n}"
    if isinstance(body.get("event_id"), str):
        body["event_id"] += f"-{n}"


def _check_event(env: Env, body: dict[str, Any]) -> None:
    event = body["event"]
    assert len(env.inbound) <= 1, env.inbound
    if not env.inbound:
        return
    got = env.inbound[0]
    user, channel, ts = event["user"], event["channel"], event["ts"]
    assert event.get("subtype") in HUMAN_SUBTYPES, event
    assert not event.get("bot_id") and not event.get("bot_profile"), event
    assert isinstance(user, str) and user and user != BOT_USER_ID, event
    assert isinstance(channel, str) and isinstance(ts, str)
    assert (got.chat_id, got.sender_id, got.external_id) == (f"slack:{channel}", f"slack:{user}", ts)
    assert not got.is_from_bot
    assert_well_formed(storable(got), "slack")
    text = event.get("text")
    if isinstance(text, str) and f"<@{BOT_USER_ID}" in text and not got.text.startswith("/"):
        assert TRIGGER.search(got.text), (text, got.text)


def _check_action(env: Env, body: dict[str, Any]) -> None:
    assert not env.inbound
    assert len(env.presses) <= 1, env.presses
    if not env.presses:
        return
    press = env.presses[0]
    action = body["actions"][0]
    assert action["action_id"] in (APPROVE, DENY)
    assert press.decision == ("approve" if action["action_id"] == APPROVE else "deny")
    assert press.approval_id == str(action.get("value") or "")
    user = body["user"]
    assert isinstance(user, dict) and press.user_id == f"slack:{user['id']}", (user, press)
    channel = body.get("channel")
    container = body.get("container")
    expected = (channel.get("id") if isinstance(channel, dict) else None) or (
        container.get("channel_id") if isinstance(container, dict) else None
    )
    assert press.chat_id == f"slack:{expected}", (body, press)


def _event_callback(**event: object) -> tuple[str, dict[str, Any]]:
    base = {"type": "message", "user": "U1", "channel": "C1", "ts": "1700000000.000100", "text": "hi"}
    return "event", {"type": "event_callback", "event_id": "Ev1", "event": base | event}


@harness.fuzz_target(
    "slack_events_and_actions",
    ci_examples=500,
    setup=slack_env,
    examples=(
        {"payload": _event_callback(ts=""), "deliveries": 1},  # float("") escaped the handler: 500
        {"payload": _event_callback(ts="nan"), "deliveries": 1},  # a NaN time poisoned the prompt
        {"payload": _event_callback(user={"id": "U1"}), "deliveries": 1},  # unhashable user: 500
    ),
    payload=_payloads,
    deliveries=st.integers(1, 2),
)
def slack_events_and_actions(env: Env, payload: tuple[str, dict[str, Any]], deliveries: int) -> None:
    kind, body = payload
    env.inbound.clear()
    env.presses.clear()
    env.errors.records.clear()
    if kind == "event":
        _unique(body, next(env.examples))
        raw, content_type = json.dumps(body), "application/json"
        deliveries_ = deliveries  # Slack retries an event it thinks was not acknowledged
    else:
        raw = urllib.parse.urlencode({"payload": json.dumps(body)}, encoding="utf-8", errors="surrogatepass")
        content_type, deliveries_ = "application/x-www-form-urlencoded", 1
    ours = kind == "event" or body["actions"][0]["action_id"] in (APPROVE, DENY)
    for _ in range(deliveries_):
        status = env.loop.run(_post(env, raw, content_type))
        assert status == (200 if ours else 404), status  # 404: Bolt has no listener for that action
    assert not env.errors.records, [r.getMessage() + repr(r.exc_info) for r in env.errors.records]
    if kind == "event":
        _check_event(env, body)
    else:
        _check_action(env, body)


def test_slack_events_and_actions() -> None:
    harness.check("slack_events_and_actions")
