"""The dashboard's login links, sessions, CSRF/origin checks and bind rule (dashboard/auth.py, config)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from core.config import ConfigError, parse
from dashboard.auth import Sessions, consume_login, csrf_ok, logins_dir, mint_login, same_origin
from dashboard.backend import SUBSCRIBER_QUEUE, Feed


def test_a_login_link_works_once_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    token = mint_login(tmp_path, "console:owner", now=1000.0)
    [stored] = list(logins_dir(tmp_path).iterdir())
    assert token not in stored.name and token not in stored.read_text()
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(logins_dir(tmp_path).stat().st_mode) == 0o700
    assert consume_login(tmp_path, token, now=1001.0) == "console:owner"
    assert consume_login(tmp_path, token, now=1001.0) is None  # used
    assert list(logins_dir(tmp_path).iterdir()) == []


def test_an_expired_or_unknown_link_is_refused_and_used_up(tmp_path: Path) -> None:
    token = mint_login(tmp_path, "tg:1", now=1000.0, ttl_s=60)
    assert consume_login(tmp_path, token, now=1060.0) is None
    assert consume_login(tmp_path, token, now=1000.0) is None  # gone, even "before" expiry
    assert consume_login(tmp_path, "not-a-token") is None
    assert consume_login(tmp_path, "") is None
    assert consume_login(tmp_path, "../../etc/passwd") is None


def test_minting_sweeps_expired_links(tmp_path: Path) -> None:
    mint_login(tmp_path, "tg:1", now=1000.0, ttl_s=60)
    fresh = mint_login(tmp_path, "tg:1", now=2000.0, ttl_s=60)
    assert len(list(logins_dir(tmp_path).iterdir())) == 1
    assert consume_login(tmp_path, fresh, now=2001.0) == "tg:1"


def test_sessions_expire_and_are_random() -> None:
    sessions = Sessions(ttl_s=10)
    a, b = sessions.create("u", now=0.0), sessions.create("u", now=0.0)
    assert a.id != b.id and a.csrf != b.csrf and len(a.id) >= 40
    assert sessions.get(a.id, now=9.0) is a
    assert sessions.get(a.id, now=10.0) is None
    assert sessions.get(None) is None and sessions.get("forged") is None
    sessions.end(b.id)
    assert sessions.get(b.id, now=1.0) is None


def test_csrf_and_origin_rules() -> None:
    session = Sessions().create("u")
    assert csrf_ok(session, session.csrf)
    assert not csrf_ok(session, None) and not csrf_ok(session, "x" + session.csrf[1:])
    own = "http://127.0.0.1:8765"
    assert same_origin(own, "same-origin", own)
    assert same_origin(own, None, own)  # an older browser: Origin alone
    assert same_origin(None, "same-origin", own)
    assert not same_origin("http://evil.example", None, own)
    assert not same_origin(own, "cross-site", own)
    assert not same_origin(own, "same-site", own)  # another port on this host is another site's page
    assert not same_origin("null", None, own)
    assert same_origin("null", "same-origin", own)  # Chromium's same-origin POST under no-referrer
    assert not same_origin("http://evil.example", "same-origin", own)
    assert not same_origin(None, None, own)


def test_a_non_loopback_bind_needs_allow_remote() -> None:
    with pytest.raises(ConfigError, match=r"dashboard.bind = '0.0.0.0' is not a loopback address"):
        parse('[dashboard]\nenabled = true\nbind = "0.0.0.0"\n', Path("c.toml"))
    config = parse('[dashboard]\nbind = "0.0.0.0"\nallow_remote = true\n', Path("c.toml"))
    assert config.dashboard.bind == "0.0.0.0"
    assert parse("", Path("c.toml")).dashboard.bind == "127.0.0.1"
    assert not parse("", Path("c.toml")).dashboard.enabled
    with pytest.raises(ConfigError, match="is not an IP address"):
        parse('[dashboard]\nbind = "example.com"\n', Path("c.toml"))


async def test_a_slow_feed_subscriber_loses_items_instead_of_growing_memory() -> None:
    feed = Feed()
    queue = feed.subscribe()
    for i in range(SUBSCRIBER_QUEUE + 20):
        feed.publish("team", "bob", f"m{i}")
    assert queue.qsize() == SUBSCRIBER_QUEUE
    assert feed.recent[-1].text == f"m{SUBSCRIBER_QUEUE + 19}" and len(feed.recent) == 50
    feed.unsubscribe(queue)
    assert feed.subscribers == 0


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    config_dir, data_dir = tmp_path / "cfg", tmp_path / "data"
    config_dir.mkdir()
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(data_dir))
    return config_dir, data_dir


def test_dashboard_url_prints_a_link_that_works_once(home: tuple[Path, Path]) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    config_dir, data_dir = home
    (config_dir / "config.toml").write_text(
        '[admin]\nusers = ["tg:42"]\n[dashboard]\nenabled = true\nport = 9911\n'
    )
    result = CliRunner().invoke(main, ["dashboard", "url"])
    assert result.exit_code == 0, result.output
    [url] = [line for line in result.stdout.splitlines() if line.startswith("http")]
    assert url.startswith("http://127.0.0.1:9911/login?t=")
    token = url.partition("?t=")[2]
    assert consume_login(data_dir, token) == "console:owner"
    assert consume_login(data_dir, token) is None

    result = CliRunner().invoke(main, ["dashboard", "url", "--as", "tg:42"])
    assert result.exit_code == 0, result.output
    assert consume_login(data_dir, result.stdout.strip().partition("?t=")[2]) == "tg:42"

    result = CliRunner().invoke(main, ["dashboard", "url", "--as", "tg:666"])
    assert result.exit_code != 0 and "'tg:666' is not an admin" in result.output
    assert list(logins_dir(data_dir).iterdir()) == []  # nothing minted for a refused identity


def test_dashboard_url_says_when_the_dashboard_is_off(home: tuple[Path, Path]) -> None:
    from click.testing import CliRunner

    from gateway.cli import main

    result = CliRunner().invoke(main, ["dashboard", "url"])
    assert result.exit_code == 0
    assert "[dashboard] enabled = false" in result.stderr
    assert result.stdout.startswith("http://127.0.0.1:8765/login?t=")
