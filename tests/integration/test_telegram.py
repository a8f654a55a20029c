"""The Telegram channel: the real python-telegram-bot stack against a Bot API server on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from channels.base import ApprovalOutcome, ApprovalPrompt, ButtonPress
from channels.telegram import TelegramChannel
from core.models import InboundMessage
from gateway.channel_setup import inbox_writer
from gateway.commands import menu
from tests.fakes.telegram_api import BOT, TOKEN, FakeBotApi, check_html

GROUP = -1001234567890
OWNER = {"id": 4242, "is_bot": False, "first_name": "Alice"}


class Harness:
    def __init__(self, api: FakeBotApi, channel: TelegramChannel) -> None:
        self.api, self.channel = api, channel
        self.inbound: list[InboundMessage] = []
        self.presses: list[ButtonPress] = []
        self.migrations: list[tuple[str, str]] = []
        self.button_reply = "Approved."
        self.button_gate: asyncio.Event | None = None

    async def on_message(self, message: InboundMessage) -> None:
        self.inbound.append(message)

    async def on_button(self, press: ButtonPress) -> str:
        self.presses.append(press)
        if self.button_gate is not None:
            await self.button_gate.wait()
        return self.button_reply

    async def api_wait(self, predicate: Callable[[], Any], timeout: float = 10) -> Any:
        return await asyncio.to_thread(self.api.wait_for, predicate, timeout)

    async def inbound_count(self, count: int, timeout: float = 10) -> list[InboundMessage]:
        deadline = time.monotonic() + timeout
        while len(self.inbound) < count:
            assert time.monotonic() < deadline, f"only {len(self.inbound)} of {count} messages arrived"
            await asyncio.sleep(0.02)
        return self.inbound


@pytest.fixture
async def tg(tmp_path: Path) -> AsyncIterator[Harness]:
    api = FakeBotApi().start()
    inboxes = {f"tg:{GROUP}": inbox_writer(tmp_path, "team")}
    harness: Harness

    async def on_migrate(old: str, new: str) -> None:
        harness.migrations.append((old, new))

    channel = TelegramChannel(
        TOKEN,
        "Andy",
        base_url=api.base_url,
        data_dir=tmp_path / "data",
        on_migrate=on_migrate,
        group_inbox=inboxes.get,
        commands=menu(),
        max_file_bytes=1000,
        poll_timeout_s=1,
    )
    harness = Harness(api, channel)
    await channel.connect(harness.on_message, harness.on_button)
    try:
        yield harness
    finally:
        await channel.disconnect()
        api.stop()


async def test_message_reaches_gateway_and_reply_lands_in_chat(tg: Harness) -> None:
    tg.api.push_message(GROUP, "hello @Andy", user=OWNER, title="Team")
    [message] = await tg.inbound_count(1)
    assert message.chat_id == f"tg:{GROUP}"
    assert message.sender_id == "tg:4242" and message.sender_name == "Alice"
    assert message.text == "hello @Andy" and message.chat_name == "Team" and not message.is_from_bot
    assert message.channel == "telegram" and tg.channel.owns_chat(message.chat_id)
    await tg.channel.send(message.chat_id, "**hi** there")
    [sent] = tg.api.sent
    assert sent["chat"]["id"] == GROUP and sent["text"] == "<b>hi</b> there" and sent["parse_mode"] == "HTML"
    assert "message_thread_id" not in sent


async def test_reply_goes_to_the_topic_it_came_from(tg: Harness) -> None:
    tg.api.push_message(GROUP, "in topic", thread_id=77)
    [message] = await tg.inbound_count(1)
    assert message.chat_id == f"tg:{GROUP}"  # registration covers every topic
    await tg.channel.send(message.chat_id, "answer")
    assert tg.api.sent[-1]["message_thread_id"] == 77
    await tg.channel.send(f"tg:{GROUP}:5", "explicit topic")
    assert tg.api.sent[-1]["message_thread_id"] == 5
    assert tg.channel.owns_chat(f"tg:{GROUP}:5") and not tg.channel.owns_chat("slack:C1")


async def test_mention_and_reply_to_bot_are_the_trigger(tg: Harness) -> None:
    tg.api.push_message(GROUP, "@claw_test_bot what is up?")
    bot_message = {
        "message_id": 5,
        "date": int(time.time()),
        "chat": {"id": GROUP, "type": "supergroup"},
        "from": BOT,
        "text": "earlier answer",
    }
    tg.api.push_message(GROUP, "and then?", reply_to=bot_message)
    tg.api.push_message(GROUP, "just chatting")
    tg.api.push_message(GROUP, "/chatid@claw_test_bot")
    tg.api.push_message(GROUP, "from a bot", user={"id": 55, "is_bot": True, "first_name": "Other"})
    messages = await tg.inbound_count(5)
    assert [m.text for m in messages] == [
        "@Andy what is up?",
        "@Andy and then?",
        "just chatting",
        "/chatid@claw_test_bot",
        "from a bot",
    ]
    assert [m.is_from_bot for m in messages] == [False, False, False, False, True]


async def test_long_reply_is_chunked_at_boundaries_with_balanced_tags(tg: Harness) -> None:
    paragraphs = [f"Paragraph {i} **bold** " + "word " * 150 for i in range(6)]
    code = "```\n" + "\n".join(f"line {i} <x> & y" for i in range(400)) + "\n```"
    await tg.channel.send(f"tg:{GROUP}", "\n\n".join(paragraphs) + "\n\n" + code + "\n\nThe end.")
    chunks = [m["text"] for m in tg.api.sent]
    assert len(chunks) > 3
    for chunk in chunks:
        assert len(chunk) <= 4096
        check_html(chunk)  # the fake accepted it, but be explicit: balanced, known tags
        assert not re.search(r"<[^>]*$", chunk)
    pre_chunks = [c for c in chunks if "<pre>" in c]
    assert len(pre_chunks) >= 2  # the code block was split, each part closed and reopened
    code_lines = [line for c in pre_chunks for line in re.sub(r"</?pre>", "\n", c).split("\n")]
    assert [ln for ln in code_lines if ln.startswith("line ")] == [
        f"line {i} &lt;x&gt; &amp; y" for i in range(400)
    ]
    prose = [c for c in chunks if "<pre>" not in c and "Paragraph" in c]
    assert all(c.rstrip().endswith("word") for c in prose)  # cut at a boundary, not mid-word
    assert chunks[-1].endswith("The end.")


async def test_rejected_html_falls_back_to_plain_text(tg: Harness) -> None:
    tg.api.fail_next("sendMessage", 400, "Bad Request: can't parse entities: unsupported start tag")
    await tg.channel.send(f"tg:{GROUP}", "**bold** and `code`")
    [sent] = tg.api.sent
    assert sent["text"] == "bold and code" and sent["parse_mode"] is None


async def test_429_retry_after_is_honoured_without_losing_the_message(tg: Harness) -> None:
    tg.api.fail_next("sendMessage", 429, retry_after=1)
    started = time.monotonic()
    await tg.channel.send(f"tg:{GROUP}", "patience")
    assert time.monotonic() - started >= 1.0
    assert [m["text"] for m in tg.api.sent] == ["patience"]


async def test_approval_buttons_toast_and_finish(tg: Harness) -> None:
    prompt = ApprovalPrompt("k3x9", "Send 5 NEAR", "to bob.near <memo>", "team", time.time() + 600)
    ref = await tg.channel.send_approval(f"tg:{GROUP}", prompt)
    [posted] = tg.api.sent
    assert ref == f"{GROUP}:{posted['message_id']}"
    buttons = posted["reply_markup"]["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == ["ap:k3x9:a", "ap:k3x9:d"]
    assert "to bob.near &lt;memo&gt;" in posted["text"]

    # The button handler blocks (as the gateway might); messages keep flowing meanwhile.
    tg.button_gate = asyncio.Event()
    query_id = tg.api.push_callback(tg.api.messages[(GROUP, posted["message_id"])], "ap:k3x9:a", user=OWNER)
    tg.api.push_message(GROUP, "while the button waits")
    await tg.inbound_count(1)
    assert tg.presses == [ButtonPress("k3x9", "approve", "tg:4242", "Alice", f"tg:{GROUP}")]
    tg.button_gate.set()
    [answer] = await tg.api_wait(lambda: tg.api.answers)
    assert answer["callback_query_id"] == query_id and answer["text"] == "Approved."

    outcome = ApprovalOutcome("approved", "tg:4242", time.time())
    await tg.channel.finish_approval(f"tg:{GROUP}", ref, prompt, outcome)
    edited = tg.api.messages[(GROUP, posted["message_id"])]
    assert "reply_markup" not in edited and "Approved by tg:4242" in edited["text"]


async def test_migration_to_supergroup_is_reported(tg: Harness) -> None:
    tg.api.push_message(-5001, None, chat_type="group", extra={"migrate_to_chat_id": GROUP})
    deadline = time.monotonic() + 10
    while not tg.migrations:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert tg.migrations == [("tg:-5001", f"tg:{GROUP}")]
    assert tg.inbound == []


async def test_documents_are_saved_into_the_host_owned_group_inbox(tg: Harness, tmp_path: Path) -> None:
    tg.api.files["doc1"] = b"quarterly numbers"
    tg.api.files["big"] = b"x" * 5000
    document = {"file_id": "doc1", "file_unique_id": "u1", "file_name": "report.txt", "file_size": 17}
    big = {"file_id": "big", "file_unique_id": "u2", "file_name": "big.bin", "file_size": 5000}
    first = tg.api.push_message(GROUP, None, extra={"document": document, "caption": "@claw_test_bot read"})
    tg.api.push_message(GROUP, None, extra={"document": big})
    messages = await tg.inbound_count(2)
    name = f"{first['message_id']}-report.txt"
    assert messages[0].text == f"@Andy read\n[attachment saved: /workspace/inbox/{name}]"
    saved = tmp_path / "inbox" / "team" / name  # outside the group folder; mounted read-only
    assert saved.read_bytes() == b"quarterly numbers"
    assert saved.stat().st_mode & 0o777 == 0o644
    assert "not saved" in messages[1].text


async def test_commands_are_registered_once(tg: Harness, tmp_path: Path) -> None:
    assert [c["command"] for c in tg.api.commands] == ["help", "chatid", "whoami"]
    again = TelegramChannel(
        TOKEN, "Andy", base_url=tg.api.base_url, data_dir=tmp_path / "data", commands=menu(), poll_timeout_s=1
    )
    await again.connect(tg.on_message)
    await again.disconnect()
    assert [name for name, _ in tg.api.calls].count("setMyCommands") == 1


async def test_token_is_not_in_repr(tg: Harness) -> None:
    assert TOKEN not in repr(tg.channel)


async def test_webhook_mode_checks_the_secret_token(tmp_path: Path) -> None:
    import socket

    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    api = FakeBotApi().start()
    inbound: list[InboundMessage] = []

    async def on_message(message: InboundMessage) -> None:
        inbound.append(message)

    channel = TelegramChannel(
        TOKEN,
        "Andy",
        base_url=api.base_url,
        mode="webhook",
        webhook_url="https://bot.example.org/clawgate-telegram",
        webhook_listen="127.0.0.1",
        webhook_port=port,
        webhook_secret_token="s3cret-token",
        data_dir=tmp_path,
    )
    await channel.connect(on_message)
    try:
        assert api.webhook["url"] == "https://bot.example.org/clawgate-telegram"
        assert api.webhook["secret_token"] == "s3cret-token"
        update = {
            "update_id": 1,
            "message": {
                "message_id": 1,
                "date": int(time.time()),
                "chat": {"id": GROUP, "type": "supergroup", "title": "t"},
                "from": OWNER,
                "text": "via webhook",
            },
        }
        url = f"http://127.0.0.1:{port}/clawgate-telegram"
        async with httpx.AsyncClient() as client:
            wrong = await client.post(url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "nope"})
            missing = await client.post(url, json=update)
            right = await client.post(
                url, json=update, headers={"X-Telegram-Bot-Api-Secret-Token": "s3cret-token"}
            )
        assert wrong.status_code == 403 and missing.status_code == 401 and right.status_code == 200
        deadline = time.monotonic() + 10
        while not inbound:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert [m.text for m in inbound] == ["via webhook"]
    finally:
        await channel.disconnect()
        api.stop()


async def test_end_to_end_through_the_gateway(dirs, model_server, sandbox_image, docker_client) -> None:  # type: ignore[no-untyped-def]
    """A real Gateway (Docker sandbox, vault, SQLite, fake model): Telegram in, agent, Telegram out."""
    from core.models import Group
    from gateway.app import Gateway
    from tests.fakes.channel import CaptureChannel
    from tests.integration.test_gateway_docker import config_for

    config_dir, data_dir = dirs
    api = FakeBotApi().start()
    channel = TelegramChannel(TOKEN, "Andy", base_url=api.base_url, data_dir=data_dir, poll_timeout_s=1)
    egress = '[vault.egress]\nteam = ["*"]\n'  # the vault process reads its policy from config.toml
    (config_dir / "config.toml").write_text(egress)
    gw = Gateway(config_for(model_server, sandbox_image, extra=egress), config_dir, data_dir)
    await gw.start([CaptureChannel(), channel])
    try:
        await gw.registry.register(Group("team", f"tg:{GROUP}", "team", "@Andy"))
        api.push_message(GROUP, "just chatting", thread_id=9)
        api.push_message(GROUP, "@claw_test_bot ping", thread_id=9)
        api.push_message(-42, "/chatid", chat_type="private")
        sent = await asyncio.to_thread(api.wait_for, lambda: len(api.sent) >= 2 and api.sent, 120)
        by_chat = {m["chat"]["id"]: m for m in sent}
        assert "tg:-42" in by_chat[-42]["text"]
        reply = by_chat[GROUP]
        assert reply["message_thread_id"] == 9
        assert reply["text"].startswith("echo: ") and "ping" in reply["text"]
        assert "claw_test_bot" not in json.dumps([r.body for r in model_server.requests])
    finally:
        await gw.stop(grace_s=5)
        api.stop()


async def test_typing_indicator_until_the_reply(tg: Harness) -> None:
    await tg.channel.typing(f"tg:{GROUP}")
    action = await tg.api_wait(lambda: [p for m, p in tg.api.calls if m == "sendChatAction"])
    assert action[0]["chat_id"] == GROUP and action[0]["action"] == "typing"
    await tg.channel.send(f"tg:{GROUP}", "done")
    assert tg.channel._out.typing_tasks == {}
