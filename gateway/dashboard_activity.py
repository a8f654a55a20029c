"""The gateway's side of the dashboard's charts and the sandboxes' memory column.

Turn buckets are whole UTC 5-minute and hour slots ending with the one that holds now; spend
days are the budget's days (`[budget] timezone`), so the chart's today is the Spend table's
today. Each range is one query (gateway/store/activity.py).

Memory is read for every live sandbox at once, each read bounded by `MEMORY_TIMEOUT_S`; a read
that did not answer is "—" on the page, never an error. A read still pending from an earlier
page view is awaited again rather than started twice, so a hung engine holds at most one
worker thread per sandbox however often the page is reloaded.
"""

from __future__ import annotations

import asyncio
import contextlib
from zoneinfo import ZoneInfo

from dashboard.activity import DailyCost, SpendHistory, TurnActivity, TurnBucket
from gateway import budget
from gateway.running import RunningGateway
from gateway.sandboxes import LiveSandbox

RANGES = (("last hour", 300, 12), ("last day", 3600, 24))
SPEND_DAYS = 30
MEMORY_TIMEOUT_S = 2.0


async def turn_activity(gw: RunningGateway, now: float) -> list[TurnActivity]:
    found = []
    for name, width, count in RANGES:
        end = (now // width + 1) * width
        since = end - count * width
        by_index = {b.index: b for b in await gw.store.run_buckets(since, width, count)}
        buckets = []
        for i in range(count):
            b = by_index.get(i)
            start = since + i * width
            if b is None:
                buckets.append(TurnBucket(start, 0, 0, None, None))
            else:
                buckets.append(TurnBucket(start, b.answered, b.failed, b.p50, b.p95))
        found.append(TurnActivity(name, width, buckets))
    return found


def day_edges(now: float, zone: ZoneInfo, days: int = SPEND_DAYS) -> tuple[list[str], list[float]]:
    """The last `days` budget days (today last) as keys, and their `days + 1` edges."""
    period = budget.day_period(now, zone)
    keys, edges = [period.key], [period.end, period.start]
    for _ in range(days - 1):
        period = budget.day_period(period.start - 1, zone)
        keys.append(period.key)
        edges.append(period.start)
    return keys[::-1], edges[::-1]


async def spend_history(gw: RunningGateway, now: float) -> SpendHistory:
    zone_name = gw.config.budget.timezone
    keys, edges = day_edges(now, ZoneInfo(zone_name))
    costs = [
        DailyCost(keys[c.index], c.group, c.model, c.cost_micros / 1_000_000, c.tokens, c.calls)
        for c in await gw.store.daily_costs(edges)
    ]
    return SpendHistory(keys, zone_name, costs)


class MemoryReader:
    """Concurrent, bounded memory reads of the live sandboxes, at most one pending per sandbox."""

    def __init__(self) -> None:
        self._pending: dict[str, asyncio.Task[int | None]] = {}

    async def read(self, live: dict[str, LiveSandbox]) -> dict[str, int | None]:
        folders = list(live)
        values = await asyncio.gather(*(self._one(live[f]) for f in folders))
        return dict(zip(folders, values, strict=True))

    async def _one(self, live: LiveSandbox) -> int | None:
        key = live.sandbox.id
        task = self._pending.get(key)
        if task is None:
            task = asyncio.ensure_future(live.sandbox.memory_bytes())
            self._pending[key] = task
            task.add_done_callback(lambda done: self._finished(key, done))
        with contextlib.suppress(Exception):  # TimeoutError, or a read that failed some other way
            return await asyncio.wait_for(asyncio.shield(task), MEMORY_TIMEOUT_S)
        return None

    def _finished(self, key: str, task: asyncio.Task[int | None]) -> None:
        self._pending.pop(key, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failed read is "—", not an unhandled-error log line
