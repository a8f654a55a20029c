"""`[retention]` on a real SQLite database through the Store, as the gateway runs it."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from core.config import Config
from core.models import Group, InboundMessage
from gateway.retention import DAY_S, Retention, prune_once
from gateway.store import Store

GROUP = Group("team", "tg:-1", "team", "@Andy")
NOW = time.time()


def msg(chat: str, n: int, age_days: float, text: str = "") -> InboundMessage:
    return InboundMessage(
        chat, f"m{n}", "u", "alice", text or f"{chat} #{n}", NOW - age_days * DAY_S, "telegram"
    )


def rows(path: Path) -> dict[tuple[str, str], tuple[str, str]]:
    db = sqlite3.connect(path)
    try:
        return {
            (chat, ext): (text, status)
            for chat, ext, text, status in db.execute(
                "SELECT chat_id, external_id, text, status FROM messages"
            )
        }
    finally:
        db.close()


async def populated(path: Path) -> Store:
    store = await Store.open(path)
    await store.register_group(GROUP)
    # registered chat: old answered messages, an old one still waiting, old context, a failed one
    for n in range(10):
        await store.ingest(msg("tg:-1", n, 400), "done")
    await store.ingest(msg("tg:-1", 10, 400), "failed")
    await store.ingest(msg("tg:-1", 11, 400), "pending")
    await store.ingest(msg("tg:-1", 12, 400), "context")
    await store.ingest(msg("tg:-1", 13, 1), "done")
    # a chat nobody registered: old and recent chatter
    for n in range(5):
        await store.ingest(msg("tg:-99", n, 45), "stored")
    await store.ingest(msg("tg:-99", 5, 2), "stored")
    return store


async def test_old_bodies_go_and_what_the_agent_needs_stays(tmp_path: Path) -> None:
    path = tmp_path / "clawgate.db"
    store = await populated(path)
    config = Config.model_validate({"context_messages": 2})
    try:
        emptied, deleted = await prune_once(store, config, now=NOW)
    finally:
        await store.close()
    after = rows(path)
    # registered chat: rows stay (duplicates still recognised), old answered bodies are emptied
    assert all(after[("tg:-1", f"m{n}")] == ("", "done") for n in range(10))
    # never touched: failed (/retry revives it), pending, context, and the newest context_messages
    assert after[("tg:-1", "m10")] == ("tg:-1 #10", "failed")
    assert after[("tg:-1", "m11")] == ("tg:-1 #11", "pending")
    assert after[("tg:-1", "m12")] == ("tg:-1 #12", "context")
    assert after[("tg:-1", "m13")] == ("tg:-1 #13", "done")
    # unregistered chat: rows older than unregistered_days are deleted, the newest kept
    assert {ext for chat, ext in after if chat == "tg:-99"} == {"m4", "m5"}
    assert (emptied, deleted) == (10, 4)


async def test_zero_days_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "clawgate.db"
    store = await populated(path)
    before = rows(path)
    config = Config.model_validate({"retention": {"message_days": 0, "unregistered_days": 0}})
    try:
        assert await prune_once(store, config, now=NOW) == (0, 0)
    finally:
        await store.close()
    assert rows(path) == before


async def test_a_pruned_message_redelivered_is_still_a_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "clawgate.db"
    store = await populated(path)
    try:
        await prune_once(store, Config.model_validate({"context_messages": 0}), now=NOW)
        await store.ingest(msg("tg:-1", 0, 400), "pending")  # Telegram delivers m0 again
    finally:
        await store.close()
    assert rows(path)[("tg:-1", "m0")] == ("", "done")


async def test_the_gateway_loop_prunes_at_start(tmp_path: Path) -> None:
    path = tmp_path / "clawgate.db"
    store = await populated(path)
    retention = Retention(store, Config.model_validate({"context_messages": 0}), interval_s=3600)
    retention.start()
    try:
        for _ in range(200):
            if rows(path)[("tg:-1", "m0")][0] == "":
                break
            await asyncio.sleep(0.02)
    finally:
        await retention.stop()
        await store.close()
    assert rows(path)[("tg:-1", "m0")] == ("", "done")


def test_retention_keys_are_validated() -> None:
    with pytest.raises(ValueError, match="message_days"):
        Config.model_validate({"retention": {"message_days": -1}})
    with pytest.raises(ValueError, match="unregistered"):
        Config.model_validate({"retention": {"unregistered": 3}})
