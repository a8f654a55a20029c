"""proxy/audit_pages.py: the audit log paged newest first, filtered, read backwards in blocks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from proxy import audit_pages
from proxy.audit import AUDIT_FILE
from proxy.audit_pages import AuditFilter, newest_first, page, parse_status


def entry(i: int, **kw: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "ts": f"2026-01-01T00:00:{i:02d}.000+00:00",
        "group": "main" if i % 2 else "team",
        "host": "api.example.com",
        "port": 443,
        "path": f"/r/{i}",
        "status": 200,
        "refusal": None,
        "approval": None,
    }
    e.update(kw)
    return e


def write(path: Path, entries: list[dict[str, Any]], junk: bool = False) -> None:
    lines = [json.dumps(e) for e in entries]
    if junk:
        lines.insert(1, "not json {")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Entries 0..29 over two rotated files and the live one; a tiny block size."""
    monkeypatch.setattr(audit_pages, "BLOCK", 37)  # lines straddle blocks
    write(tmp_path / f"{AUDIT_FILE}.2", [entry(i) for i in range(0, 10)], junk=True)
    write(tmp_path / f"{AUDIT_FILE}.1", [entry(i) for i in range(10, 20)])
    write(tmp_path / AUDIT_FILE, [entry(i) for i in range(20, 30)])
    return tmp_path


def paths(p: audit_pages.AuditPage) -> list[str]:
    return [e["path"] for e in p.entries]


def test_newest_first_across_rotated_files_skipping_junk(state: Path) -> None:
    assert [e["path"] for e in newest_first(state)] == [f"/r/{i}" for i in range(29, -1, -1)]


def test_pages_are_newest_first_with_offset_and_more(state: Path) -> None:
    first = page(state, AuditFilter(), 0, 12)
    assert paths(first) == [f"/r/{i}" for i in range(29, 17, -1)] and first.has_more
    last = page(state, AuditFilter(), 24, 12)
    assert paths(last) == [f"/r/{i}" for i in range(5, -1, -1)] and not last.has_more
    assert page(state, AuditFilter(), 30, 12).entries == []


def test_filters(state: Path) -> None:
    (state / AUDIT_FILE).write_text(
        "\n".join(
            json.dumps(e)
            for e in [
                entry(40, status=403, refusal="egress: host not allowed", host="evil.example", port=8443),
                entry(41, status=403, refusal="leak: aws key"),
                entry(42, status=None, approval="held"),
                entry(43, status=502, refusal="error: connect"),
                entry(44, group="main", spend="unmetered: batch creation (its cost is known only later)"),
                entry(45, spend=None),
            ]
        )
        + "\n"
    )
    assert paths(page(state, AuditFilter(kind="refused"))) == ["/r/43", "/r/41", "/r/40"]
    assert paths(page(state, AuditFilter(kind="leak"))) == ["/r/41"]
    assert paths(page(state, AuditFilter(kind="approval"))) == ["/r/42"]
    assert paths(page(state, AuditFilter(kind="unmetered"))) == ["/r/44"]
    assert paths(page(state, AuditFilter(status="none"))) == ["/r/42"]
    assert paths(page(state, AuditFilter(status="5xx"))) == ["/r/43"]
    assert paths(page(state, AuditFilter(status="403", group="main"))) == ["/r/41"]
    assert paths(page(state, AuditFilter(host="evil.example:8443"))) == ["/r/40"]
    assert len(page(state, AuditFilter(group="team"), 0, 200).entries) == 2 + 10


def test_status_filter_is_validated() -> None:
    assert [parse_status(s) for s in ("", "None", " 4xx", "403")] == ["", "none", "4xx", "403"]
    for bad in ("abc", "4x", "600", "40x", "4xxx"):
        with pytest.raises(ValueError, match="status: expected"):
            parse_status(bad)


def test_a_runaway_line_is_skipped_and_the_scan_is_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_pages, "BLOCK", 64)
    monkeypatch.setattr(audit_pages, "MAX_LINE", 200)
    (tmp_path / AUDIT_FILE).write_text(
        json.dumps(entry(1)) + "\n" + "x" * 5000 + "\n" + json.dumps(entry(2)) + "\n", encoding="utf-8"
    )
    assert paths(page(tmp_path, AuditFilter())) == ["/r/2", "/r/1"]
    monkeypatch.setattr(audit_pages, "MAX_SCAN_LINES", 1)
    bounded = page(tmp_path, AuditFilter(group="main"))
    assert bounded.scan_limited and bounded.entries == []
