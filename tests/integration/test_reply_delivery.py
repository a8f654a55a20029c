"""At-most-once replies through the real Telegram and Slack stacks (python-telegram-bot,
slack_sdk against the fake Bot API / Web API on loopback) and a real SQLite outbox: ambiguous
sends are never repeated, unsent replies are never dead-lettered, proven refusals are retried
no sooner than asked."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from channels.slack import SlackChannel
from channels.telegram import TelegramChannel
from core.config import RetryConfig, SlackConfig
from gateway.outbox import Outbox
from gateway.store import Store
from tests.fakes.slack_api import FakeSlack
from tests.fakes.telegram_api import TOKEN, FakeBotApi

GROUP, MAIN = -1001234567890, -1009999
RETRY = RetryConfig(max_attempts=3, base_delay_s=0.05, max_delay_s=0.1)


async def _channel(api: FakeBotApi, tmp_path: Path) -> TelegramChannel:
    channel = TelegramChannel(
        TOKEN, "Andy", base_url=api.base_url, data_dir=tmp_path / "data", poll_timeout_s=1, send_timeout_s=0.5
    )

    async def ignore(message: object) -> None:
        return None

    await channel.connect(ignore)
    return channel


def _texts(api: FakeBotApi, chat: int) -> list[str]:
    with api.lock:
        return [m["text"] for m in api.sent if m["chat"]["id"] == chat]


async def _settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


@pytest.fixture
async def api() -> AsyncIterator[FakeBotApi]:
    server = FakeBotApi().start()
    try:
        yield server
    finally:
        server.stop()


async def test_slow_send_accepted_after_the_timeout_is_delivered_once_and_dead_lettered_once(
    api: FakeBotApi, tmp_path: Path
) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    channel = await _channel(api, tmp_path)
    outbox = Outbox(store, [channel], RETRY, lambda: f"tg:{MAIN}")
    api.slow_next("sendMessage", 2.0)  # Telegram takes it, answers after the 0.5 s client timeout
    await outbox.post(1, 0, f"tg:{GROUP}", "the answer")
    await _settle(3.0)  # past the slow answer and every retry the old code would have made
    assert _texts(api, GROUP) == ["the answer"]  # at most once
    [(letter, kind, _, reason)] = await store.dead_letters()
    assert kind == "reply" and "unknown" in reason
    notices = _texts(api, MAIN)
    assert len(notices) == 1 and f"/retry {letter}" in notices[0]
    await channel.disconnect()
    outbox.close()
    await store.close()


async def test_a_notice_whose_send_is_unknown_gets_no_notice_of_its_own(
    api: FakeBotApi, tmp_path: Path
) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    channel = await _channel(api, tmp_path)
    outbox = Outbox(store, [channel], RETRY, lambda: f"tg:{MAIN}")
    api.slow_next("sendMessage", 2.0)
    await outbox.notice(f"tg:{MAIN}", "dead letter #7: …")
    await _settle(2.5)
    assert _texts(api, MAIN) == ["dead letter #7: …"]  # once, and nothing about it
    assert len(await store.dead_letters()) == 1
    assert await store.pending_outbox() == []
    await channel.disconnect()
    outbox.close()
    await store.close()


async def test_crash_before_handoff_sends_exactly_once_after_restart(api: FakeBotApi, tmp_path: Path) -> None:
    """The gateway died with the reply claimed (e.g. waiting in the rate limiter), not handed."""
    store = await Store.open(tmp_path / "db.sqlite")
    entry = await store.enqueue_reply(5, 0, f"tg:{GROUP}", "queued at the crash")
    assert entry is not None and await store.claim_outbox(entry)
    await store.close()  # the process "dies" here: nothing was written to the network

    store = await Store.open(tmp_path / "db.sqlite")
    channel = await _channel(api, tmp_path)
    outbox = Outbox(store, [channel], RETRY, lambda: f"tg:{MAIN}")
    assert await outbox.recover() == (1, 0)
    await outbox.flush()
    assert _texts(api, GROUP) == ["queued at the crash"]
    assert await store.dead_letters() == [] and _texts(api, MAIN) == []
    await channel.disconnect()
    outbox.close()
    await store.close()


async def test_crash_after_handoff_is_one_dead_letter_and_one_notice(api: FakeBotApi, tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    entry = await store.enqueue_reply(5, 0, f"tg:{GROUP}", "maybe delivered")
    assert entry is not None and await store.claim_outbox(entry)
    await store.mark_outbox_handed(entry)
    await store.close()

    for _ in range(2):  # a second restart must not notify again
        store = await Store.open(tmp_path / "db.sqlite")
        channel = await _channel(api, tmp_path)
        outbox = Outbox(store, [channel], RETRY, lambda: f"tg:{MAIN}")
        await outbox.recover()
        await outbox.flush()
        await channel.disconnect()
        outbox.close()
        await store.close()
    assert _texts(api, GROUP) == []
    notices = _texts(api, MAIN)
    assert len(notices) == 1 and "/retry 1" in notices[0]


async def test_429_with_retry_after_is_retried_no_sooner(api: FakeBotApi, tmp_path: Path) -> None:
    """Five 429s exhaust the channel's own waits; the outbox then waits retry_after again."""
    store = await Store.open(tmp_path / "db.sqlite")
    channel = await _channel(api, tmp_path)
    outbox = Outbox(store, [channel], RetryConfig(max_attempts=3, base_delay_s=0.01, max_delay_s=0.01))
    for _ in range(5):
        api.fail_next("sendMessage", 429, retry_after=1)
    await outbox.post(1, 0, f"tg:{GROUP}", "patient")
    deadline = time.monotonic() + 15
    while _texts(api, GROUP) != ["patient"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    with api.lock:
        times = [t for (m, _), t in zip(api.calls, api.call_times, strict=True) if m == "sendMessage"]
    assert len(times) == 6
    assert all(later - earlier >= 1.0 for earlier, later in zip(times, times[1:], strict=False))
    assert await store.dead_letters() == []
    await channel.disconnect()
    outbox.close()
    await store.close()


# ---------------------------------------------------------------- Slack


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    server = FakeSlack()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def _slack_config(fake: FakeSlack) -> SlackConfig:
    return SlackConfig(
        enabled=True, bot_token="xoxb-test-token", app_token="xapp-test-token", base_url=fake.base_url
    )


def _posted(fake: FakeSlack, channel: str) -> list[str]:
    return [
        str(c.args.get("text")) for c in fake.called("chat.postMessage") if c.args.get("channel") == channel
    ]


async def test_slack_post_cut_off_after_slack_took_it_is_not_posted_again(
    slack: FakeSlack, tmp_path: Path
) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    channel = SlackChannel(_slack_config(slack), "Andy")
    outbox = Outbox(store, [channel], RETRY, lambda: "slack:CMAIN")
    slack.drop_after_accept_once("chat.postMessage")  # posted, then the connection is cut
    await outbox.post(1, 0, "slack:C1", "the answer")
    await _settle(1.0)
    assert _posted(slack, "C1") == ["the answer"]
    [(letter, _, _, reason)] = await store.dead_letters()
    assert "unknown" in reason
    notices = _posted(slack, "CMAIN")
    assert len(notices) == 1 and f"/retry {letter}" in notices[0]
    outbox.close()
    await store.close()


async def test_slack_429_is_retried_no_sooner_than_retry_after(slack: FakeSlack, tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    channel = SlackChannel(_slack_config(slack), "Andy")
    outbox = Outbox(store, [channel], RETRY)
    slack.rate_limit_once("chat.postMessage", retry_after=1)
    started = time.monotonic()
    await outbox.post(1, 0, "slack:C1", "patient")
    await slack.wait_until(lambda: _posted(slack, "C1") == ["patient"], timeout=10)
    assert slack.rate_limited == ["chat.postMessage"]
    assert slack.called("chat.postMessage")[0].at - started >= 1.0
    assert await store.dead_letters() == []
    outbox.close()
    await store.close()
