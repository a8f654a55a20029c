"""Model usage metered by the vault: one row per model call, the account spend control trusts.

Unlike `usage.py` (what an agent says it used), these rows come from the vault, which read them
from the model's own responses as it relayed them (proxy/metering.py); a sandbox cannot change
them. The vault reports them over the gateway's control socket (`vault_usage`,
gateway/vault_usage.py) and keeps each record until the gateway acknowledges it, so a record may
arrive twice: the vault's record id is the primary key and a resent id is ignored. Each row is
priced when stored with the price table then in force (core/pricing.py), so a later price change
never rewrites what was spent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.store.budgets import SpendRow
from gateway.store.connection import Database

TOKENS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


@dataclass(frozen=True, slots=True)
class MeteredRow:
    """One metered model call, validated and priced, as stored."""

    id: str
    group: str
    run_id: int | None
    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_micros: int
    complete: bool
    at: float


def _values(r: MeteredRow, running: int | None) -> tuple[object, ...]:
    return (
        r.id,
        r.group,
        r.run_id if r.run_id is not None else running,
        r.provider,
        r.model,
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.cost_micros,
        int(r.complete),
        r.at,
    )


class MeteredUsageStore(Database):
    """The metered_usage table."""

    async def add_metered_usage(self, rows: Iterable[MeteredRow]) -> int:
        """Store the rows in one transaction; ids already stored are ignored. Returns how many are new.

        A row without a run id gets its group's running turn, if one runs, looked up in the same
        transaction. The vault is told "stored" only after this commits (invariant 13).
        """
        rows = list(rows)
        if not rows:
            return 0
        async with self._transaction() as conn:
            running: dict[str, int | None] = {}
            for group in {r.group for r in rows if r.run_id is None}:
                async with conn.execute(
                    "SELECT MAX(id) FROM runs WHERE folder = ? AND status = 'running'", (group,)
                ) as cur:
                    found = await cur.fetchone()
                running[group] = int(found[0]) if found is not None and found[0] is not None else None
            before = conn.total_changes
            await conn.executemany(
                "INSERT OR IGNORE INTO metered_usage (id, group_folder, run_id, provider, model, "
                f"{', '.join(TOKENS)}, cost_micros, complete, at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [_values(r, running.get(r.group)) for r in rows],
            )
            return conn.total_changes - before

    async def metered_totals(
        self, group: str | None, since: float, until: float | None = None
    ) -> list[SpendRow]:
        """Sums per group and model (of one group if `group`) of calls at `since` <= at < `until`."""
        where = ["at >= ?"]
        args: list[object] = [since]
        if until is not None:
            where.append("at < ?")
            args.append(until)
        if group is not None:
            where.append("group_folder = ?")
            args.append(group)
        sums = ", ".join(f"SUM({c})" for c in (*TOKENS, "cost_micros"))
        async with self._conn.execute(
            f"SELECT group_folder, model, {sums}, COUNT(*) FROM metered_usage WHERE {' AND '.join(where)} "
            "GROUP BY group_folder, model ORDER BY group_folder, model",
            args,
        ) as cur:
            rows = await cur.fetchall()
        return [SpendRow(str(r[0]), str(r[1]), *(int(v or 0) for v in r[2:])) for r in rows]

    async def metered_row_ids(self, group: str | None = None) -> list[str]:
        """The stored record ids (tests and the chaos checks count exactly-once with them)."""
        sql = "SELECT id FROM metered_usage" + (" WHERE group_folder = ?" if group is not None else "")
        async with self._conn.execute(sql + " ORDER BY id", (group,) if group is not None else ()) as cur:
            return [str(r[0]) for r in await cur.fetchall()]
