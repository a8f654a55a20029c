"""`clawgate usage`: `--since` forms and bad input, and the report against a real database."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner

from gateway.cli import main
from gateway.usage_cli import parse_since

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC).timestamp()


def test_since_accepts_relative_and_iso_forms() -> None:
    utc, berlin = ZoneInfo("UTC"), ZoneInfo("Europe/Berlin")
    assert parse_since("7d", utc, NOW) == NOW - 7 * 86400
    assert parse_since("12h", utc, NOW) == NOW - 12 * 3600 and parse_since("2w", utc, NOW) == NOW - 14 * 86400
    assert parse_since("2026-06-01", utc, NOW) == datetime(2026, 6, 1, tzinfo=UTC).timestamp()
    assert parse_since("2026-06-01", berlin, NOW) == datetime(2026, 5, 31, 22, tzinfo=UTC).timestamp()
    assert (
        parse_since("2026-06-01T08:00+00:00", berlin, NOW) == datetime(2026, 6, 1, 8, tzinfo=UTC).timestamp()
    )
    for bad in ("yesterday", "7x", "-3d", "2026-13-01", "2027-01-01"):
        with pytest.raises(ValueError):
            parse_since(bad, utc, NOW)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "config.toml").write_text("[budget.groups.team]\ndaily_tokens = 1000\n")
    return tmp_path


def test_usage_cli_refuses_bad_input_with_clear_errors(home: Path) -> None:
    runner = CliRunner()
    bad_since = runner.invoke(main, ["usage", "--since", "lately"])
    assert bad_since.exit_code == 2 and "--since" in bad_since.output and "7d" in bad_since.output
    no_group = runner.invoke(main, ["usage", "--group", "nope"])
    assert no_group.exit_code == 2 and "no registered group 'nope'" in no_group.output


def test_usage_cli_json_has_periods_budgets_and_turns(home: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["groups", "register", "tg:-100", "team"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["usage", "--json", "--since", "7d"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["periods"]) == {"today", "month", "since"} and report["last_turns"] == []
    [limit] = report["budgets"]
    assert limit["scope"] == "team" and limit["limit"] == "daily_tokens" and limit["amount"] == 1000
    text = runner.invoke(main, ["usage", "--group", "team"])
    assert text.exit_code == 0 and "team: daily-tokens 1,000 tokens (used 0 tokens, 0%) for " in text.output


def test_usage_says_how_many_calls_were_cut_short_and_estimated(home: Path) -> None:
    """A call the vault stored incomplete (cut before its final usage) counts its estimate, and
    `clawgate usage` (the same report as `/usage`) says so, in the text and in `--json`."""
    import time

    from core.paths import DATABASE
    from gateway.admin_cli import _with_store
    from gateway.store import MeteredRow, Store

    runner = CliRunner()
    assert runner.invoke(main, ["groups", "register", "tg:-100", "team"]).exit_code == 0
    now = time.time()
    rows = [
        MeteredRow("v:1", "team", None, "openai", "gpt-4o", 100, 20, 0, 0, 0, True, now),
        MeteredRow("v:2", "team", None, "openai", "gpt-4o", 500, 7, 0, 0, 0, False, now),  # cut
    ]

    async def add(store: Store) -> int:
        return await store.add_metered_usage(rows)

    assert _with_store(add) == 2
    assert (home / "data" / DATABASE).exists()
    report = json.loads(runner.invoke(main, ["usage", "--json"]).output)
    [today] = report["periods"]["today"]["rows"]
    assert (today["calls"], today["estimated_calls"], today["tokens"]) == (2, 1, 627)
    text = runner.invoke(main, ["usage", "--group", "team"]).output
    assert "627 tokens, 2 call(s) (1 cut short, estimated)" in text, text
