"""Model usage: the tokens each group's agent used, per run and model, as its agent reported them.

One row per (group, run, model), summed over the run's model calls (the tool loop and any
history compaction), with the time of its first and last report, so totals per group, per
model and per period are single indexed queries. Spend control builds on these rows.

The numbers come from inside the sandbox, which is untrusted: `gateway.ipc` bounds them and
ties them to a run the group was actually handed, but a compromised agent could still
under-report its own usage. They are an account of what a working agent used, not proof.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway.store.connection import Database

COUNTS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "calls")


@dataclass(frozen=True, slots=True)
class UsageTotals:
    """Summed usage of one group and model over some period."""

    group: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    calls: int
    runs: int


class UsageStore(Database):
    """The model_usage table."""

    async def add_model_usage(
        self,
        folder: str,
        run_id: int,
        model: str,
        *,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int,
        cache_write_tokens: int,
        calls: int,
        at: float | None = None,
    ) -> None:
        """Add one report to its (group, run, model) row; a second report for the run adds up."""
        now = time.time() if at is None else at
        await self._write(
            f"INSERT INTO model_usage (group_folder, run_id, model, {', '.join(COUNTS)}, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (group_folder, run_id, model) DO UPDATE SET "
            + ", ".join(f"{c} = {c} + excluded.{c}" for c in COUNTS)
            + ", updated_at = excluded.updated_at",
            (
                folder,
                run_id,
                model,
                input_tokens,
                output_tokens,
                cache_read_tokens,
                cache_write_tokens,
                calls,
                now,
                now,
            ),
        )

    async def model_usage(self, folder: str | None = None, since: float | None = None) -> list[UsageTotals]:
        """Totals per group and model (of one group if `folder`), of runs started at or after `since`."""
        where: list[str] = []
        args: list[object] = []
        if folder is not None:
            where.append("group_folder = ?")
            args.append(folder)
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        clause = f"WHERE {' AND '.join(where)} " if where else ""
        sums = ", ".join(f"SUM({c})" for c in COUNTS)
        async with self._conn.execute(
            f"SELECT group_folder, model, {sums}, COUNT(DISTINCT run_id) FROM model_usage {clause}"
            "GROUP BY group_folder, model ORDER BY group_folder, model",
            args,
        ) as cur:
            rows = await cur.fetchall()
        return [UsageTotals(str(r[0]), str(r[1]), *(int(v) for v in r[2:])) for r in rows]
