"""Audit log: one JSON line per request through the vault, in `<state_dir>/audit.jsonl`.

Fields: `ts` (UTC ISO), `group`, `method`, `host`, `port`, `path` (query VALUES removed,
parameter names kept: `/search?q=&page=`), `status` (None when the upstream failed),
`req_bytes`, `resp_bytes` (0 for streamed bodies, which the vault does not buffer),
`ms` (request start to response end), `secret` / `rule` (what the vault applied, from
`flow.metadata["clawgate.secret"|"clawgate.rule"]`), `refusal` (why the vault answered
itself: `flow.metadata["clawgate.refusal"]`, or `error` for upstream failures and responses cut
short), `spend` ("unmetered: <what>" for a call that costs money the vault cannot meter, let
through because no budget applies to the group: proxy/spend_paths.py, proxy/budget.py — or,
when the request's body could not be read, recognised by its answer: a Responses call queued
in the background, proxy/meter_addon.py; "estimated: …" for a model call without its final
usage — cut, or answered without usage, streamed or not — counted with an estimate:
proxy/meter_addon.py; None otherwise) and
`approval` (a held request's outcome, proxy/holds.py: `approved by tg:1`, `denied by …`,
`expired`, `withdrawn: the client disconnected`, `allowed (…)`; None if not held). A request
that starts waiting for the owner also gets a line of its own at once, `approval: "held"`
with no status, so a hold that never ends (the vault killed) is still on record.

Writing never blocks the proxy: records are buffered in memory and a background task
appends them once per `FLUSH_S` in a worker thread; the file is rotated by size
(`audit.jsonl.1` … `.N`). The path is captured in `requestheaders` BEFORE any injection,
so a credential put into the path by a rule never reaches the log. A response's line is
written by the tail (registered after the meter), so it carries the meter's verdict on a
buffered response too: the meter reads a buffered body in its own `response` hook.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from proxy.stats import VaultStats

if TYPE_CHECKING:  # the CLI reads the log without loading mitmproxy
    from mitmproxy import connection, http

    GroupOf = Callable[[connection.Client], str | None]  # VaultAddon.group_of

log = logging.getLogger("clawgate.vault.audit")

AUDIT_FILE = "audit.jsonl"
FLUSH_S = 0.5
MAX_BYTES = 10 * 1024 * 1024
BACKUPS = 3


def strip_query_values(path: str) -> str:
    """`/p?a=1&b=secret` → `/p?a=&b=` (names kept, values dropped); fragments dropped."""
    path = path.split("#", 1)[0]
    base, sep, query = path.partition("?")
    if not sep:
        return base
    names = [name for name, _ in parse_qsl(query, keep_blank_values=True)]
    return base + "?" + "&".join(f"{n}=" for n in names)


def _resp_bytes(flow: http.HTTPFlow) -> int:
    """Buffered body size, or what a streaming callable counted (policy.SizeCap sets the key)."""
    counted = flow.metadata.get("clawgate.response_bytes")
    if counted is not None:
        return int(counted)
    resp = flow.response
    return len(resp.raw_content or b"") if resp is not None else 0


class AuditLog:
    """Buffered, size-rotated JSON-lines writer (thread-safe)."""

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self._buffer: list[str] = []
        self._lock = threading.Lock()  # guards the buffer
        self._file_lock = threading.Lock()  # one writer at a time
        self._task: asyncio.Task[None] | None = None

    def record(self, entry: dict[str, Any]) -> None:
        line = json.dumps(entry, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            self._buffer.append(line)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-flush")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(FLUSH_S)
            if self._buffer:
                try:
                    await asyncio.to_thread(self.flush)
                except OSError as exc:
                    log.error("audit: cannot write %s: %s", self.path, exc)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._buffer = self._buffer, []
        if not lines:
            return
        data = ("\n".join(lines) + "\n").encode("utf-8")
        with self._file_lock:
            self._rotate_if_needed(len(data))
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)

    def _rotate_if_needed(self, incoming: int) -> None:
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size + incoming <= self.max_bytes or size == 0:
            return
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                os.replace(src, self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()


class AuditAddon:
    """Register FIRST (before the leak scanner and injection) so `path` is what the container sent,
    and register its `tail` after the meter: the tail writes the lines of answered requests."""

    def __init__(self, audit: AuditLog, group_of: GroupOf, stats: VaultStats | None = None) -> None:
        self.audit = audit
        self._group_of = group_of
        self.stats = stats  # the same events, counted for the gateway's /metrics (proxy/stats.py)

    def running(self) -> None:
        self.audit.start()

    async def done(self) -> None:
        await self.audit.stop()

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        flow.metadata["clawgate.audit_path"] = strip_query_values(flow.request.path)

    def held(self, flow: http.HTTPFlow) -> None:
        """A line the moment a request starts waiting for the owner (`approval: "held"`, no
        status yet); its outcome follows in the request's own line when it is decided."""
        self._write(flow, None, None, count=False)

    def _write(
        self, flow: http.HTTPFlow, status: int | None, refusal: str | None, count: bool = True
    ) -> None:
        req = flow.request
        resp = flow.response
        start = req.timestamp_start or time.time()
        end = (resp.timestamp_end if resp is not None else None) or time.time()
        meta = flow.metadata
        # a refusal answered early by the vault itself keeps the host the client asked for
        host, port = meta.get("clawgate.audit_target") or (req.host, req.port)
        group = self._group_of(flow.client_conn)
        if self.stats is not None and count:
            self.stats.record(group, refusal)
        self.audit.record(
            {
                "ts": datetime.fromtimestamp(start, UTC).isoformat(timespec="milliseconds"),
                "group": group,
                "method": req.method,
                "host": host,
                "port": port,
                "path": meta.get("clawgate.audit_path") or strip_query_values(req.path),
                "status": status,
                "req_bytes": len(req.raw_content or b""),
                "resp_bytes": _resp_bytes(flow),
                "ms": round(max(0.0, end - start) * 1000, 2),
                "secret": meta.get("clawgate.secret"),
                "rule": meta.get("clawgate.rule"),
                "refusal": refusal,
                "spend": meta.get("clawgate.spend"),
                "approval": meta.get("clawgate.approval") if count else "held",
            }
        )

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            self._write(flow, None, flow.metadata.get("clawgate.refusal") or f"error: {flow.error}")
        # A response, whole or cut short (the client hung up mid-stream), is written by the tail,
        # after the meter has marked what it counted for it.

    @property
    def tail(self) -> _Tail:
        """A second addon to register AFTER VaultAddon and the meter: it logs responses (whole or
        cut short) with the meter's `spend` verdict, and CONNECTs the vault refused."""
        return _Tail(self)


class _Tail:
    def __init__(self, audit: AuditAddon) -> None:
        self._audit = audit

    def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None  # mitmproxy's response hook always has one
        self._audit._write(flow, flow.response.status_code, flow.metadata.get("clawgate.refusal"))

    def error(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            refusal = flow.metadata.get("clawgate.refusal") or f"error: {flow.error}"
            self._audit._write(flow, flow.response.status_code, refusal)

    def http_connect(self, flow: http.HTTPFlow) -> None:
        # A refused CONNECT never becomes a request: log it here (after VaultAddon decided).
        if flow.response is not None and flow.response.status_code >= 400:
            flow.metadata.setdefault("clawgate.audit_path", "")
            self._audit._write(flow, flow.response.status_code, flow.metadata.get("clawgate.refusal"))


# -- reading (the CLI) ------------------------------------------------------------------------


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """`10m`, `2h`, `3d`, `45s` ago, or an ISO timestamp (naive = UTC)."""
    now = now or datetime.now(UTC)
    value = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value and value[-1] in units and value[:-1].replace(".", "", 1).isdigit():
        return now - timedelta(seconds=float(value[:-1]) * units[value[-1]])
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since: expected e.g. 10m, 2h, 1d or an ISO time, got {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def read_entries(state_dir: Path, backups: int = BACKUPS) -> Iterator[dict[str, Any]]:
    """Oldest first, across rotated files; malformed lines are skipped."""
    base = Path(state_dir) / AUDIT_FILE
    files = [base.with_name(f"{AUDIT_FILE}.{i}") for i in range(backups, 0, -1)] + [base]
    for f in files:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    yield entry


def query(
    state_dir: Path, group: str | None = None, since: datetime | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    out = []
    for e in read_entries(state_dir):
        if group is not None and e.get("group") != group:
            continue
        if since is not None:
            try:
                if datetime.fromisoformat(str(e.get("ts"))) < since:
                    continue
            except ValueError:
                continue
        out.append(e)
    return out[-limit:] if limit else out


COLUMNS = (
    "ts",
    "group",
    "method",
    "host",
    "path",
    "status",
    "ms",
    "req_bytes",
    "resp_bytes",
    "secret",
    "refusal",
    "spend",
    "approval",
)


def format_table(entries: list[dict[str, Any]]) -> str:
    def cell(e: dict[str, Any], c: str) -> str:
        v = e.get(c)
        if c == "host" and e.get("port") not in (None, 80, 443):
            v = f"{v}:{e['port']}"
        if c == "ts" and isinstance(v, str):
            v = v.replace("+00:00", "Z")
        s = "-" if v is None or v == "" else str(v)
        return s if len(s) <= 60 else s[:57] + "..."

    rows = [tuple(c.upper() for c in COLUMNS)] + [tuple(cell(e, c) for c in COLUMNS) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(len(COLUMNS))).rstrip() for r in rows)
