"""Activity over time — turns, their latency, and spend per day — as view records and as charts.

The gateway fills the records (gateway/dashboard_activity.py, through `Backend.turn_activity`
and `Backend.spend_history`); this module turns them into the Overview's and the Spend page's
charts (dashboard/charts.py). Kept apart from backend.py so that file stays the list of what
the dashboard may read and change, not how it is drawn.

What a bucket counts (the gateway's `runs` table): a run belongs to the bucket in which it
*ended* (its latency is known only then); a run still going is in no bucket yet. `answered` are
runs that ended `done`; `failed` those that ended `failed`, `deferred` (infrastructure down,
retried) or `interrupted` (the gateway stopped mid-turn). Latency percentiles are over the
`done` and `failed` runs only: an interrupted run's end is the next start-up's recovery, not
the end of a turn. Turn buckets are aligned to UTC (whole 5 minutes, whole hours); spend days
are the budget's days (`[budget] timezone`), the same days the Spend tables and budgets count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from markupsafe import Markup

from dashboard.charts import Series, bar_chart, compact, seconds, usd


@dataclass(frozen=True)
class TurnBucket:
    start: float  # Unix time; the bucket is [start, start + width)
    answered: int
    failed: int
    p50_s: float | None  # None: no run with a latency ended in the bucket
    p95_s: float | None


@dataclass(frozen=True)
class TurnActivity:
    name: str  # "last hour" | "last day"
    width_s: int
    buckets: list[TurnBucket]  # oldest first, the last one holds now


@dataclass(frozen=True)
class DailyCost:
    day: str  # YYYY-MM-DD in the budget's time zone
    group: str
    model: str
    cost_usd: float
    tokens: int
    calls: int


@dataclass(frozen=True)
class SpendHistory:
    days: list[str]  # oldest first, today last
    timezone: str
    costs: list[DailyCost]  # only (day, group, model) with at least one call


def _label(start: float) -> str:
    return datetime.fromtimestamp(start, UTC).strftime("%H:%M")


def turn_charts(activity: TurnActivity) -> list[Markup]:
    """Latency (p50 and p95 side by side) and throughput (answered and failed stacked)."""
    b = activity.buckets
    labels = [_label(x.start) for x in b]
    step = f"{activity.width_s // 60} min" if activity.width_s < 3600 else f"{activity.width_s // 3600} h"
    key = activity.name.replace(" ", "-")
    latency = bar_chart(
        f"Turn latency, {activity.name} (per {step}, UTC)",
        labels,
        [Series("p50", [x.p50_s for x in b]), Series("p95", [x.p95_s for x in b])],
        fmt=seconds,
        chart_id=f"latency-{key}",
    )
    throughput = bar_chart(
        f"Turns, {activity.name} (per {step}, UTC)",
        labels,
        [Series("answered", [x.answered for x in b]), Series("failed", [x.failed for x in b])],
        fmt=compact,
        stacked=True,
        chart_id=f"turns-{key}",
    )
    return [latency, throughput]


def spend_charts(history: SpendHistory) -> list[Markup]:
    """One chart per group: its cost per day, one stacked colour per model."""
    index = {day: i for i, day in enumerate(history.days)}
    labels = [day[5:] for day in history.days]  # MM-DD; the table and tooltips say which
    per_group: dict[str, dict[str, list[float | None]]] = {}
    for c in history.costs:
        if c.day not in index:
            continue
        models = per_group.setdefault(c.group, {})
        row = models.setdefault(c.model, [0.0] * len(history.days))
        row[index[c.day]] = (row[index[c.day]] or 0.0) + c.cost_usd
    charts = []
    for n, (group, models) in enumerate(sorted(per_group.items())):
        charts.append(
            bar_chart(
                f"{group}: cost per day ({history.timezone})",
                labels,
                [Series(model, values) for model, values in sorted(models.items())],
                fmt=usd,
                stacked=True,
                chart_id=f"spend-chart-{n}",
            )
        )
    return charts
