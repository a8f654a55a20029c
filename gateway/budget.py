"""Budget decisions, as pure functions over numbers: no I/O, no clock, no database.

What it decides, given the limits in force and what was spent:

- Periods. A day is [local midnight, next local midnight) in `[budget] timezone`; a month is
  [the 1st at local midnight, the next 1st at local midnight). Boundaries are computed on
  wall-clock dates and converted to Unix time with the zone's rules, so a DST day is 23 or 25
  hours long and still starts at midnight. Each period has a key ("2026-03-29", "2026-03")
  that names it in notices and in the database.
- Which limits apply to a group: its own (`scope` = its folder) and the shared ones (`scope` =
  "global", the sum over all groups). A `/budget set` override beats the config; an override
  of `None` ("off") means no limit even if the config has one.
- Status of each limit: spent (tokens = input + output + cache read + cache write; USD =
  cost_micros priced at ingest), remaining = limit - spent (may be negative: a call already in
  flight when the headroom ran out is metered after the fact), exhausted when remaining <= 0,
  warned when spent >= warn_at * limit.
- The words: one line per limit as the owner says it in chat (`describe`: "daily $2.00 (used
  $0.40, 20%)", shown by `/budget`, `/usage`, `clawgate usage` and the dashboard alike), the
  chat's refusal, the vault's refusal message (<= 300 chars, starting "clawgate budget:", the
  marker the agent looks for), and the main-chat notices with the exact `/budget set` command
  that would raise the limit.

Who uses it: gateway/budget_state.py (the pre-turn check, notices, the state pushed to the
vault), gateway/commands_budget.py (/usage, /budget), gateway/usage_cli.py and the dashboard's
budget lines (gateway/dashboard_backend.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from core.budget import GLOBAL, LIMIT_KINDS, BudgetConfig, LimitKind, format_limit

Overrides = dict[tuple[str, LimitKind], int | None]  # (scope, kind) -> amount, None = off
Level = Literal["warn", "exhausted"]
VAULT_MESSAGE_MAX = 300
MARKER = "clawgate budget:"
COMMAND_WORD: dict[LimitKind, str] = {
    "daily_usd": "daily",
    "monthly_usd": "monthly",
    "daily_tokens": "daily-tokens",
    "monthly_tokens": "monthly-tokens",
}
KIND_OF_WORD: dict[str, LimitKind] = {word: kind for kind, word in COMMAND_WORD.items()}
SHARED = "shared by all groups"  # how a [budget.global] limit is marked next to a group's own


@dataclass(frozen=True, slots=True)
class Period:
    key: str  # "2026-03-29" or "2026-03"
    start: float  # Unix time, inclusive
    end: float  # Unix time, exclusive


def _midnight(day: date, zone: ZoneInfo) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()


def day_period(now: float, zone: ZoneInfo) -> Period:
    today = datetime.fromtimestamp(now, zone).date()
    return Period(today.isoformat(), _midnight(today, zone), _midnight(today + timedelta(days=1), zone))


def month_period(now: float, zone: ZoneInfo) -> Period:
    today = datetime.fromtimestamp(now, zone).date()
    first = today.replace(day=1)
    following = (first + timedelta(days=32)).replace(day=1)
    return Period(first.strftime("%Y-%m"), _midnight(first, zone), _midnight(following, zone))


def period_for(kind: LimitKind, now: float, zone: ZoneInfo) -> Period:
    return day_period(now, zone) if kind.startswith("daily") else month_period(now, zone)


def next_boundary(now: float, zone: ZoneInfo) -> float:
    """When the next day (and so possibly month) starts: the state pushed to the vault is due then."""
    return day_period(now, zone).end


def effective_limits(config: BudgetConfig, overrides: Overrides, scope: str) -> dict[LimitKind, int]:
    """The limits in force for one scope (a folder or "global"), overrides first."""
    configured = config.limits(scope).amounts()
    found: dict[LimitKind, int] = {}
    for kind in LIMIT_KINDS:
        amount = overrides[scope, kind] if (scope, kind) in overrides else configured.get(kind)
        if amount is not None:
            found[kind] = amount
    return found


@dataclass(frozen=True, slots=True)
class Spend:
    tokens: int = 0
    cost_micros: int = 0

    def of(self, kind: LimitKind) -> int:
        return self.cost_micros if kind.endswith("_usd") else self.tokens


@dataclass(frozen=True, slots=True)
class LimitStatus:
    scope: str  # a folder or "global"
    kind: LimitKind
    limit: int  # micro-USD or tokens
    spent: int
    period: Period

    @property
    def remaining(self) -> int:
        return self.limit - self.spent

    @property
    def exhausted(self) -> bool:
        return self.remaining <= 0

    def warned(self, warn_at: float) -> bool:
        return self.spent >= warn_at * self.limit

    @property
    def share(self) -> float:
        return 1.0 if self.limit <= 0 else self.spent / self.limit

    @property
    def unit(self) -> Literal["tokens", "usd_micros"]:
        return "usd_micros" if self.kind.endswith("_usd") else "tokens"

    @property
    def key(self) -> str:
        """Names the limit in the vault's state: `<scope>:<kind>:<period>`."""
        return f"{self.scope}:{self.kind}:{self.period.key}"


def statuses(
    scope: str,
    limits: dict[LimitKind, int],
    spend: dict[Literal["day", "month"], Spend],
    now: float,
    zone: ZoneInfo,
) -> list[LimitStatus]:
    """One status per limit in force; `spend` is the scope's spend this day and this month."""
    found = []
    for kind, amount in limits.items():
        which: Literal["day", "month"] = "day" if kind.startswith("daily") else "month"
        found.append(LimitStatus(scope, kind, amount, spend[which].of(kind), period_for(kind, now, zone)))
    return found


def limit_text(kind: LimitKind, limit: int, spent: int) -> str:
    """A limit in the owner's words: `daily $2.00 (used $0.40, 20%)`, `, used up` once exhausted.

    The word is the one `/budget set` takes (not the config key), so what the owner reads is what
    they type to change it. The percentage is rounded down, so a limit never reads 100% before
    it stops calls. One function for `/budget`, `/usage`, `clawgate usage` and the dashboard.
    """
    used = max(spent, 0)
    share = 1.0 if limit <= 0 else used / limit
    state = ", used up" if limit - spent <= 0 else ""
    return (
        f"{COMMAND_WORD[kind]} {format_limit(kind, limit)} "
        f"(used {format_limit(kind, used)}, {math.floor(share * 100):,}%{state})"
    )


def describe(status: LimitStatus) -> str:
    return limit_text(status.kind, status.limit, status.spent)


def _what(status: LimitStatus) -> str:
    period = "daily" if status.kind.startswith("daily") else "monthly"
    unit = "USD" if status.kind.endswith("_usd") else "token"
    whose = "the shared (all groups)" if status.scope == GLOBAL else f"group {status.scope}'s"
    return f"{whose} {period} {unit} budget ({format_limit(status.kind, status.limit)})"


def raise_command(status: LimitStatus) -> str:
    """`/budget set <scope> <word> <twice the limit, at least something>`."""
    if status.kind.endswith("_usd"):
        more = max(status.limit * 2, 1_000_000)
        amount = f"{more / 1_000_000:.2f}"
    else:
        amount = str(max(status.limit * 2, 100_000))
    return f"/budget set {status.scope} {COMMAND_WORD[status.kind]} {amount}"


def chat_refusal(status: LimitStatus) -> str:
    """What a group over its budget is told instead of an answer (short: it is a group chat)."""
    return (
        f"The assistant's model budget is used up: {_what(status)} is spent until "
        f"{_until(status)}. Nothing was sent to the model; the owner can raise it."
    )


def vault_message(status: LimitStatus) -> str:
    """The error a refused model call carries; the agent relays it to the chat."""
    text = f"{MARKER} {_what(status)} is used up; the owner can raise it with /budget set in the main chat."
    return text[:VAULT_MESSAGE_MAX]


def notice(status: LimitStatus, level: Level, warn_at: float) -> str:
    """The main chat's one notice per scope, limit, period and level."""
    spent = format_limit(status.kind, max(status.spent, 0))
    if level == "warn":
        return (
            f"⚠️ {_what(status)}: {spent} used ({status.share:.0%}, warning at {warn_at:.0%}) "
            f"for {status.period.key}. To raise it: {raise_command(status)}"
        )
    who = "every group's" if status.scope == GLOBAL else f"{status.scope}'s"
    return (
        f"⛔ {_what(status)} is used up for {status.period.key} ({spent} spent); {who} model calls are "
        f"refused until {_until(status)}. To raise it: {raise_command(status)}"
    )


def _until(status: LimitStatus) -> str:
    end = datetime.fromtimestamp(status.period.end, UTC)
    return end.strftime("%Y-%m-%d %H:%M UTC")


def first_exhausted(found: list[LimitStatus]) -> LimitStatus | None:
    """The limit to name in a refusal: a group's own before the shared one, days before months."""
    over = [s for s in found if s.exhausted]
    over.sort(key=lambda s: (s.scope == GLOBAL, not s.kind.startswith("daily"), s.kind))
    return over[0] if over else None


def vault_limits(found: list[LimitStatus]) -> list[dict[str, object]]:
    """The `limits` entries of the vault's `budgets` op for one scope (SPEND-INTERFACE §6)."""
    return [
        {"key": s.key, "unit": s.unit, "remaining": s.remaining, "message": vault_message(s)} for s in found
    ]
