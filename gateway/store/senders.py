"""Per-group sender lists (allowed / blocked) and the messages held for an owner's decision.

A triggered message of a sender the owner has not decided on yet, in a group whose policy is
`approval`, is stored with status `held` (gateway.senders): it is in the database (invariant 7)
but no run claims it. The decision moves every held message of that sender in that group in
one UPDATE — to `pending` (the lane answers them, once) or to `context` (never answered, but
seen by the next turn as part of the conversation) — so a double decision cannot release a
message twice.
"""

from __future__ import annotations

import time

from core.senders import SenderState
from gateway.store.connection import Database


class SenderStore(Database):
    """The group_senders table and the `held` message status."""

    async def group_senders(self) -> dict[str, dict[str, SenderState]]:
        """folder → sender id → allowed | blocked, for every group."""
        result: dict[str, dict[str, SenderState]] = {}
        async with self._conn.execute(
            "SELECT folder, sender_id, state FROM group_senders ORDER BY folder, sender_id"
        ) as cur:
            for folder, sender, state in await cur.fetchall():
                result.setdefault(folder, {})[sender] = "allowed" if state == "allowed" else "blocked"
        return result

    async def set_sender(self, folder: str, sender_id: str, state: SenderState, by: str | None) -> None:
        """Remember the owner's answer about one sender of one group (the last answer wins)."""
        await self._write(
            "INSERT INTO group_senders (folder, sender_id, state, decided_by, decided_at) "
            "VALUES (?, ?, ?, ?, ?) ON CONFLICT (folder, sender_id) DO UPDATE SET "
            "state = excluded.state, decided_by = excluded.decided_by, decided_at = excluded.decided_at",
            (folder, sender_id, state, by, time.time()),
        )

    async def held_queue(self, chat_id: str | None = None) -> list[tuple[str, str, int, int]]:
        """(chat id, sender id, id of their first held message, held count) per sender with held
        messages, oldest first message first: the order unknown senders are asked in. Reads the
        partial index `messages_held` only, never the messages' text, so a backlog of thousands
        of throw-away senders costs one small scan, not their words."""
        where, args = ("AND chat_id = ? ", (chat_id,)) if chat_id is not None else ("", ())
        async with self._conn.execute(
            "SELECT chat_id, sender_id, MIN(id), COUNT(*) FROM messages WHERE status = 'held' "
            f"{where}GROUP BY chat_id, sender_id ORDER BY MIN(id)",
            args,
        ) as cur:
            return [(str(c), str(s), int(i), int(n)) for c, s, i, n in await cur.fetchall()]

    async def held_message(self, message_id: int) -> tuple[str, str] | None:
        """(sender name, text) of one held message: what the prompt about its sender quotes."""
        async with self._conn.execute(
            "SELECT sender_name, text FROM messages WHERE id = ? AND status = 'held'", (message_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    async def held_names(self, message_ids: list[int]) -> dict[int, str]:
        """Message id → sender name, for a few held messages (each waiting sender's first): the
        name the sender chose, shown beside their id. Only as many as the caller shows."""
        if not message_ids:
            return {}
        marks = ", ".join("?" * len(message_ids))
        async with self._conn.execute(
            f"SELECT id, sender_name FROM messages WHERE status = 'held' AND id IN ({marks})",
            tuple(message_ids),
        ) as cur:
            return {int(i): str(n) for i, n in await cur.fetchall()}

    async def release_held(self, chat_id: str, sender_id: str) -> int:
        """The sender was allowed: their held messages become pending (answered once)."""
        cur = await self._write(
            "UPDATE messages SET status = 'pending', wants_reply = 1 "
            "WHERE chat_id = ? AND sender_id = ? AND status = 'held'",
            (chat_id, sender_id),
        )
        return cur.rowcount

    async def demote_held(self, chat_id: str, sender_id: str) -> int:
        """Denied, or nobody answered: their held messages become context, never answered."""
        cur = await self._write(
            "UPDATE messages SET status = 'context', wants_reply = 0 "
            "WHERE chat_id = ? AND sender_id = ? AND status = 'held'",
            (chat_id, sender_id),
        )
        return cur.rowcount
