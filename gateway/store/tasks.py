"""Scheduled tasks (gateway.scheduler) and the log of each firing.

A firing's log row is idempotent per (task, slot), so a slot replayed after a crash reuses it.
Moving a task to its next slot is conditional on the row still being active at that slot, so
a pause or cancel written meanwhile (e.g. by the CLI) is never overwritten.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from core.models import ScheduledTask, TaskRun
from gateway.store.connection import Database

_TASK_COLUMNS = (
    "id, folder, prompt, kind, spec, next_run_at, anchor, status, created_by, created_at, "
    "last_run_at, last_result"
)
_TASK_RUN_COLUMNS = (
    "id, task_id, scheduled_for, started_at, finished_at, duration, status, result, error, run_id"
)


class TaskStore(Database):
    """The tasks and task_runs tables."""

    async def add_task(
        self,
        folder: str,
        prompt: str,
        kind: str,
        spec: str,
        next_run_at: float,
        anchor: float | None,
        created_by: str,
        created_at: float,
    ) -> int:
        cur = await self._write(
            "INSERT INTO tasks (folder, prompt, kind, spec, next_run_at, anchor, created_by, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (folder, prompt, kind, spec, next_run_at, anchor, created_by, created_at),
        )
        return int(cur.lastrowid or 0)

    async def task(self, task_id: int) -> ScheduledTask | None:
        async with self._conn.execute(f"SELECT {_TASK_COLUMNS} FROM tasks WHERE id = ?", (task_id,)) as cur:
            row = await cur.fetchone()
        return None if row is None else ScheduledTask(*row)

    async def tasks(
        self, folder: str | None = None, statuses: Iterable[str] | None = None
    ) -> list[ScheduledTask]:
        """Tasks of one group (None = all), optionally only those in `statuses`, oldest first."""
        query, args = f"SELECT {_TASK_COLUMNS} FROM tasks WHERE 1 = 1", []
        if folder is not None:
            query += " AND folder = ?"
            args.append(folder)
        if statuses is not None:
            wanted = list(statuses)
            query += f" AND status IN ({','.join('?' * len(wanted))})"
            args.extend(wanted)
        async with self._conn.execute(query + " ORDER BY id", args) as cur:
            return [ScheduledTask(*row) for row in await cur.fetchall()]

    async def set_task_status(self, task_id: int, status: str, next_run_at: float | None) -> bool:
        cur = await self._write(
            "UPDATE tasks SET status = ?, next_run_at = ? WHERE id = ?", (status, next_run_at, task_id)
        )
        return cur.rowcount == 1

    async def advance_task(
        self, task_id: int, slot: float, next_run_at: float | None, fired_at: float
    ) -> bool:
        """After firing `slot`: move to the next slot (None = a one-off, now done).

        Conditional on the row still being active at that slot, so a pause or cancel written
        meanwhile (e.g. by the CLI) is never overwritten.
        """
        cur = await self._write(
            "UPDATE tasks SET next_run_at = ?, last_run_at = ?, "
            "status = CASE WHEN ? IS NULL THEN 'done' ELSE status END "
            "WHERE id = ? AND status = 'active' AND next_run_at = ?",
            (next_run_at, fired_at, next_run_at, task_id, slot),
        )
        return cur.rowcount == 1

    async def start_task_run(self, task_id: int, scheduled_for: float, started_at: float) -> TaskRun:
        """The log row for one firing; idempotent per (task, slot) so a replay after a crash reuses it."""
        async with self._transaction():
            await self._conn.execute(
                "INSERT OR IGNORE INTO task_runs (task_id, scheduled_for, started_at) VALUES (?, ?, ?)",
                (task_id, scheduled_for, started_at),
            )
            async with self._conn.execute(
                f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE task_id = ? AND scheduled_for = ?",
                (task_id, scheduled_for),
            ) as cur:
                row = await cur.fetchone()
        assert row is not None  # inserted or already there: the INSERT OR IGNORE above
        return TaskRun(*row)

    async def link_task_run(self, task_run_id: int, chat_id: str, external_id: str) -> None:
        """Tie a firing to the chat message that carries its prompt, so the run's end can be logged."""
        await self._write(
            "UPDATE task_runs SET message_id = "
            "(SELECT id FROM messages WHERE chat_id = ? AND external_id = ?) WHERE id = ?",
            (chat_id, external_id, task_run_id),
        )

    async def finish_task_run(
        self,
        task_run_id: int,
        result: str | None,
        error: str | None,
        duration: float,
        run_id: int | None = None,
    ) -> None:
        now = time.time()
        async with self._transaction():
            await self._finish_task_run(task_run_id, result, error, now, duration, run_id)

    async def finish_task_runs_of_run(
        self, run_id: int, message_ids: Iterable[int], result: str | None, error: str | None
    ) -> list[int]:
        """A run ended: log it for every task firing whose message it answered; returns their task ids."""
        ids = list(message_ids)
        if not ids:
            return []
        now = time.time()
        async with self._transaction():
            async with self._conn.execute(
                f"SELECT id, task_id FROM task_runs WHERE status = 'running' "
                f"AND message_id IN ({','.join('?' * len(ids))})",
                ids,
            ) as cur:
                firings = [(row[0], row[1]) for row in await cur.fetchall()]
            if not firings:
                return []
            async with self._conn.execute("SELECT started_at FROM runs WHERE id = ?", (run_id,)) as cur:
                row = await cur.fetchone()
            duration = max(0.0, now - row[0]) if row is not None else 0.0
            for task_run_id, _ in firings:
                await self._finish_task_run(task_run_id, result, error, now, duration, run_id)
        return [task_id for _, task_id in firings]

    async def _finish_task_run(
        self,
        task_run_id: int,
        result: str | None,
        error: str | None,
        finished_at: float,
        duration: float,
        run_id: int | None,
    ) -> None:
        """Inside a transaction: close the log row and copy the outcome onto the task."""
        status = "error" if error else "ok"
        await self._conn.execute(
            "UPDATE task_runs SET status = ?, result = ?, error = ?, finished_at = ?, duration = ?, "
            "run_id = COALESCE(?, run_id) WHERE id = ?",
            (status, result, error, finished_at, duration, run_id, task_run_id),
        )
        summary = f"error: {error}" if error else (result or "")
        await self._conn.execute(
            "UPDATE tasks SET last_result = ? WHERE id = (SELECT task_id FROM task_runs WHERE id = ?)",
            (summary[:2000], task_run_id),
        )

    async def task_runs(self, task_id: int) -> list[TaskRun]:
        async with self._conn.execute(
            f"SELECT {_TASK_RUN_COLUMNS} FROM task_runs WHERE task_id = ? ORDER BY scheduled_for, id",
            (task_id,),
        ) as cur:
            return [TaskRun(*row) for row in await cur.fetchall()]
