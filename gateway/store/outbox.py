"""The outbox: every reply is recorded before it is sent, and its delivery state survives a crash.

An entry moves pending -> sending (claimed, not yet on the network) -> handed (the request may
have reached the platform) -> sent. The split between `sending` and `handed` is what lets a
restart resend the first safely and never resend the second (gateway.outbox decides what to do
with those). Dead-lettering an entry, with the notice it earns, is in dead_letters.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from core.models import OutboxEntry
from gateway.store.connection import Database

# An outbox entry with this `seq` is a notice to the owner (a dead letter's `/retry` hint, a
# failure report). A notice that fails is dead-lettered silently: never a notice about a notice.
NOTICE_SEQ = -1


class OutboxStore(Database):
    """The outbox table, apart from dead-lettering."""

    async def enqueue_notice(self, chat_id: str, text: str) -> int:
        """A notice to the owner: an outbox entry that is never itself the subject of a notice."""
        cur = await self._write(
            "INSERT INTO outbox (run_id, seq, chat_id, text, created_at) VALUES (NULL, ?, ?, ?, ?)",
            (NOTICE_SEQ, chat_id, text, time.time()),
        )
        return int(cur.lastrowid or 0)

    async def enqueue_reply(self, run_id: int | None, seq: int, chat_id: str, text: str) -> int | None:
        """Record a reply before sending it; a second call for the same (run, seq) is a no-op."""
        cur = await self._write(
            "INSERT OR IGNORE INTO outbox (run_id, seq, chat_id, text, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, seq, chat_id, text, time.time()),
        )
        return int(cur.lastrowid or 0) if cur.rowcount else None

    async def pending_outbox(self, ids: Iterable[int] | None = None) -> list[OutboxEntry]:
        query = "SELECT id, run_id, chat_id, text, attempts FROM outbox WHERE status = 'pending'"
        args: tuple[int, ...] = ()
        if ids is not None:
            id_list = tuple(ids)
            query += f" AND id IN ({','.join('?' * len(id_list))})"
            args = id_list
        async with self._conn.execute(query + " ORDER BY id", args) as cur:
            return [OutboxEntry(*row) for row in await cur.fetchall()]

    async def claim_outbox(self, entry_id: int) -> bool:
        """Take an entry for sending exactly once: pending -> sending, atomically.

        `sending` still means "not handed to the network": a crash now leaves a reply that
        never left the process (it may be waiting in a channel's local rate limiter), and
        `requeue_unhanded_replies` sends it normally after the restart.
        """
        cur = await self._write(
            "UPDATE outbox SET status = 'sending', attempts = attempts + 1 "
            "WHERE id = ? AND status = 'pending'",
            (entry_id,),
        )
        return cur.rowcount == 1

    async def mark_outbox_handed(self, entry_id: int) -> None:
        """Committed right before the request is written to the network: from here on the
        platform may have the reply, so a crash or an ambiguous answer must not resend it."""
        await self._write(
            "UPDATE outbox SET status = 'handed' WHERE id = ? AND status = 'sending'", (entry_id,)
        )

    async def settle_outbox(self, entry_id: int, sent: bool) -> None:
        """`sent=False` is only for a send proven not accepted (it goes back to pending)."""
        if sent:
            await self._write(
                "UPDATE outbox SET status = 'sent', sent_at = ? WHERE id = ?", (time.time(), entry_id)
            )
        else:
            await self._write("UPDATE outbox SET status = 'pending' WHERE id = ?", (entry_id,))

    async def is_notice(self, entry_id: int) -> bool:
        async with self._conn.execute("SELECT seq FROM outbox WHERE id = ?", (entry_id,)) as cur:
            row = await cur.fetchone()
        return row is not None and row[0] == NOTICE_SEQ

    async def requeue_unhanded_replies(self) -> int:
        """After a crash: entries claimed but never handed to the network go back to pending."""
        cur = await self._write("UPDATE outbox SET status = 'pending' WHERE status = 'sending'")
        return cur.rowcount

    async def handed_replies(self) -> list[tuple[int, str, bool]]:
        """Entries whose send may have reached the platform when the gateway stopped."""
        async with self._conn.execute(
            "SELECT id, chat_id, seq FROM outbox WHERE status = 'handed' ORDER BY id"
        ) as cur:
            return [(row[0], row[1], row[2] == NOTICE_SEQ) for row in await cur.fetchall()]

    async def outbox_for_chat(self, chat_id: str) -> list[tuple[str, str]]:
        async with self._conn.execute(
            "SELECT text, status FROM outbox WHERE chat_id = ? ORDER BY id", (chat_id,)
        ) as cur:
            return [(row[0], row[1]) for row in await cur.fetchall()]
