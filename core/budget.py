"""The `[budget]` config section: model spend limits per group and for all groups together.

A limit is per day or per month, in USD (priced with the `[prices]` table, core/pricing.py) or
in tokens (input + output + cache read + cache write). Unset means no limit of that kind.
`[budget.global]` limits the sum over every group; `[budget.groups.<folder>]` one group. A
folder that is not registered (yet) is accepted, so a budget can be written before the group
is registered; a misspelled one simply never matches, and `/usage` shows which limits apply.
Days and months start at midnight in `timezone`.

The same amount rules are used by `/budget set` (gateway/commands_budget.py), so the chat and
the file refuse the same things with the same words: negative, NaN, infinite, or absurd.
"""

from __future__ import annotations

import math
import re
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

LimitKind = Literal["daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens"]
LIMIT_KINDS: tuple[LimitKind, ...] = ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")
MAX_USD = 1_000_000.0  # per limit; more is a typo, not a budget
MAX_TOKENS = 10**13
GLOBAL = "global"  # the reserved folder name (groups/folders.py) standing for all groups together
_FOLDER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")


def parse_usd(value: object) -> int:
    """A USD amount (number or decimal string, e.g. `2`, `2.50`, `"$2.50"`) as micro-dollars."""
    if isinstance(value, bool):
        raise ValueError("expected a USD amount such as 2.50")
    if isinstance(value, str):
        text = value.strip().removeprefix("$").replace("_", "")
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a USD amount (e.g. 2.50)") from None
    if not isinstance(value, int | float):
        raise ValueError("expected a USD amount such as 2.50")
    amount = float(value)
    if not math.isfinite(amount):
        raise ValueError("must be a finite number of USD")
    if amount < 0:
        raise ValueError("must not be negative (0 allows no model calls at all)")
    if amount > MAX_USD:
        raise ValueError(f"must be at most {MAX_USD:,.0f} USD")
    return round(amount * 1_000_000)


def parse_tokens(value: object) -> int:
    """A token count (whole number; a string may use `_` or a k/m suffix: `500k`, `2m`)."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number of tokens")
    if isinstance(value, str):
        text = value.strip().lower().replace("_", "").replace(",", "")
        scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
        if scale != 1:
            text = text[:-1]
        try:
            number = float(text) * scale  # "1.5" is refused below as in the file: not whole
        except ValueError:
            raise ValueError(f"{value!r} is not a token count (e.g. 500000, 500k or 2m)") from None
        value = number
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise ValueError("must be a whole number of tokens")
        value = int(value)
    if not isinstance(value, int):
        raise ValueError("expected a whole number of tokens")
    if value < 0:
        raise ValueError("must not be negative (0 allows no model calls at all)")
    if value > MAX_TOKENS:
        raise ValueError(f"must be at most {MAX_TOKENS:,} tokens")
    return value


def parse_limit(kind: LimitKind, value: object) -> int:
    """The stored amount of a limit: micro-dollars for *_usd, tokens for *_tokens."""
    return parse_usd(value) if kind.endswith("_usd") else parse_tokens(value)


def format_limit(kind: LimitKind, amount: int) -> str:
    return f"${amount / 1_000_000:,.2f}" if kind.endswith("_usd") else f"{amount:,} tokens"


class BudgetLimits(BaseModel):
    """One scope's limits; each is optional. USD values are floats in the file, micro-USD inside."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    daily_usd: float | None = Field(None, description="USD per day (priced by [prices])")
    monthly_usd: float | None = Field(None, description="USD per calendar month")
    daily_tokens: int | None = Field(None, description="tokens per day (all four kinds summed)")
    monthly_tokens: int | None = Field(None, description="tokens per calendar month")

    @field_validator("daily_usd", "monthly_usd", mode="before")
    @classmethod
    def _usd(cls, value: object) -> object:
        return None if value is None else parse_usd(value) / 1_000_000

    @field_validator("daily_tokens", "monthly_tokens", mode="before")
    @classmethod
    def _tokens(cls, value: object) -> object:
        return None if value is None else parse_tokens(value)

    def amounts(self) -> dict[LimitKind, int]:
        """The set limits, in stored units (micro-USD or tokens)."""
        found: dict[LimitKind, int] = {}
        for kind in LIMIT_KINDS:
            value = getattr(self, kind)
            if value is not None:
                found[kind] = parse_limit(kind, value)
        return found


class BudgetConfig(BaseModel):
    """`[budget]`: see the module docstring and README 'Model spend' and 'Model budgets'."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    warn_at: float = Field(
        0.8, gt=0, le=1, description="tell the main chat once when this share of a limit is used"
    )
    timezone: str = Field("UTC", description="IANA zone whose midnights start days and months")
    global_: BudgetLimits = Field(
        default_factory=BudgetLimits, alias="global", description="limits on all groups together"
    )
    groups: dict[str, BudgetLimits] = Field(default_factory=dict, description="folder -> its limits")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{value!r} is not an IANA time zone (e.g. UTC or Europe/Berlin)") from None
        return value

    @field_validator("groups")
    @classmethod
    def _folders(cls, value: dict[str, BudgetLimits]) -> dict[str, BudgetLimits]:
        for folder in value:
            if folder == GLOBAL:
                raise ValueError("use [budget.global] for limits on all groups together")
            if not _FOLDER.match(folder):
                raise ValueError(f"{folder!r} is not a group folder name (lowercase, digits, - and _)")
        return value

    def limits(self, scope: str) -> BudgetLimits:
        """The configured limits of a folder, or of all groups together for `global`."""
        if scope == GLOBAL:
            return self.global_
        return self.groups.get(scope, BudgetLimits())
