"""`activity_*` for `make bench`: the dashboard's charts' queries over a large store.

100,000 runs and 100,000 metered model calls in a real SQLite store (the gateway's own file
settings). Timed, as the Overview and Spend pages run them (gateway/dashboard_activity.py):
both turn ranges (12 × 5 min and 24 × 1 h, percentiles in SQL) and the 30 daily cost buckets.
Two shapes of runs: all 100,000 ended within the last day (the worst case: every row is in a
range), and spread over 100 days (about 1,000 a day). Next to each, the baseline of simply
fetching the same range's raw rows into Python (what bucketing in Python would start from).
Medians of `ROUNDS`.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.config import parse  # noqa: E402
from gateway.dashboard_activity import spend_history, turn_activity  # noqa: E402
from gateway.store import Store  # noqa: E402

ROWS = 100_000
ROUNDS = 5
DAY = 86_400.0


def _fill(path: Path, now: float, runs_span_s: float) -> None:
    rng = random.Random(7)
    with sqlite3.connect(path) as db:
        runs = []
        for _ in range(ROWS):
            end = now - rng.random() * runs_span_s
            status = rng.choices(("done", "failed", "deferred"), (95, 4, 1))[0]
            runs.append((f"g{rng.randrange(100)}", status, end - rng.expovariate(1 / 3.0), end))
        db.executemany("INSERT INTO runs (folder, status, started_at, finished_at) VALUES (?, ?, ?, ?)", runs)
        calls = [
            (
                f"m{i}",
                f"g{rng.randrange(100)}",
                "anthropic",
                f"model-{rng.randrange(3)}",
                1000,
                500,
                0,
                0,
                4500,
                1,
            )
            + (now - rng.random() * 30 * DAY,)
            for i in range(ROWS)
        ]
        db.executemany(
            "INSERT INTO metered_usage (id, group_folder, provider, model, input_tokens, output_tokens, "
            "cache_read_tokens, cache_write_tokens, cost_micros, complete, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            calls,
        )


def _raw_fetch(path: Path, now: float) -> None:
    with sqlite3.connect(path) as db:
        db.execute(
            "SELECT started_at, finished_at, status FROM runs WHERE finished_at >= ?", (now - DAY,)
        ).fetchall()


async def _case(path: Path, runs_span_s: float) -> dict[str, float]:
    now = time.time()
    store = await Store.open(path)  # creates and migrates the schema
    await store.close()
    _fill(path, now, runs_span_s)
    store = await Store.open(path)
    gw: Any = SimpleNamespace(store=store, config=parse("", Path("bench.toml")))
    turns, spend, raw = [], [], []
    try:
        for _ in range(ROUNDS):
            started = time.perf_counter()
            activity = await turn_activity(gw, now)
            turns.append(time.perf_counter() - started)
            started = time.perf_counter()
            history = await spend_history(gw, now)
            spend.append(time.perf_counter() - started)
            started = time.perf_counter()
            await asyncio.to_thread(_raw_fetch, path, now)
            raw.append(time.perf_counter() - started)
        counted = sum(b.answered + b.failed for b in activity[1].buckets)
        assert counted > 0 and len(history.costs) > 0
    finally:
        await store.close()
    return {
        "turns_ms": round(statistics.median(turns) * 1000, 1),
        "spend_ms": round(statistics.median(spend) * 1000, 1),
        "raw_fetch_ms": round(statistics.median(raw) * 1000, 1),
        "runs_in_day": counted,
    }


def run() -> dict[str, float]:
    where = Path(tempfile.mkdtemp(prefix="cg-activity-bench-"))
    try:
        out: dict[str, float] = {"activity_rows": ROWS}
        for name, span in (("day", DAY), ("spread", 100 * DAY)):
            result = asyncio.run(_case(where / f"{name}.sqlite", span))
            out[f"activity_turns_{name}_ms"] = result["turns_ms"]
            out[f"activity_raw_fetch_{name}_ms"] = result["raw_fetch_ms"]
            out[f"activity_runs_in_day_{name}"] = result["runs_in_day"]
            out[f"activity_spend_30d_{name}_ms"] = result["spend_ms"]
        return out
    finally:
        shutil.rmtree(where, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
