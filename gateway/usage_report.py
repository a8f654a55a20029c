"""What `/usage` and `clawgate usage` show: spend by group and model, budgets, the last turns.

One builder for both, so the chat and the CLI never disagree: `build` reads the database
(metered_usage, written from the vault's own metering) and the budgets in force, and returns
plain data (the CLI's `--json`); `render` turns it into the short text a chat or terminal shows.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from core.budget import GLOBAL, BudgetConfig
from gateway import budget
from gateway.budget_state import budget_statuses
from gateway.store import Store
from gateway.store.budgets import SpendRow

LAST_TURNS = 5


def _rows(rows: list[SpendRow]) -> list[dict[str, Any]]:
    return [
        {
            "group": r.group,
            "model": r.model,
            **({"run_id": r.run_id, "at": r.last_at} if r.run_id is not None else {}),
            "input_tokens": r.input_tokens,
            "output_tokens": r.output_tokens,
            "cache_read_tokens": r.cache_read_tokens,
            "cache_write_tokens": r.cache_write_tokens,
            "tokens": r.tokens,
            "cost_usd": r.cost_micros / 1_000_000,
            "calls": r.calls,
            "estimated_calls": r.estimated,
        }
        for r in rows
    ]


async def build(
    store: Store,
    config: BudgetConfig,
    folder: str | None,
    folders: list[str],
    since: float | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Spend today, this month (and since `since`), the budgets of the scopes shown, last turns."""
    now = time.time() if now is None else now
    zone = ZoneInfo(config.timezone)
    day, month = budget.day_period(now, zone), budget.month_period(now, zone)
    periods: dict[str, Any] = {
        "today": {
            "from": day.start,
            "key": day.key,
            "rows": _rows(await store.spend_by_model(folder, day.start)),
        },
        "month": {
            "from": month.start,
            "key": month.key,
            "rows": _rows(await store.spend_by_model(folder, month.start)),
        },
    }
    if since is not None:
        periods["since"] = {
            "from": since,
            "key": datetime.fromtimestamp(since, zone).isoformat(timespec="minutes"),
            "rows": _rows(await store.spend_by_model(folder, since)),
        }
    scopes = [folder] if folder is not None else folders
    statuses = await budget_statuses(config, store, scopes, now)
    budgets = [
        {
            "scope": s.scope,
            "limit": s.kind,
            "period": s.period.key,
            "amount": s.limit,
            "spent": s.spent,
            "remaining": s.remaining,
            "unit": s.unit,
            "share": round(s.share, 4),
            "exhausted": s.exhausted,
            "set_with": budget.raise_command(s).rsplit(" ", 1)[0],
        }
        for scoped in statuses.values()
        for s in scoped
    ]
    return {
        "group": folder,
        "timezone": config.timezone,
        "periods": periods,
        "budgets": budgets,
        "last_turns": _rows(await store.spend_by_run(folder, LAST_TURNS)),
    }


def _usd(value: float) -> str:
    return f"${value:,.4f}" if 0 < value < 0.01 else f"${value:,.2f}"


def _line(rows: list[dict[str, Any]]) -> str:
    cost = sum(r["cost_usd"] for r in rows)
    tokens = sum(r["tokens"] for r in rows)
    calls = sum(r["calls"] for r in rows)
    estimated = sum(r.get("estimated_calls", 0) for r in rows)
    cut = f" ({estimated} cut short, estimated)" if estimated else ""
    return f"{_usd(cost)}, {tokens:,} tokens, {calls} call(s){cut}"


def render(report: dict[str, Any]) -> str:
    """The chat/terminal text of a `build` report."""
    periods = report["periods"]
    lines = [
        f"Model spend ({report['timezone']}); "
        + ("group " + report["group"] if report["group"] else "all groups")
    ]
    for name, label in (("today", "today"), ("month", "this month"), ("since", "since")):
        if name not in periods:
            continue
        rows = periods[name]["rows"]
        lines.append(f"{label} ({periods[name]['key']}): {_line(rows) if rows else 'nothing'}")
        groups = sorted({r["group"] for r in rows})
        for group in groups:
            mine = [r for r in rows if r["group"] == group]
            if not report["group"]:
                lines.append(f"  {group}: {_line(mine)}")
            for r in mine:
                lines.append(f"    {r['model']}: {_line([r])}")
    if report["budgets"]:
        lines.append("budgets:")
        for b in report["budgets"]:
            shared = f", {budget.SHARED}" if b["scope"] == GLOBAL else ""
            text = budget.limit_text(b["limit"], b["amount"], b["spent"])
            lines.append(f"  {b['scope']}: {text} for {b['period']}{shared}")
    else:
        lines.append("budgets: none set ([budget] in config.toml or /budget set)")
    turns = report["last_turns"]
    if turns:
        lines.append("last turns:")
        by_run: dict[int, list[dict[str, Any]]] = {}
        for r in turns:
            by_run.setdefault(r["run_id"], []).append(r)
        for run_id, rows in by_run.items():
            models = ", ".join(sorted({r["model"] for r in rows}))
            lines.append(f"  run {run_id} ({rows[0]['group']}): {_line(rows)} [{models}]")
    return "\n".join(lines)
