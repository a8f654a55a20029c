"""Dead letters: work the gateway gave up on, kept for an admin's `/retry` or `/drop`.

Two kinds are written here, each together with the state change that caused it, in one
transaction: a group's pending messages (kind `run`: they become `dead`) and an outbox entry
(kind `reply`: it becomes `dead`, and the owner's notice about it is enqueued in the same
commit). `add_dead_letter` records any other kind on its own.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from core.models import Group
from gateway.store.connection import Database
from gateway.store.outbox import NOTICE_SEQ


class DeadLetterStore(Database):
    """The dead_letters table, and the moves of messages and replies into and out of it."""

    async def add_dead_letter(self, kind: str, ref: str, reason: str, payload: dict[str, object]) -> None:
        await self._write(
            "INSERT INTO dead_letters (kind, ref, reason, payload, created_at) VALUES (?, ?, ?, ?, ?)",
            (kind, ref, reason, json.dumps(payload), time.time()),
        )

    async def dead_letter(self, letter_id: int) -> tuple[str, str, dict[str, object]] | None:
        async with self._conn.execute(
            "SELECT kind, ref, payload FROM dead_letters WHERE id = ?", (letter_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else (row[0], row[1], json.loads(row[2]))

    async def drop_dead_letter(self, letter_id: int) -> bool:
        cur = await self._write("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
        return cur.rowcount > 0

    async def dead_letters(self) -> list[tuple[int, str, str, str]]:
        async with self._conn.execute("SELECT id, kind, ref, reason FROM dead_letters ORDER BY id") as cur:
            return [tuple(row) for row in await cur.fetchall()]

    # -- a group's messages (kind `run`) ---------------------------------------------------

    async def dead_letter_pending(self, group: Group, reason: str) -> int:
        """Move a group's open messages to the dead-letter table, atomically; returns the letter id."""
        async with self._transaction():
            async with self._conn.execute(
                "SELECT id FROM messages WHERE chat_id = ? AND status = 'pending' ORDER BY id",
                (group.chat_id,),
            ) as cur:
                ids = [row[0] for row in await cur.fetchall()]
            await self._conn.execute(
                "UPDATE messages SET status = 'dead' WHERE chat_id = ? AND status = 'pending'",
                (group.chat_id,),
            )
            await self._conn.execute(
                "INSERT INTO runs (folder, status, started_at, finished_at, error) "
                "VALUES (?, 'dead', ?, ?, ?)",
                (group.folder, time.time(), time.time(), reason),
            )
            cur = await self._conn.execute(
                "INSERT INTO dead_letters (kind, ref, reason, payload, created_at) "
                "VALUES ('run', ?, ?, ?, ?)",
                (
                    group.folder,
                    reason,
                    json.dumps({"message_ids": ids, "chat_id": group.chat_id}),
                    time.time(),
                ),
            )
            return int(cur.lastrowid or 0)

    async def revive_messages(self, message_ids: list[int]) -> int:
        """Dead messages back to pending (an admin's /retry)."""
        async with self._transaction():
            cur = await self._conn.executemany(
                "UPDATE messages SET status = 'pending', run_id = NULL WHERE id = ? AND status = 'dead'",
                [(i,) for i in message_ids],
            )
            return cur.rowcount

    # -- an outbox entry (kind `reply`) ----------------------------------------------------

    async def dead_letter_reply(self, entry_id: int, reason: str) -> int:
        letter, _ = await self.dead_letter_reply_with_notice(entry_id, reason, None)
        return letter

    async def dead_letter_reply_with_notice(
        self, entry_id: int, reason: str, notice: Callable[[int], tuple[str, str]] | None
    ) -> tuple[int, int | None]:
        """Dead-letter an outbox entry; `notice(letter_id) -> (chat_id, text)` is enqueued in the
        same transaction, so each dead letter gets exactly one notice, even across a crash.
        Returns (dead letter id, notice's outbox id)."""
        async with self._transaction():
            await self._conn.execute("UPDATE outbox SET status = 'dead' WHERE id = ?", (entry_id,))
            cur = await self._conn.execute(
                "INSERT INTO dead_letters (kind, ref, reason, payload, created_at) "
                "VALUES ('reply', ?, ?, ?, ?)",
                (str(entry_id), reason, json.dumps({"outbox_id": entry_id}), time.time()),
            )
            letter = int(cur.lastrowid or 0)
            if notice is None:
                return letter, None
            chat_id, text = notice(letter)
            cur = await self._conn.execute(
                "INSERT INTO outbox (run_id, seq, chat_id, text, created_at) VALUES (NULL, ?, ?, ?, ?)",
                (NOTICE_SEQ, chat_id, text, time.time()),
            )
            return letter, int(cur.lastrowid or 0)

    async def revive_reply(self, entry_id: int) -> bool:
        """A dead outbox entry back to pending, its attempts reset (an admin's /retry)."""
        cur = await self._write(
            "UPDATE outbox SET status = 'pending', attempts = 0 WHERE id = ? AND status = 'dead'", (entry_id,)
        )
        return cur.rowcount == 1
