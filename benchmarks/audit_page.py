"""`audit_page_*` for `make bench`: one page of the vault's audit log on the dashboard's Vault page.

A full-size log (the live file and its `BACKUPS` rotations, `MAX_BYTES` each) is paged by
`proxy.audit_pages.page` — read backwards in blocks, one page kept — next to the CLI's
`proxy.audit.query` (`clawgate vault log`: every file read whole, every entry parsed), in
alternating rounds in the same run. Two pages: the newest 50 (no filter) and the newest 50 of a
group whose requests are all in the oldest file (the whole log scanned). Time is the median;
memory is the peak Python allocation of one more call (tracemalloc, not timed).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from proxy.audit import AUDIT_FILE, BACKUPS, MAX_BYTES, query  # noqa: E402
from proxy.audit_pages import AuditFilter, page  # noqa: E402

ROUNDS = 3
RARE = "rare"


def _line(i: int, group: str) -> str:
    return json.dumps(
        {
            "ts": f"2026-01-01T00:00:00.{i % 1000:03d}+00:00",
            "group": group,
            "method": "POST",
            "host": "api.anthropic.com",
            "port": 443,
            "path": f"/v1/messages?beta=&n{i}=",
            "status": 200,
            "req_bytes": 1200,
            "resp_bytes": 5400,
            "ms": 812.5,
            "secret": "anthropic",
            "rule": "api.anthropic.com/* [any] set_header x-api-key: {value}",
            "refusal": None,
            "approval": None,
        },
        separators=(",", ":"),
    )


def _write_log(state: Path) -> int:
    files = [state / f"{AUDIT_FILE}.{i}" for i in range(BACKUPS, 0, -1)] + [state / AUDIT_FILE]
    n = 0
    for index, f in enumerate(files):
        with f.open("w", encoding="utf-8") as out:
            size = 0
            while size < MAX_BYTES:
                group = RARE if index == 0 and n % 100 == 0 else "main"
                line = _line(n, group) + "\n"
                out.write(line)
                size += len(line)
                n += 1
    return n


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def _peak(fn: Callable[[], Any]) -> int:
    """Peak bytes allocated by one call (a separate call: tracemalloc slows what it traces)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run() -> dict[str, float | int]:
    state = Path(tempfile.mkdtemp(prefix="cg-audit-bench-"))
    try:
        lines = _write_log(state)
        cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "newest": (
                lambda: page(state, AuditFilter(), 0, 50).entries,
                lambda: query(state, limit=50)[::-1],
            ),
            "rare_group": (
                lambda: page(state, AuditFilter(group=RARE), 0, 50).entries,
                lambda: query(state, group=RARE, limit=50)[::-1],
            ),
        }
        out: dict[str, float | int] = {
            "audit_log_lines": lines,
            "audit_log_mb": round(sum(f.stat().st_size for f in state.iterdir()) / 1e6, 1),
        }
        for name, (ours, cli) in cases.items():
            times: dict[str, list[float]] = {"page": [], "query": []}
            for _ in range(ROUNDS):
                t, mine = _timed(ours)
                times["page"].append(t)
                t, theirs = _timed(cli)
                times["query"].append(t)
                assert mine == theirs and len(mine) == 50, name  # the same page either way
            peaks = {"page": _peak(ours), "query": _peak(cli)}
            for who in ("page", "query"):
                prefix = "audit_page" if who == "page" else "audit_cli_query"
                out[f"{prefix}_{name}_p50_ms"] = round(statistics.median(times[who]) * 1000, 2)
                out[f"{prefix}_{name}_peak_kb"] = peaks[who] // 1024
        return out
    finally:
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(run(), indent=1))
