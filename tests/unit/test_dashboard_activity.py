"""Turn buckets and daily cost for the dashboard's charts, from a real SQLite store.

The numbers are checked exactly: runs spanning a bucket edge (counted where they end), a run
ending exactly on an edge (the later bucket), unfinished runs (in no bucket), percentiles by
nearest rank, the range's ends; UTC-aligned turn buckets; cost days in the budget's time zone
across a daylight-saving change (a 23-hour day).
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from core.config import parse
from gateway.dashboard_activity import day_edges, spend_history, turn_activity
from gateway.store import MeteredRow, Store
from gateway.store.activity import TURN_BUCKETS, RunBucket

T0 = 1_800_000_000.0  # a multiple of 300 and 3600: a bucket edge in UTC
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "db.sqlite")
    yield s
    await s.close()


def add_runs(path: Path, runs: list[tuple[str, float, float | None]]) -> None:
    """(status, started_at, finished_at) rows, written by another connection as the gateway would."""
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO runs (folder, status, started_at, finished_at) VALUES ('team', ?, ?, ?)", runs
        )


async def test_runs_are_counted_in_the_bucket_they_ended_in(store: Store, tmp_path: Path) -> None:
    add_runs(
        tmp_path / "db.sqlite",
        [
            ("done", T0 - 100, T0 + 10),  # began before the range, ended in bucket 0: latency 110
            ("done", T0 + 250, T0 + 299.5),  # bucket 0
            ("done", T0 + 290, T0 + 300),  # ends exactly on the edge: bucket 1
            ("failed", T0 + 301, T0 + 303),  # bucket 1, latency 2, an error
            ("deferred", T0 + 302, T0 + 302.5),  # an error without a latency
            ("interrupted", T0 - 9000, T0 + 310),  # an error; its "latency" is a restart's, left out
            ("running", T0 + 5, None),  # not ended: nowhere yet
            ("done", T0 - 50, T0 - 1),  # ended before the range
            ("done", T0 + 3 * 300 - 10, T0 + 3 * 300),  # ends at the range's end: outside
            ("done", T0 + 700, T0 + 650),  # a clock stepped back: latency 0, not negative
        ],
    )
    found = await store.run_buckets(T0, 300, 3)
    assert found == [
        RunBucket(0, answered=2, failed=0, p50=49.5, p95=110.0),
        RunBucket(1, answered=1, failed=3, p50=2.0, p95=10.0),
        RunBucket(2, answered=1, failed=0, p50=0.0, p95=0.0),
    ]


async def test_percentiles_are_nearest_rank(store: Store, tmp_path: Path) -> None:
    # 20 turns in one bucket with latencies 1..20 s (inserted shuffled): p50 is the 10th, p95 the 19th.
    order = [7, 3, 20, 1, 15, 9, 12, 18, 2, 5, 11, 19, 4, 16, 6, 14, 8, 13, 17, 10]
    add_runs(tmp_path / "db.sqlite", [("done", T0 + 100 - s, T0 + 100) for s in order])
    add_runs(tmp_path / "db.sqlite", [("done", T0 + 400, T0 + 403)])  # one turn: p50 = p95 = it
    assert await store.run_buckets(T0, 300, 2) == [
        RunBucket(0, 20, 0, 10.0, 19.0),
        RunBucket(1, 1, 0, 3.0, 3.0),
    ]


async def test_the_bucket_query_reads_runs_through_the_finished_at_index(
    store: Store, tmp_path: Path
) -> None:
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        plan = db.execute(
            "EXPLAIN QUERY PLAN " + TURN_BUCKETS, {"since": T0, "width": 300, "until": T0 + 3600}
        ).fetchall()
    assert any("runs_finished" in str(row[-1]) for row in plan), plan


async def test_turn_activity_is_12_five_minute_and_24_hourly_utc_buckets_ending_now(
    store: Store, tmp_path: Path
) -> None:
    now = T0 + 917.0  # 15 min 17 s after an hour began (UTC)
    add_runs(tmp_path / "db.sqlite", [("done", now - 5, now - 1), ("failed", T0 - 7200, T0 - 7199)])
    hour, day = await turn_activity(SimpleNamespace(store=store), now)  # type: ignore[arg-type]
    assert (hour.name, hour.width_s, len(hour.buckets)) == ("last hour", 300, 12)
    assert hour.buckets[-1].start == T0 + 900 and hour.buckets[0].start == T0 + 900 - 11 * 300
    assert [(b.answered, b.failed) for b in hour.buckets] == [(0, 0)] * 11 + [(1, 0)]
    assert hour.buckets[-1].p50_s == 4.0 and hour.buckets[0].p50_s is None
    assert (day.name, day.width_s, len(day.buckets)) == ("last day", 3600, 24)
    assert day.buckets[-1].start == T0 and day.buckets[0].start == T0 - 23 * 3600
    assert [(b.answered, b.failed) for b in day.buckets[-3:]] == [(0, 1), (0, 0), (1, 0)]


def metered(n: int, at: float, group: str = "team", model: str = "m1", micros: int = 1000) -> MeteredRow:
    return MeteredRow(f"r{n}", group, None, "anthropic", model, 10, 5, 0, 1, micros, True, at)


def berlin(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


async def test_cost_per_budget_day_across_a_daylight_saving_change(store: Store) -> None:
    now = berlin(2026, 3, 30, 12, 0)  # summer time began on 2026-03-29 (a 23-hour day)
    keys, edges = day_edges(now, BERLIN)
    assert len(keys) == 30 and keys[-1] == "2026-03-30" and keys[0] == "2026-03-01"
    assert edges[keys.index("2026-03-30")] - edges[keys.index("2026-03-29")] == 23 * 3600
    await store.add_metered_usage(
        [
            metered(1, berlin(2026, 3, 28, 23, 59)),  # 03-28
            metered(2, berlin(2026, 3, 29, 0, 30)),  # 03-29 (still 03-28 in UTC)
            metered(3, berlin(2026, 3, 29, 23, 30), micros=2500),  # 03-29
            metered(4, berlin(2026, 3, 29, 23, 30), model="m2", micros=7),  # 03-29, other model
            metered(5, berlin(2026, 3, 30, 0, 10), group="main"),  # 03-30
            metered(6, berlin(2026, 2, 28, 23, 0)),  # before the 30 days
            metered(7, berlin(2026, 3, 31, 0, 0)),  # tomorrow (a clock ahead): not drawn
        ]
    )
    config = parse('[budget]\ntimezone = "Europe/Berlin"\n', Path("c"))
    history = await spend_history(SimpleNamespace(store=store, config=config), now)  # type: ignore[arg-type]
    assert history.timezone == "Europe/Berlin" and history.days == keys
    got = [(c.day, c.group, c.model, c.cost_usd, c.tokens, c.calls) for c in history.costs]
    assert got == [
        ("2026-03-28", "team", "m1", 0.001, 16, 1),
        ("2026-03-29", "team", "m1", 0.0035, 32, 2),
        ("2026-03-29", "team", "m2", 0.000007, 16, 1),
        ("2026-03-30", "main", "m1", 0.001, 16, 1),
    ]


def test_day_edges_are_contiguous_midnights() -> None:
    keys, edges = day_edges(berlin(2026, 10, 25, 9, 0), BERLIN, days=3)  # winter time: a 25-hour day
    assert keys == ["2026-10-23", "2026-10-24", "2026-10-25"]
    assert [b - a for a, b in zip(edges, edges[1:], strict=False)] == [24 * 3600, 24 * 3600, 25 * 3600]
