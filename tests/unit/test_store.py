import asyncio
import time
from pathlib import Path

import aiosqlite

from core.models import Group, InboundMessage
from gateway.prompt import build_prompt
from gateway.store import MIGRATIONS, Store

GROUP = Group("team", "tg:-1", "team", "@Andy")


def message(n: int, text: str = "hi", chat: str = "tg:-1") -> InboundMessage:
    return InboundMessage(chat, f"m{n}", "u", "alice", text, time.time(), "telegram")


async def test_ingest_is_committed_and_visible_to_another_connection(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await asyncio.gather(*(store.ingest(message(i), "pending") for i in range(50)))
    async with aiosqlite.connect(tmp_path / "db.sqlite") as other:
        async with other.execute("SELECT COUNT(*) FROM messages") as cur:
            assert (await cur.fetchone())[0] == 50
        async with other.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone())[0] == "wal"
    await store.close()


async def test_duplicate_delivery_is_stored_once(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.ingest(message(1), "pending")
    await store.ingest(message(1), "pending")
    assert await store.count_messages() == 1
    await store.close()


async def test_claim_includes_bounded_context_and_is_exclusive(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    await store.register_group(GROUP)
    for i in range(5):
        await store.ingest(message(i, f"context {i}"), "context")
    await store.ingest(message(10, "@Andy go"), "pending")
    run = await store.claim_run(GROUP, context_limit=3)
    assert run is not None
    assert [m.text for m in run.messages] == ["context 2", "context 3", "context 4", "@Andy go"]
    assert await store.claim_run(GROUP, context_limit=3) is None  # nothing is claimed twice
    await store.finish_run(run.run_id)
    statuses = [m.status for m in await store.messages_for_chat("tg:-1")]
    assert statuses == ["skipped", "skipped", "done", "done", "done", "done"]
    await store.close()


async def test_interrupted_runs_are_recovered_with_their_original_role(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    store = await Store.open(path)
    await store.register_group(GROUP)
    await store.ingest(message(1, "ctx"), "context")
    await store.ingest(message(2, "@Andy q"), "pending")
    assert await store.claim_run(GROUP, 10) is not None
    await store.close()  # "crash" with the run open
    store = await Store.open(path)
    assert await store.recover_interrupted() == 2
    assert [m.status for m in await store.messages_for_chat("tg:-1")] == ["context", "pending"]
    assert await store.chats_with_pending() == ["tg:-1"]
    await store.close()


async def test_outbox_sends_at_most_once_per_run_and_seq(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    first = await store.enqueue_reply(7, 0, "tg:-1", "answer")
    assert first is not None
    assert await store.enqueue_reply(7, 0, "tg:-1", "answer again") is None
    assert await store.claim_outbox(first)
    assert not await store.claim_outbox(first)  # a second sender loses the race
    await store.settle_outbox(first, sent=True)
    assert await store.pending_outbox() == []
    await store.close()


async def test_migrations_are_versioned_and_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    await (await Store.open(path)).close()
    store = await Store.open(path)  # re-opening must not re-run migrations
    async with aiosqlite.connect(path) as conn, conn.execute("PRAGMA user_version") as cur:
        assert (await cur.fetchone())[0] == len(MIGRATIONS)
    await store.close()


async def test_a_lone_surrogate_in_one_groups_message_does_not_fail_the_other_groups_in_its_batch(
    tmp_path: Path,
) -> None:
    """Found by tests/fuzz: a JSON `\\ud800` escape decodes to a string SQLite cannot encode."""
    store = await Store.open(tmp_path / "db.sqlite")
    hostile = InboundMessage(
        "tg:-1", "m1", "u\ud800", "eve\udfff", "hi \ud800 there", time.time(), "telegram"
    )
    await asyncio.gather(store.ingest(hostile, "pending"), store.ingest(message(2, chat="tg:-2"), "pending"))
    assert [m.text for m in await store.messages_for_chat("tg:-2")] == ["hi"]
    [stored] = await store.messages_for_chat("tg:-1")
    assert (stored.sender_name, stored.text) == ("eve\ufffd", "hi \ufffd there")
    await store.close()


async def test_a_timestamp_no_prompt_can_show_is_not_stored(tmp_path: Path) -> None:
    """A NaN/inf/far-future time would make every later prompt of the group fail to render."""
    store = await Store.open(tmp_path / "db.sqlite")
    for n, when in enumerate([float("nan"), float("inf"), -1.0, 1e300]):
        await store.ingest(InboundMessage("tg:-1", f"m{n}", "u", "eve", "x", when, "slack"), "pending")
    stored = await store.messages_for_chat("tg:-1")
    assert len(stored) == 4
    build_prompt(stored)  # raised ValueError/OverflowError before
    assert all(abs(m.timestamp - time.time()) < 3600 for m in stored)
    await store.close()
