"""Budgets as pure logic: the `[budget]` config, periods (DST included), limits, statuses, words."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.budget import BudgetConfig, parse_tokens, parse_usd
from core.config import ConfigError, parse
from gateway import budget
from gateway.budget import LimitStatus, Period, Spend

BERLIN = ZoneInfo("Europe/Berlin")
SRC = Path("config.toml")


def ts(text: str, zone: ZoneInfo = UTC) -> float:  # type: ignore[assignment]
    return datetime.fromisoformat(text).replace(tzinfo=zone).timestamp()


# -- config -----------------------------------------------------------------------------------


def test_budget_config_shape_parses_into_stored_units() -> None:
    config = parse(
        '[budget]\nwarn_at = 0.9\ntimezone = "Europe/Berlin"\n'
        "[budget.global]\ndaily_usd = 20\nmonthly_tokens = 50_000_000\n"
        '[budget.groups.team]\ndaily_usd = 2.5\ndaily_tokens = "500k"\n',
        SRC,
    )
    assert config.budget.warn_at == 0.9 and config.budget.timezone == "Europe/Berlin"
    assert config.budget.limits("global").amounts() == {"daily_usd": 20_000_000, "monthly_tokens": 50_000_000}
    assert config.budget.limits("team").amounts() == {"daily_usd": 2_500_000, "daily_tokens": 500_000}
    assert config.budget.limits("other").amounts() == {}  # no limit unless one is set


@pytest.mark.parametrize(
    ("toml", "words"),
    [
        ("[budget.groups.team]\ndaily_usd = -1", ["budget.groups.team.daily_usd", "negative"]),
        ("[budget.groups.team]\ndaily_usd = nan", ["budget.groups.team.daily_usd", "finite"]),
        ("[budget.global]\nmonthly_usd = inf", ["budget.global.monthly_usd", "finite"]),
        ("[budget.global]\ndaily_tokens = -5", ["budget.global.daily_tokens", "negative"]),
        ("[budget.global]\ndaily_tokens = 1.5", ["budget.global.daily_tokens", "whole"]),
        ("[budget.global]\nweekly_usd = 3", ["budget.global.weekly_usd", "unknown key"]),
        ('[budget]\ntimezone = "Mars/Olympus"', ["budget.timezone", "IANA"]),
        ("[budget]\nwarn_at = 1.5", ["budget.warn_at"]),
        ("[budget.groups.global]\ndaily_usd = 1", ["[budget.global]"]),
        ('[budget.groups."Bad Name"]\ndaily_usd = 1', ["not a group folder"]),
    ],
)
def test_bad_budget_config_is_refused_naming_the_key(toml: str, words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(toml, SRC)
    for word in words:
        assert word in str(caught.value)


def test_amount_parsing_is_shared_by_config_and_chat() -> None:
    assert parse_usd("2.00") == 2_000_000 and parse_usd("$0.5") == 500_000 and parse_usd(3) == 3_000_000
    assert parse_tokens("2m") == 2_000_000 and parse_tokens("1_000") == 1000 and parse_tokens(0) == 0
    for bad in ("-1", "nan", "inf", "two", True, "1e9"):
        with pytest.raises(ValueError):
            parse_usd(bad)
    for bad in ("-1", "1.5", "lots", "nan"):
        with pytest.raises(ValueError):
            parse_tokens(bad)


# -- periods ----------------------------------------------------------------------------------


def test_day_and_month_periods_in_utc() -> None:
    now = ts("2026-12-31T23:59:59")
    day, month = budget.day_period(now, ZoneInfo("UTC")), budget.month_period(now, ZoneInfo("UTC"))
    assert day == Period("2026-12-31", ts("2026-12-31T00:00"), ts("2027-01-01T00:00"))
    assert month == Period("2026-12", ts("2026-12-01T00:00"), ts("2027-01-01T00:00"))
    assert budget.day_period(now + 1, ZoneInfo("UTC")).key == "2027-01-01"  # the boundary is exact


def test_dst_days_start_at_local_midnight_and_last_23_or_25_hours() -> None:
    spring = budget.day_period(ts("2026-03-29T12:00", BERLIN), BERLIN)
    assert spring.key == "2026-03-29" and spring.end - spring.start == 23 * 3600
    assert spring.start == ts("2026-03-28T23:00")  # midnight CET is 23:00 UTC
    autumn = budget.day_period(ts("2026-10-25T12:00", BERLIN), BERLIN)
    assert autumn.key == "2026-10-25" and autumn.end - autumn.start == 25 * 3600
    march = budget.month_period(ts("2026-03-31T23:30", BERLIN), BERLIN)
    assert march.start == ts("2026-02-28T23:00") and march.end == ts("2026-03-31T22:00")  # CET → CEST
    # 00:30 local on the 1st belongs to the new month even though it is still the 31st in UTC
    assert budget.month_period(ts("2026-04-01T00:30", BERLIN), BERLIN).key == "2026-04"
    assert budget.next_boundary(ts("2026-03-29T12:00", BERLIN), BERLIN) == spring.end


# -- limits and statuses -------------------------------------------------------------------------


def test_overrides_beat_config_and_off_means_no_limit() -> None:
    config = BudgetConfig.model_validate({"groups": {"team": {"daily_usd": 2, "monthly_tokens": 100}}})
    assert budget.effective_limits(config, {}, "team") == {"daily_usd": 2_000_000, "monthly_tokens": 100}
    overrides: budget.Overrides = {("team", "daily_usd"): 5_000_000, ("team", "monthly_tokens"): None}
    assert budget.effective_limits(config, overrides, "team") == {"daily_usd": 5_000_000}
    assert budget.effective_limits(config, {("global", "daily_tokens"): 7}, "global") == {"daily_tokens": 7}


def test_statuses_exhaustion_warning_and_which_limit_is_named() -> None:
    now, zone = ts("2026-06-15T10:00"), ZoneInfo("UTC")
    spend = {
        "day": Spend(tokens=900, cost_micros=2_000_000),
        "month": Spend(tokens=5000, cost_micros=3_000_000),
    }
    found = budget.statuses(
        "team", {"daily_usd": 2_000_000, "daily_tokens": 1000, "monthly_usd": 10_000_000}, spend, now, zone
    )
    by_kind = {s.kind: s for s in found}
    assert by_kind["daily_usd"].exhausted and by_kind["daily_usd"].remaining == 0
    assert not by_kind["daily_tokens"].exhausted and by_kind["daily_tokens"].warned(0.8)
    assert not by_kind["monthly_usd"].warned(0.8) and by_kind["monthly_usd"].remaining == 7_000_000
    assert by_kind["daily_tokens"].key == "team:daily_tokens:2026-06-15"
    shared = LimitStatus("global", "daily_usd", 1, 5, budget.day_period(now, zone))
    assert budget.first_exhausted([shared, *found]) is by_kind["daily_usd"]  # own before shared
    assert budget.first_exhausted([shared]) is shared
    assert budget.first_exhausted([by_kind["daily_tokens"]]) is None


def test_words_name_the_limit_and_the_command_to_raise_it() -> None:
    day = budget.day_period(ts("2026-06-15T10:00"), ZoneInfo("UTC"))
    over = LimitStatus("team", "daily_usd", 2_000_000, 2_100_000, day)
    assert budget.raise_command(over) == "/budget set team daily 4.00"
    message = budget.vault_message(over)
    assert message.startswith("clawgate budget:") and len(message) <= 300 and "$2.00" in message
    exhausted = budget.notice(over, "exhausted", 0.8)
    assert "/budget set team daily 4.00" in exhausted and "2026-06-15" in exhausted
    tokens = LimitStatus(
        "global", "monthly_tokens", 1000, 850, budget.month_period(day.start, ZoneInfo("UTC"))
    )
    assert budget.raise_command(tokens) == "/budget set global monthly-tokens 100000"
    assert "85%" in budget.notice(tokens, "warn", 0.8) and "shared" in budget.notice(tokens, "warn", 0.8)
    assert "owner can raise it" in budget.chat_refusal(over)
    [entry] = budget.vault_limits([over])
    assert entry == {"key": over.key, "unit": "usd_micros", "remaining": -100_000, "message": message}


def test_a_limit_reads_in_the_words_the_owner_types_with_what_is_used() -> None:
    day = budget.day_period(ts("2026-06-15T10:00"), ZoneInfo("UTC"))
    month = budget.month_period(day.start, ZoneInfo("UTC"))
    said = budget.describe(LimitStatus("team", "daily_usd", 2_000_000, 400_000, day))
    assert said == "daily $2.00 (used $0.40, 20%)"
    tokens = LimitStatus("global", "monthly_tokens", 1_000_000, 999_999, month)
    assert budget.describe(tokens) == "monthly-tokens 1,000,000 tokens (used 999,999 tokens, 99%)"
    assert budget.limit_text("daily_tokens", 500, 0) == "daily-tokens 500 tokens (used 0 tokens, 0%)"
    assert (
        budget.limit_text("monthly_usd", 1_000_000, 1_000_000) == "monthly $1.00 (used $1.00, 100%, used up)"
    )
    assert budget.limit_text("daily_usd", 2_000_000, 2_100_000) == "daily $2.00 (used $2.10, 105%, used up)"
    assert budget.limit_text("daily_usd", 0, 0) == "daily $0.00 (used $0.00, 100%, used up)"
    assert budget.limit_text("daily_tokens", 10, -5) == "daily-tokens 10 tokens (used 0 tokens, 0%)"
    for kind in ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens"):
        assert kind not in budget.limit_text(kind, 1, 0)  # the config key is never what is shown
        assert budget.limit_text(kind, 1, 0).split()[0] in budget.KIND_OF_WORD  # /budget set's word


def test_a_budget_for_an_unregistered_folder_is_a_startup_warning() -> None:
    from gateway.preflight import budget_findings

    config = parse("[budget.groups.team]\ndaily_usd = 1\n[budget.groups.tema]\ndaily_usd = 1\n", SRC)
    [finding] = budget_findings(config, ["main", "team"])
    assert finding.level == "warning" and "[budget.groups.tema]" in finding.what
    assert "main, team" in finding.fix
    assert budget_findings(config, ["team", "tema"]) == []
