"""Activity over time for the dashboard's charts: turns per bucket with their latency, cost per day.

Both are one query each, bounded by an index range (runs by `finished_at`, migration 11;
metered_usage by `at`) and aggregated in SQL, so what crosses into Python is one row per bucket
(per group and model for cost), however many runs or model calls the range holds. What a
bucket counts is described in dashboard/activity.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.store.connection import Database
from gateway.store.metered import TOKENS

# Percentiles by nearest rank: the value at rank ceil(p/100 * n), i.e. the smallest rank with
# rank * 100 >= p * n — integer arithmetic, so 95% of 20 is rank 19 exactly.
TURN_BUCKETS = """
WITH ended AS (
    SELECT CAST((finished_at - :since) / :width AS INTEGER) AS b, status,
           MAX(finished_at - started_at, 0.0) AS latency
    FROM runs
    WHERE finished_at >= :since AND finished_at < :until AND status != 'running'
), counts AS (
    SELECT b, SUM(status = 'done') AS answered, SUM(status != 'done') AS failed FROM ended GROUP BY b
), ranked AS (
    SELECT b, latency, ROW_NUMBER() OVER (PARTITION BY b ORDER BY latency) AS rank,
           COUNT(*) OVER (PARTITION BY b) AS n
    FROM ended WHERE status IN ('done', 'failed')
), percentiles AS (
    SELECT b, MIN(CASE WHEN rank * 100 >= 50 * n THEN latency END) AS p50,
              MIN(CASE WHEN rank * 100 >= 95 * n THEN latency END) AS p95
    FROM ranked GROUP BY b
)
SELECT counts.b, answered, failed, p50, p95 FROM counts LEFT JOIN percentiles USING (b) ORDER BY counts.b
"""


@dataclass(frozen=True, slots=True)
class RunBucket:
    index: int  # 0 = the bucket starting at `since`
    answered: int
    failed: int
    p50: float | None
    p95: float | None


@dataclass(frozen=True, slots=True)
class DayCost:
    index: int  # which of the given days
    group: str
    model: str
    cost_micros: int
    tokens: int
    calls: int


class ActivityStore(Database):
    """Reads only; no table of its own."""

    async def run_buckets(self, since: float, width: float, count: int) -> list[RunBucket]:
        """Runs that ended in [since, since + count × width), per bucket; empty buckets are absent."""
        args = {"since": since, "width": width, "until": since + count * width}
        async with self._conn.execute(TURN_BUCKETS, args) as cur:
            rows = await cur.fetchall()
        return [
            RunBucket(int(r[0]), int(r[1]), int(r[2]), _float(r[3]), _float(r[4]))
            for r in rows
            if 0 <= int(r[0]) < count  # a float edge never puts a row outside the range
        ]

    async def daily_costs(self, edges: Sequence[float]) -> list[DayCost]:
        """Metered calls per day [edges[i], edges[i+1]), group and model; days without a call absent.

        The edges are given (not computed in SQL) because the budget's days are local days, and
        a day with a DST change is 23 or 25 hours long.
        """
        if len(edges) < 2:
            return []
        days = ", ".join("(?, ?, ?)" for _ in edges[1:])
        args: list[object] = []
        for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False)):
            args += [i, lo, hi]
        tokens = " + ".join(f"m.{c}" for c in TOKENS)
        sql = (
            f"WITH days (i, lo, hi) AS (VALUES {days}) "
            f"SELECT days.i, m.group_folder, m.model, SUM(m.cost_micros), SUM({tokens}), COUNT(*) "
            "FROM days JOIN metered_usage AS m ON m.at >= days.lo AND m.at < days.hi "
            "GROUP BY days.i, m.group_folder, m.model ORDER BY days.i, m.group_folder, m.model"
        )
        async with self._conn.execute(sql, args) as cur:
            rows = await cur.fetchall()
        return [
            DayCost(int(r[0]), str(r[1]), str(r[2]), int(r[3] or 0), int(r[4] or 0), int(r[5])) for r in rows
        ]


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
