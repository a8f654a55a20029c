"""Fuzzing Telegram updates: Bot API JSON as python-telegram-bot parses it, through the channel.

Setup: the real `TelegramChannel` connected to the Bot API fake on loopback. Every example
is a generated update dict shaped like Telegram's (messages, channel posts, topics, replies,
migrations, photos/documents, callback queries), with hostile field values. It is parsed by
`Update.de_json` (an update PTB itself cannot parse never reaches clawgate) and handed to the
channel's inbound path (`_handle_batch`, where its getUpdates loop and its webhook deliver).

Properties:
- no handler error is logged (nothing escapes the channel's normalisation);
- at most one `InboundMessage` per update, well-formed for storage and for the prompt wrapper
  (tests/fuzz/checks.py); its ids are the update's own; a human who mentions the bot gets the
  trigger, a bot never passes as a human and a human never as a bot;
- a button press is reported only for callback data of the exact approval format, with the
  presser's own id and chat.

A second target, `telegram_webhook`, POSTs to the webhook endpoint of a channel in webhook mode,
as anyone on the network may: hostile bodies (updates, any JSON, bytes) with the right, a wrong
or no secret token. Without the right token the answer is 401/403 and nothing happens; with it,
200 or 400 (never a traceback), and what is delivered has the properties above.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from hypothesis import strategies as st
from telegram import Update

from channels.base import ButtonPress
from channels.telegram import TelegramChannel, parse_chat_id
from core.models import InboundMessage
from gateway.store import storable
from tests.fakes.telegram_api import BOT, TOKEN, FakeBotApi
from tests.fuzz import harness
from tests.fuzz.checks import assert_well_formed
from tests.fuzz.loop import BackgroundLoop
from tests.fuzz.strategies import json_values, nasty_text

HUMAN = {"id": 4242, "is_bot": False, "first_name": "Alice"}
OTHER_BOT = {"id": 5555, "is_bot": True, "first_name": "Spam", "username": "spam_bot"}
MENTION = re.compile(rf"(?<![\w@])@{BOT['username']}(?!\w)", re.IGNORECASE)
TRIGGER = re.compile(r"(?<![\w@])@Andy(?!\w)", re.IGNORECASE)


class ErrorLog(logging.Handler):
    """Collects ERROR records: PTB logs a handler's exception instead of raising it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Env:
    loop: BackgroundLoop
    channel: TelegramChannel
    errors: ErrorLog
    inbound: list[InboundMessage] = field(default_factory=list)
    presses: list[ButtonPress] = field(default_factory=list)
    migrations: list[tuple[str, str]] = field(default_factory=list)
    http: aiohttp.ClientSession | None = None


WEBHOOK_SECRET = "fuzz-webhook-secret_0123456789"


@contextlib.contextmanager
def _telegram_env(mode: str) -> Iterator[Env]:
    api = FakeBotApi().start()
    loop = BackgroundLoop()
    errors = ErrorLog()
    loggers = [logging.getLogger(n) for n in ("telegram", "channels.telegram", "channels.telegram_webhook")]
    with tempfile.TemporaryDirectory(prefix="cgfz") as tmp:
        env: Env

        async def on_message(message: InboundMessage) -> None:
            env.inbound.append(message)

        async def on_button(press: ButtonPress) -> str:
            env.presses.append(press)
            return "ok"

        def on_migrate(old: str, new: str) -> None:
            env.migrations.append((old, new))

        webhook = {}
        if mode == "webhook":
            webhook = {
                "webhook_url": "https://bot.example.invalid/clawgate-telegram",
                "webhook_port": 0,
                "webhook_secret_token": WEBHOOK_SECRET,
            }
        channel = TelegramChannel(
            TOKEN,
            "Andy",
            base_url=api.base_url,
            mode=mode,
            data_dir=Path(tmp),
            on_migrate=on_migrate,
            poll_timeout_s=1,
            **webhook,  # type: ignore[arg-type]
        )
        env = Env(loop, channel, errors)
        loop.run(channel.connect(on_message, on_button))
        if mode == "webhook":
            env.http = loop.run(_session())
        saved = [(lg, lg.propagate) for lg in loggers]
        for lg in loggers:
            lg.addHandler(errors)
            lg.propagate = False  # the collected errors fail the example; no need to print them too
        try:
            yield env
        finally:
            for lg, propagate in saved:
                lg.removeHandler(errors)
                lg.propagate = propagate
            if env.http is not None:
                loop.run(env.http.close())
            loop.run(channel.disconnect())
            loop.close()
            api.stop()


async def _session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession()


def telegram_env() -> contextlib.AbstractContextManager[Env]:
    return _telegram_env("polling")


def webhook_env() -> contextlib.AbstractContextManager[Env]:
    return _telegram_env("webhook")


_ints = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0, -1, 1, 2**31, -(2**31), 2**53 + 1, -1001234567890, BOT["id"], 4242]),
)
_text = nasty_text()
_mentions = st.sampled_from(
    [
        f"@{BOT['username']}",
        f"@{BOT['username'].upper()}",
        "@Andy",
        "@andy",
        "/status",
        "/chatid@claw_test_bot",
    ]
)
_message_text = st.one_of(_text, st.lists(st.one_of(_text, _mentions), max_size=4).map(" ".join))
_users = st.one_of(
    st.sampled_from([HUMAN, OTHER_BOT, BOT]),
    st.fixed_dictionaries(
        {"id": _ints, "is_bot": st.booleans(), "first_name": _text},
        optional={"last_name": _text, "username": _text, "language_code": _text},
    ),
)
_chat_types = st.sampled_from(["private", "group", "supergroup", "channel", "weird"])
_chats = st.fixed_dictionaries(
    {"id": _ints, "type": _chat_types},
    optional={"title": _text, "username": _text, "first_name": _text, "is_forum": st.booleans()},
)
_dates = st.one_of(st.integers(0, 2**31), st.sampled_from([0, 1, 1_700_000_000]))
_photo = st.fixed_dictionaries(
    {"file_id": _text, "file_unique_id": _text, "width": _ints, "height": _ints},
    optional={"file_size": _ints},
)
_document = st.fixed_dictionaries(
    {"file_id": _text, "file_unique_id": _text}, optional={"file_name": _text, "file_size": _ints}
)


def _message(
    reply: st.SearchStrategy[dict[str, Any]] | None, service: bool
) -> st.SearchStrategy[dict[str, Any]]:
    """A chat message; `service=False` always has text and a sender, so most examples get delivered."""
    required: dict[str, st.SearchStrategy[Any]] = {"message_id": _ints, "date": _dates, "chat": _chats}
    optional: dict[str, st.SearchStrategy[Any]] = {
        "sender_chat": _chats,
        "caption": _message_text,
        "message_thread_id": _ints,
        "is_topic_message": st.booleans(),
        "photo": st.lists(_photo, max_size=2),
        "document": _document,
        "entities": st.lists(
            st.fixed_dictionaries(
                {
                    "type": st.sampled_from(["mention", "bold", "bot_command"]),
                    "offset": _ints,
                    "length": _ints,
                }
            ),
            max_size=2,
        ),
    }
    if service:
        optional |= {
            "from": _users,
            "text": _message_text,
            "migrate_to_chat_id": _ints,
            "migrate_from_chat_id": _ints,
        }
    else:
        required |= {"from": _users, "text": _message_text}
    if reply is not None:
        optional["reply_to_message"] = reply
    return st.fixed_dictionaries(required, optional=optional)


_plain_message = _message(None, service=True)
_messages = st.one_of(_message(_plain_message, service=False), _message(_plain_message, service=True))
_callback_data = st.one_of(
    st.builds(
        lambda i, d: f"ap:{i}:{d}",
        st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,56}", fullmatch=True), _text),
        st.sampled_from(["a", "d", "x", "a:d", ""]),
    ),
    _text,
)
_callback = st.fixed_dictionaries(
    {"id": _text, "from": _users, "chat_instance": _text, "data": _callback_data},
    optional={"message": _plain_message, "inline_message_id": _text},
)
_updates = st.one_of(
    st.fixed_dictionaries({"update_id": _ints, "message": _messages}),
    st.fixed_dictionaries({"update_id": _ints, "message": _messages}),
    st.fixed_dictionaries({"update_id": _ints, "channel_post": _messages}),
    st.fixed_dictionaries({"update_id": _ints, "edited_message": _messages}),
    st.fixed_dictionaries({"update_id": _ints, "callback_query": _callback}),
)


async def _process(env: Env, update: Update) -> None:
    # The channel's own inbound path (its getUpdates loop and its webhook both end here).
    assert await env.channel._handle_batch([update]) == 1, "the update was not acknowledged"
    # Button presses run as their own tasks (never behind a message); wait for them here.
    while env.channel._tasks:
        await asyncio.gather(*list(env.channel._tasks), return_exceptions=True)


def _check_message(env: Env, data: dict[str, Any]) -> None:
    message = data.get("message") or data.get("channel_post")
    if message is None:  # edited messages are not input
        assert not env.inbound, env.inbound
        return
    assert len(env.inbound) <= 1, env.inbound
    if message.get("migrate_to_chat_id") or message.get("migrate_from_chat_id"):
        assert not env.inbound and len(env.migrations) <= 1, (env.inbound, env.migrations)  # once per pair
        return
    if not env.inbound:
        return
    got = env.inbound[0]
    chat_id = message["chat"]["id"]
    assert_well_formed(storable(got), "telegram")
    assert got.text.strip(), "joins, pins and other service messages are dropped, not delivered"
    assert parse_chat_id(got.chat_id) == (chat_id, None)
    assert got.external_id == f"{chat_id}:{message['message_id']}"
    parse_chat_id(got.sender_id)
    sender = message.get("from")
    is_bot = sender is not None and (sender["is_bot"] or sender["id"] == BOT["id"])
    assert got.is_from_bot == is_bot, (sender, got)
    if sender is not None:
        assert got.sender_id == f"tg:{sender['id']}"
    text = message.get("text") or message.get("caption") or ""
    if not is_bot and MENTION.search(text) and not text.lstrip().startswith("/"):
        assert TRIGGER.search(got.text), (text, got.text)


def _check_callback(env: Env, data: dict[str, Any]) -> None:
    assert not env.inbound
    query = data["callback_query"]
    match = re.fullmatch(r"ap:([A-Za-z0-9_-]{1,56}):([ad])", query.get("data") or "")
    if match is None:
        assert not env.presses, (query.get("data"), env.presses)
        return
    assert len(env.presses) == 1, env.presses
    press = env.presses[0]
    assert press.approval_id == match.group(1)
    assert press.decision == ("approve" if match.group(2) == "a" else "deny")
    assert press.user_id == f"tg:{query['from']['id']}"
    chat = query["message"]["chat"]["id"] if "message" in query else 0
    assert press.chat_id == f"tg:{chat}"


@harness.fuzz_target("telegram_updates", ci_examples=500, setup=telegram_env, data=_updates)
def telegram_updates(env: Env, data: dict[str, Any]) -> None:
    env.inbound.clear()
    env.presses.clear()
    env.migrations.clear()
    env.errors.records.clear()
    try:
        update = Update.de_json(data, env.channel._bot)
    except (TypeError, ValueError, KeyError, OverflowError):
        return  # PTB rejects it before any clawgate code runs
    env.loop.run(_process(env, update))
    assert not env.errors.records, [r.getMessage() + str(r.exc_info) for r in env.errors.records]
    if "callback_query" in data:
        _check_callback(env, data)
    else:
        _check_message(env, data)


_header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)
_secrets = st.one_of(
    st.just(WEBHOOK_SECRET),
    st.none(),
    st.sampled_from(["", WEBHOOK_SECRET[:-1], WEBHOOK_SECRET + "x", WEBHOOK_SECRET.upper()]),
    _header_text,
)
_bodies = st.one_of(
    _updates.map(json.dumps),
    json_values().map(json.dumps),
    st.builds(
        lambda u, extra: json.dumps(u | extra), _updates, st.dictionaries(_text, json_values(), max_size=2)
    ),
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.sampled_from(["", "{", "[" * 5000, '{"update_id": true}', '{"update_id": 1e999}']),
)


async def _post(env: Env, body: str, secret: str | None) -> int:
    assert env.http is not None
    url = f"http://127.0.0.1:{env.channel.webhook_port}/clawgate-telegram"
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Telegram-Bot-Api-Secret-Token"] = secret
    async with env.http.post(url, data=body.encode("utf-8", "surrogatepass"), headers=headers) as response:
        await response.read()
        status = response.status
    while env.channel._tasks:
        await asyncio.gather(*list(env.channel._tasks), return_exceptions=True)
    return status


@harness.fuzz_target("telegram_webhook", ci_examples=300, setup=webhook_env, body=_bodies, secret=_secrets)
def telegram_webhook(env: Env, body: str, secret: str | None) -> None:
    """The network end of webhook mode: anyone may POST; only Telegram knows the secret."""
    env.inbound.clear()
    env.presses.clear()
    env.migrations.clear()
    env.errors.records.clear()
    status = env.loop.run(_post(env, body, secret))
    assert not env.errors.records, [r.getMessage() + str(r.exc_info) for r in env.errors.records]
    if secret != WEBHOOK_SECRET:
        assert status in (401, 403), status  # refused before the body is read
        assert not env.inbound and not env.presses and not env.migrations
        return
    assert status in (200, 400), status  # 500 only when the store fails, and ours never does
    if status == 400:
        assert not env.inbound and not env.presses, "a refused update changed something"
        return
    data = json.loads(body)
    if "callback_query" in data:
        _check_callback(env, data)
    elif data.get("message") or data.get("channel_post"):
        _check_message(env, data)
    else:
        assert not env.inbound and not env.presses


def test_telegram_webhook() -> None:
    harness.check("telegram_webhook")


def test_telegram_updates() -> None:
    harness.check("telegram_updates")
