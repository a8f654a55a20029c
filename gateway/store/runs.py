"""Runs: a group's open messages claimed as one turn of its agent, and how a turn ends.

Every transition here moves the run row and its messages in one transaction, so a crash never
leaves messages `processing` under a run that is closed, or a run open with no messages.
"""

from __future__ import annotations

import time

from core.models import ClaimedRun, Group, StoredMessage
from gateway.store.connection import Database

# Messages of an unfinished run go back to what they were before the claim: those that asked
# for an answer are pending again, untriggered ones context again.
REOPEN = (
    "UPDATE messages SET run_id = NULL, "
    "status = CASE WHEN wants_reply = 1 THEN 'pending' ELSE 'context' END WHERE status = 'processing'"
)


class RunStore(Database):
    """The runs table and the messages' `processing` state."""

    async def claim_run(self, group: Group, context_limit: int) -> ClaimedRun | None:
        """Atomically turn a group's open messages into one run, or None if nothing asks for one.

        All pending messages are claimed; untriggered context messages before the last
        pending one are included up to `context_limit` (newest kept), older ones skipped.
        """
        async with self._transaction():
            async with self._conn.execute(
                "SELECT id, chat_id, sender_name, text, timestamp, status FROM messages "
                "WHERE chat_id = ? AND status IN ('pending', 'context') ORDER BY id",
                (group.chat_id,),
            ) as cur:
                rows = [StoredMessage(*row) for row in await cur.fetchall()]
            pending = [m for m in rows if m.status == "pending"]
            if not pending:
                return None
            last_pending = pending[-1].id
            context = [m for m in rows if m.status == "context" and m.id < last_pending]
            kept_context = context[-context_limit:] if context_limit else []
            skipped = context[: len(context) - len(kept_context)]
            batch = sorted(pending + kept_context, key=lambda m: m.id)
            cur = await self._conn.execute(
                "INSERT INTO runs (folder, status, started_at) VALUES (?, 'running', ?)",
                (group.folder, time.time()),
            )
            run_id = int(cur.lastrowid or 0)
            await self._conn.executemany(
                "UPDATE messages SET status = 'processing', run_id = ? WHERE id = ?",
                [(run_id, m.id) for m in batch],
            )
            await self._conn.executemany(
                "UPDATE messages SET status = 'skipped' WHERE id = ?", [(m.id,) for m in skipped]
            )
        return ClaimedRun(run_id, group, batch)

    async def finish_run(self, run_id: int, error: str | None = None) -> None:
        """Close a run and its messages in one transaction."""
        status = "failed" if error else "done"
        async with self._transaction():
            await self._conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status, time.time(), error, run_id),
            )
            await self._conn.execute(
                "UPDATE messages SET status = ? WHERE run_id = ? AND status = 'processing'",
                (status, run_id),
            )

    async def release_run(self, run_id: int, reason: str) -> None:
        """Give a run's messages back (infrastructure was down); they are answered on the next try."""
        async with self._transaction():
            await self._conn.execute(
                "UPDATE runs SET status = 'deferred', finished_at = ?, error = ? WHERE id = ?",
                (time.time(), reason, run_id),
            )
            await self._conn.execute(REOPEN + " AND run_id = ?", (run_id,))

    async def consecutive_deferred(self, folder: str) -> int:
        """How many runs of this group in a row ended in a transient failure (the attempt count)."""
        async with self._conn.execute(
            "SELECT status FROM runs WHERE folder = ? AND status != 'running' ORDER BY id DESC LIMIT 100",
            (folder,),
        ) as cur:
            statuses = [row[0] for row in await cur.fetchall()]
        count = 0
        for status in statuses:
            if status != "deferred":
                break
            count += 1
        return count

    async def recover_interrupted(self) -> int:
        """After a crash, give messages of unfinished runs back to the queue; returns how many.

        A run whose final reply already reached the outbox is complete (the outbox delivers
        or dead-letters it); re-running it would answer the same messages twice.
        """
        answered = (
            "SELECT run_id FROM outbox WHERE seq = 0 AND run_id IS NOT NULL AND run_id IN "
            "(SELECT id FROM runs WHERE status = 'running')"
        )
        async with self._transaction():
            await self._conn.execute(
                f"UPDATE messages SET status = 'done' WHERE status = 'processing' AND run_id IN ({answered})"
            )
            await self._conn.execute(
                f"UPDATE runs SET status = 'done', finished_at = ? WHERE id IN ({answered})", (time.time(),)
            )
            cur = await self._conn.execute(REOPEN)
            count = cur.rowcount
            await self._conn.execute(
                "UPDATE runs SET status = 'interrupted', finished_at = ? WHERE status = 'running'",
                (time.time(),),
            )
        return count

    async def run_status(self, run_id: int) -> tuple[str, str | None]:
        async with self._conn.execute("SELECT status, error FROM runs WHERE id = ?", (run_id,)) as cur:
            row = await cur.fetchone()
        if row is None:
            raise KeyError(run_id)
        return row[0], row[1]

    async def run_started_at(self, run_id: int) -> float | None:
        """When a run was claimed (its turn latency is measured from here, gateway.metrics)."""
        async with self._conn.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else float(row[0])
