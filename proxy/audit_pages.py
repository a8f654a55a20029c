"""One page of the vault's audit log, newest first, filtered — read backwards in fixed blocks.

The dashboard's Vault page shows the log (proxy/audit.py) with filters and paging. The log may
be tens of megabytes (`MAX_BYTES` × `BACKUPS`), so a page must not read it whole: the files are
read from their ends in `BLOCK` bytes at a time, lines are parsed one by one, and only the
requested page (plus one entry, to know whether there is another) is kept. A request's memory
is therefore a block plus a page whatever the log's size; its time grows with how far back the
page lies, which `MAX_SCAN_LINES` bounds (an older page answers "scan limit reached").
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from proxy.audit import AUDIT_FILE, BACKUPS

BLOCK = 64 * 1024
MAX_LINE = 64 * 1024  # a longer line is no audit record (they are a few hundred bytes): skipped
MAX_SCAN_LINES = 200_000
MAX_PAGE = 200

Kind = Literal["", "refused", "leak", "approval", "unmetered"]
KINDS: tuple[Kind, ...] = ("", "refused", "leak", "approval", "unmetered")


@dataclass(frozen=True)
class AuditFilter:
    """Every field empty = everything. `host` is a part of `host:port`; `status` is a code
    (`403`), a class (`4xx`) or `none`; `kind` keeps refused requests, leaks, held ones, or
    calls that spent unmetered."""

    group: str = ""
    host: str = ""
    status: str = ""
    kind: Kind = ""

    def matches(self, e: dict[str, Any]) -> bool:
        if self.group and e.get("group") != self.group:
            return False
        if self.host and self.host.lower() not in f"{e.get('host') or ''}:{e.get('port') or ''}".lower():
            return False
        if self.status and not _status_matches(self.status, e.get("status")):
            return False
        refusal = str(e.get("refusal") or "")
        if self.kind == "refused" and not refusal:
            return False
        if self.kind == "leak" and not refusal.startswith("leak"):
            return False
        if self.kind == "unmetered" and not str(e.get("spend") or "").startswith("unmetered"):
            return False
        return not (self.kind == "approval" and not e.get("approval"))


def parse_status(value: str) -> str:
    """Validate a status filter: `403`, `4xx`, `none` or empty; ValueError with the reason."""
    value = value.strip().lower()
    if value in ("", "none") or re.fullmatch(r"[1-5](\d\d|xx)", value):
        return value
    raise ValueError(f"status: expected a code like 403, a class like 4xx, or none; got {value[:20]!r}")


def _status_matches(wanted: str, status: object) -> bool:
    if wanted == "none":
        return status is None
    if not isinstance(status, int):
        return False
    if wanted.endswith("xx"):
        return str(status)[0] == wanted[0]
    return str(status) == wanted


@dataclass(frozen=True)
class AuditPage:
    entries: list[dict[str, Any]]
    offset: int
    limit: int
    has_more: bool
    scan_limited: bool  # MAX_SCAN_LINES lines were read before the page was full


def _lines_backwards(path: Path) -> Iterator[bytes]:
    """The file's lines, last first, reading BLOCK bytes at a time from the end."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        pos = os.fstat(fd).st_size
        tail = b""
        while pos > 0:
            step = min(BLOCK, pos)
            pos -= step
            chunk = os.pread(fd, step, pos) + tail
            parts = chunk.split(b"\n")
            tail = parts[0]
            if len(tail) > MAX_LINE:  # no newline for too long: drop the runaway line's start
                tail = b""
            for line in reversed(parts[1:]):
                if line:
                    yield line
        if tail:
            yield tail
    finally:
        os.close(fd)


def newest_first(state_dir: Path, backups: int = BACKUPS) -> Iterator[dict[str, Any]]:
    """Every parseable entry, newest first, across the live file and its rotations."""
    base = Path(state_dir) / AUDIT_FILE
    for f in [base] + [base.with_name(f"{AUDIT_FILE}.{i}") for i in range(1, backups + 1)]:
        for line in _lines_backwards(f):
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    yield entry


def page(state_dir: Path, flt: AuditFilter, offset: int = 0, limit: int = 50) -> AuditPage:
    """Entries `offset` … `offset + limit` (newest first) that match `flt`."""
    offset = max(0, offset)
    limit = max(1, min(limit, MAX_PAGE))
    kept: list[dict[str, Any]] = []
    matched = 0
    scanned = 0
    for entry in newest_first(state_dir):
        scanned += 1
        if scanned > MAX_SCAN_LINES:
            return AuditPage(kept, offset, limit, has_more=False, scan_limited=True)
        if not flt.matches(entry):
            continue
        matched += 1
        if matched <= offset:
            continue
        if len(kept) == limit:
            return AuditPage(kept, offset, limit, has_more=True, scan_limited=False)
        kept.append(entry)
    return AuditPage(kept, offset, limit, has_more=False, scan_limited=False)
