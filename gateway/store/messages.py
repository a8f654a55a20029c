"""Inbound messages and the chats they come from, written with group commit.

Concurrent `ingest` calls are batched into one transaction, and each caller returns only after
that transaction committed. That keeps invariant 7 (in the database before it is acknowledged)
while sustaining thousands of messages per second on one connection.

Message lifecycle (the `status` column): stored (chat not registered, or a non-admin
in the main chat) | bot (our own output)
| context (no trigger, or a sender who may not trigger: gateway.senders) | held (an unknown
sender's trigger waiting for the owner's Allow/Deny: store/senders.py) -> pending | context
| pending (wants an answer) -> processing (claimed by a run, runs.py)
-> done | failed | skipped; dead (dead_letters.py) until an admin's /retry.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from pathlib import Path
from typing import Any

import aiosqlite

from core.models import InboundMessage, StoredMessage
from gateway.store.connection import Database

_LATEST_TIMESTAMP = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a prompt can show


def _valid_text(value: str) -> str:
    """`value` with lone UTF-16 surrogates (which a JSON `\\udXXX` escape can produce) as U+FFFD."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value


def storable(message: InboundMessage) -> InboundMessage:
    """The message as it can be stored and later shown in a prompt, whatever a channel handed over.

    The batch is committed as one transaction, so a single unencodable string would fail the
    messages of every other group in it; and a time the prompt cannot render would fail every
    later run of the group. Both are repaired here, at the one door every message goes through.
    """
    fixes: dict[str, Any] = {}
    for name in ("chat_id", "external_id", "sender_id", "sender_name", "text", "channel", "chat_name"):
        value = getattr(message, name)
        valid = _valid_text(value)
        if valid is not value:
            fixes[name] = valid
    if not (math.isfinite(message.timestamp) and 0 <= message.timestamp <= _LATEST_TIMESTAMP):
        fixes["timestamp"] = time.time()
    return dataclasses.replace(message, **fixes) if fixes else message


class MessageStore(Database):
    """Ingest (group commit) and the reads of messages and chats."""

    def __init__(self, conn: aiosqlite.Connection, path: Path | None = None) -> None:
        super().__init__(conn, path)
        self._batch: list[tuple[InboundMessage, str, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def close(self) -> None:
        """Let the batch being written land before the connection goes."""
        if self._flusher is not None:
            await self._flusher
        await super().close()

    async def ingest(self, message: InboundMessage, status: str) -> None:
        """Persist one inbound message; returns only once it is committed (group commit)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._batch.append((storable(message), status, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._batch:
            batch, self._batch = self._batch, []
            try:
                await self._write_batch([(m, s) for m, s, _ in batch])
            except Exception as exc:  # every waiter learns the batch did not land
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for _, _, future in batch:
                if not future.done():
                    future.set_result(None)

    async def _write_batch(self, batch: list[tuple[InboundMessage, str]]) -> None:
        chats: dict[str, tuple[str, str, str, float]] = {}
        for message, _ in batch:
            chats[message.chat_id] = (message.chat_id, message.chat_name, message.channel, message.timestamp)
        async with self._transaction():
            await self._conn.executemany(
                "INSERT INTO chats (chat_id, name, channel, last_message_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (chat_id) DO UPDATE SET last_message_at = excluded.last_message_at, "
                "name = CASE WHEN excluded.name != '' THEN excluded.name ELSE chats.name END",
                chats.values(),
            )
            await self._conn.executemany(
                "INSERT OR IGNORE INTO messages (chat_id, external_id, sender_id, sender_name, text, "
                "timestamp, is_from_bot, status, wants_reply) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        m.chat_id,
                        m.external_id,
                        m.sender_id,
                        m.sender_name,
                        m.text,
                        m.timestamp,
                        int(m.is_from_bot),
                        status,
                        int(status in ("pending", "held")),
                    )
                    for m, status in batch
                ],
            )

    async def count_messages(self, status: str | None = None) -> int:
        query = "SELECT COUNT(*) FROM messages"
        args: tuple[str, ...] = ()
        if status is not None:
            query, args = query + " WHERE status = ?", (status,)
        async with self._conn.execute(query, args) as cur:
            row = await cur.fetchone()
        assert row is not None  # COUNT(*) always returns one row
        (count,) = row
        return int(count)

    async def messages_for_chat(self, chat_id: str) -> list[StoredMessage]:
        async with self._conn.execute(
            "SELECT id, chat_id, sender_name, text, timestamp, status FROM messages "
            "WHERE chat_id = ? ORDER BY id",
            (chat_id,),
        ) as cur:
            return [StoredMessage(*row) for row in await cur.fetchall()]

    async def chats_with_pending(self) -> list[str]:
        async with self._conn.execute(
            "SELECT DISTINCT chat_id FROM messages WHERE status = 'pending'"
        ) as cur:
            return [row[0] for row in await cur.fetchall()]

    async def chats(self) -> list[tuple[str, str, str, float]]:
        async with self._conn.execute(
            "SELECT chat_id, name, channel, last_message_at FROM chats ORDER BY last_message_at DESC"
        ) as cur:
            return [tuple(row) for row in await cur.fetchall()]
