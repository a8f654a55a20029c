"""Budgets: the owner's `/budget set` overrides, the notices already sent, and spend queries.

Overrides beat `[budget]` in config.toml (gateway/budget.py) and survive restarts and reloads.
A notice row is written in the same transaction that decides to send it, so a restart never
repeats one: one row per (scope, limit, period, level). Spend is read from `metered_usage`,
the vault's own account of every model response it relayed (gateway/store/metered.py), never
from what an agent says about itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from core.budget import LIMIT_KINDS, LimitKind
from gateway.store.connection import Database

_TOKENS = "input_tokens + output_tokens + cache_read_tokens + cache_write_tokens"


@dataclass(frozen=True, slots=True)
class SpendRow:
    """Spend of one group and model (or one run) over a period."""

    group: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_micros: int
    calls: int
    run_id: int | None = None
    last_at: float = 0.0
    estimated: int = 0  # calls cut before their final usage, counted with the vault's estimate

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


class BudgetStore(Database):
    """The budget_overrides and budget_notices tables, and reads of metered_usage."""

    async def budget_overrides(self) -> dict[tuple[str, LimitKind], int | None]:
        async with self._conn.execute("SELECT scope, kind, amount FROM budget_overrides") as cur:
            rows = await cur.fetchall()
        found: dict[tuple[str, LimitKind], int | None] = {}
        for scope, kind, amount in rows:
            for known in LIMIT_KINDS:  # a kind this version does not know is ignored, not guessed
                if known == kind:
                    found[(str(scope), known)] = None if amount is None else int(amount)
        return found

    async def set_budget_override(self, scope: str, kind: LimitKind, amount: int | None, by: str) -> None:
        """`amount` None means "no limit" (off); see `clear_budget_override` to follow the config."""
        await self._write(
            "INSERT INTO budget_overrides (scope, kind, amount, set_by, set_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (scope, kind) DO UPDATE SET amount = excluded.amount, "
            "set_by = excluded.set_by, set_at = excluded.set_at",
            (scope, kind, amount, by, time.time()),
        )

    async def clear_budget_override(self, scope: str, kind: LimitKind) -> bool:
        cur = await self._write("DELETE FROM budget_overrides WHERE scope = ? AND kind = ?", (scope, kind))
        return cur.rowcount > 0

    async def claim_budget_notice(self, scope: str, kind: str, period: str, level: str) -> bool:
        """True exactly once per (scope, kind, period, level): the caller sends the notice."""
        cur = await self._write(
            "INSERT OR IGNORE INTO budget_notices (scope, kind, period, level, at) VALUES (?, ?, ?, ?, ?)",
            (scope, kind, period, level, time.time()),
        )
        return cur.rowcount > 0

    async def spend_since(self, since: float, until: float | None = None) -> dict[str, tuple[int, int]]:
        """Per group: (tokens, cost_micros) of model responses metered in [since, until)."""
        clause, args = "at >= ?", list[object]([since])
        if until is not None:
            clause += " AND at < ?"
            args.append(until)
        async with self._conn.execute(
            f"SELECT group_folder, SUM({_TOKENS}), SUM(cost_micros) FROM metered_usage "
            f"WHERE {clause} GROUP BY group_folder",
            args,
        ) as cur:
            rows = await cur.fetchall()
        return {str(g): (int(t or 0), int(c or 0)) for g, t, c in rows}

    async def spend_by_model(
        self, group: str | None, since: float, until: float | None = None
    ) -> list[SpendRow]:
        """Per group and model over [since, until), for /usage and `clawgate usage`."""
        where, args = ["at >= ?"], list[object]([since])
        if until is not None:
            where.append("at < ?")
            args.append(until)
        if group is not None:
            where.append("group_folder = ?")
            args.append(group)
        async with self._conn.execute(
            "SELECT group_folder, model, SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), "
            "SUM(cache_write_tokens), SUM(cost_micros), COUNT(*), NULL, MAX(at), SUM(complete = 0) "
            f"FROM metered_usage WHERE {' AND '.join(where)} GROUP BY group_folder, model "
            "ORDER BY group_folder, model",
            args,
        ) as cur:
            rows = await cur.fetchall()
        return [_row(r) for r in rows]

    async def spend_by_run(self, group: str | None, limit: int = 10) -> list[SpendRow]:
        """The newest turns (run ids) with their spend per model, newest first."""
        where, args = "run_id IS NOT NULL", list[object]()
        if group is not None:
            where += " AND group_folder = ?"
            args.append(group)
        async with self._conn.execute(
            "SELECT group_folder, model, SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens), "
            "SUM(cache_write_tokens), SUM(cost_micros), COUNT(*), run_id, MAX(at), SUM(complete = 0) "
            f"FROM metered_usage WHERE run_id IN (SELECT run_id FROM metered_usage WHERE {where} "
            "GROUP BY run_id ORDER BY MAX(at) DESC LIMIT ?) "
            "GROUP BY run_id, group_folder, model ORDER BY MAX(at) DESC",
            [*args, limit],
        ) as cur:
            rows = await cur.fetchall()
        return [_row(r) for r in rows]


def _row(r: Any) -> SpendRow:
    """A SELECT of (group, model, 4 token sums, cost, calls, run_id, last at, estimated calls)."""
    return SpendRow(
        group=str(r[0]),
        model=str(r[1]),
        input_tokens=int(r[2] or 0),
        output_tokens=int(r[3] or 0),
        cache_read_tokens=int(r[4] or 0),
        cache_write_tokens=int(r[5] or 0),
        cost_micros=int(r[6] or 0),
        calls=int(r[7] or 0),
        run_id=None if r[8] is None else int(r[8]),
        last_at=float(r[9] or 0),
        estimated=int(r[10] or 0),
    )
