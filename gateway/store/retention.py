"""Retention (gateway.retention): old message and reply bodies emptied, old stray rows deleted.

It spans messages, outbox and task_runs, so it lives apart from each of them; the whole prune is
one transaction, so a crash never leaves a half-applied retention pass.
"""

from __future__ import annotations

from gateway.store.connection import Database


class RetentionStore(Database):
    """Pruning by age; which rows and bodies are kept is decided here, in SQL."""

    async def prune_messages(
        self, *, closed_before: float | None, unregistered_before: float | None, keep_last: int
    ) -> tuple[int, int]:
        """Retention (gateway.retention): return (bodies emptied, rows deleted), in one transaction.

        Only closed messages are touched (done, skipped, our own `bot` lines, and `stored` ones of
        unregistered chats); pending, processing and context messages are what the next turn
        needs, and failed ones are what `/retry` revives, so they are never touched. The newest
        `keep_last` messages of each chat are kept whatever their age. Registered chats keep
        their rows (with '' as text), so a redelivered update is still recognised as a
        duplicate; rows of unregistered chats are deleted unless a task run points at them.
        """
        closed = "('done', 'skipped', 'bot', 'stored')"
        recent = (
            "id IN (SELECT id FROM (SELECT id, ROW_NUMBER() OVER"
            " (PARTITION BY chat_id ORDER BY id DESC) AS n FROM messages) WHERE n <= ?)"
        )
        emptied = deleted = 0
        async with self._transaction():
            if unregistered_before is not None:
                cur = await self._conn.execute(
                    f"DELETE FROM messages WHERE status IN {closed} AND timestamp < ?"
                    " AND chat_id NOT IN (SELECT chat_id FROM groups)"
                    " AND id NOT IN (SELECT message_id FROM task_runs WHERE message_id IS NOT NULL)"
                    f" AND NOT {recent}",
                    (unregistered_before, keep_last),
                )
                deleted = cur.rowcount
            if closed_before is not None:
                cur = await self._conn.execute(
                    f"UPDATE messages SET text = '' WHERE status IN {closed} AND timestamp < ?"
                    f" AND text != '' AND NOT {recent}",
                    (closed_before, keep_last),
                )
                emptied = cur.rowcount
                cur = await self._conn.execute(
                    "UPDATE outbox SET text = '' WHERE status = 'sent' AND sent_at < ? AND text != ''",
                    (closed_before,),
                )
                emptied += cur.rowcount
        return emptied, deleted
