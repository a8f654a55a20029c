"""`clawgate usage [--group G] [--since …] [--json]`: the CLI twin of `/usage`.

Reads the gateway's database directly (safe while it runs: SQLite WAL); the report is built by
gateway/usage_report.py, the same code the chat command uses.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo

import click

_RELATIVE = re.compile(r"^(\d{1,5})\s*([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(value: str, zone: ZoneInfo, now: float | None = None) -> float:
    """`7d`, `12h`, `30m`, `2w` ago, or an ISO date/time (`2026-11-01`, `2026-11-01T08:00`,
    in the budget's time zone unless it names its own offset). ValueError with the accepted forms."""
    now = time.time() if now is None else now
    text = value.strip().lower()
    if match := _RELATIVE.match(text):
        return now - int(match.group(1)) * _UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is neither a relative time (7d, 12h, 30m, 2w) nor an ISO date (2026-11-01 "
            "or 2026-11-01T08:00)"
        ) from None
    if len(value.strip()) == 10:  # a date: from its local midnight
        moment = datetime.combine(moment.date(), dtime(), zone)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=zone)
    found = moment.timestamp()
    if found > now:
        raise ValueError(f"{value!r} is in the future")
    return found


@click.command("usage")
@click.option("--group", "group", default=None, help="one group's folder (default: all groups)")
@click.option("--since", default=None, help="also show spend since then: 7d, 12h, or 2026-11-01")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def usage_cli(group: str | None, since: str | None, as_json: bool) -> None:
    """Model spend by group and model: today, this month, the last turns, and the budgets."""
    from core import config as config_mod
    from gateway.admin_cli import _with_store
    from gateway.store import Store
    from gateway.usage_report import build, render

    try:
        config = config_mod.load()
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    zone = ZoneInfo(config.budget.timezone)
    try:
        start = None if since is None else parse_since(since, zone)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None

    async def report(store: Store) -> dict[str, object]:
        folders = [g.folder for g in await store.groups()]
        if group is not None and group not in folders:
            raise click.BadParameter(
                f"no registered group {group!r} (registered: {', '.join(folders) or 'none'})",
                param_hint="--group",
            )
        return await build(store, config.budget, group, folders, start)

    found = _with_store(report)
    click.echo(json.dumps(found, indent=2) if as_json else render(found))
