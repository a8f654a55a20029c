"""Audit log (proxy/audit.py): query values stripped, buffered writes, rotation, `vault log`."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from proxy import audit
from proxy.audit import AuditLog, parse_since, query, read_entries, strip_query_values
from proxy.cli import vault_cli


def entry(group: str, ts: datetime, path: str = "/v1/messages", status: int = 200) -> dict:
    return {
        "ts": ts.isoformat(timespec="milliseconds"),
        "group": group,
        "method": "POST",
        "host": "api.example.com",
        "port": 443,
        "path": path,
        "status": status,
        "req_bytes": 10,
        "resp_bytes": 20,
        "ms": 1.5,
        "secret": "anthropic",
        "rule": None,
        "refusal": None,
    }


def test_strip_query_values() -> None:
    assert strip_query_values("/a/b") == "/a/b"
    assert strip_query_values("/s?q=secret&page=2&flag") == "/s?q=&page=&flag="
    assert strip_query_values("/s?token=abc#frag") == "/s?token="


def test_parse_since() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert parse_since("10m", now) == now - timedelta(minutes=10)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("2026-01-01T11:00:00", now) == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    with pytest.raises(ValueError):
        parse_since("yesterday", now)


async def test_buffered_flush_and_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "FLUSH_S", 0.02)
    log = AuditLog(tmp_path / "audit.jsonl", max_bytes=2000, backups=2)
    log.start()
    now = datetime.now(UTC)
    for i in range(10):
        log.record(entry("main", now, path=f"/p{i}"))
    assert not (tmp_path / "audit.jsonl").exists()  # nothing written on the request path
    await asyncio.sleep(0.2)
    assert len((tmp_path / "audit.jsonl").read_text().splitlines()) == 10
    for round_ in range(6):
        for i in range(10):
            log.record(entry("g2", now, path=f"/r{round_}/{i}"))
        log.flush()
    await log.stop()
    assert (tmp_path / "audit.jsonl.1").exists() and (tmp_path / "audit.jsonl.2").exists()
    assert not (tmp_path / "audit.jsonl.3").exists()
    assert (tmp_path / "audit.jsonl").stat().st_mode & 0o777 == 0o600
    paths = [e["path"] for e in read_entries(tmp_path, backups=2)]
    assert paths[-1] == "/r5/9"  # oldest first, newest last


def test_vault_log_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(tmp_path))
    state = tmp_path / "vault"
    state.mkdir()
    now = datetime.now(UTC)
    lines = [
        entry("main", now - timedelta(hours=2), path="/old"),
        entry("main", now - timedelta(minutes=1), path="/new?q="),
        entry("family", now - timedelta(minutes=1), path="/fam", status=403)
        | {"refusal": "leak: GitHub token"},
        entry("family", now - timedelta(minutes=1), path="/deploy", status=200)
        | {"approval": "approved by tg:4242"},
    ]
    (state / "audit.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines) + "garbage\n")
    runner = CliRunner()
    r = runner.invoke(vault_cli, ["log"])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0].split()[:4] == ["TS", "GROUP", "METHOD", "HOST"]
    assert "/old" in r.output and "/fam" in r.output and "leak: GitHub token" in r.output
    assert r.output.splitlines()[0].split()[-1] == "APPROVAL" and "approved by tg:4242" in r.output
    r = runner.invoke(vault_cli, ["log", "--group", "main", "--since", "10m"])
    assert r.exit_code == 0, r.output
    assert "/new?q=" in r.output and "/old" not in r.output and "/fam" not in r.output
    r = runner.invoke(vault_cli, ["log", "--limit", "1", "--json"])
    assert [json.loads(x)["path"] for x in r.output.splitlines()] == ["/deploy"]
    r = runner.invoke(vault_cli, ["log", "--since", "nonsense"])
    assert r.exit_code != 0 and "--since" in r.output
    assert len(query(state, group="family")) == 2
