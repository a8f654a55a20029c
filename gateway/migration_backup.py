"""A copy of the database before a migration changes it: `<data dir>/backups/clawgate-v<v>-<time>.db`.

A migration rewrites tables in place; if it (or the new clawgate that brought it) turns out to
be wrong, the operator needs the database as the old version left it. The copy is made with
SQLite's online backup API (consistent, WAL included), written to a temporary name and renamed,
so a crash mid-copy never leaves something that looks like a good backup. Only the newest
`KEEP` copies are kept: each is a full database.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import time
from pathlib import Path

from core.private_files import fsync_dir

BACKUP_DIR = "backups"
KEEP = 3
_NAME = re.compile(r"^clawgate-v\d+-\d{8}T\d{6}Z(-\d+)?\.db$")


def backup_before_migration(db: Path, version: int) -> Path:
    """Copy `db` (at schema `version`) into its data dir's backups/; prune to the newest KEEP."""
    folder = db.parent / BACKUP_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = folder / f"clawgate-v{version}-{stamp}.db"
    n = 1
    while dest.exists():
        dest = folder / f"clawgate-v{version}-{stamp}-{n}.db"
        n += 1
    tmp = folder / f".{dest.name}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.close(fd)
    try:
        src = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            dst = sqlite3.connect(tmp)
            try:
                src.backup(dst)
                dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            finally:
                dst.close()
        finally:
            src.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(folder)
    _prune(folder)
    return dest


def _prune(folder: Path) -> None:
    copies = sorted(
        (p for p in folder.iterdir() if _NAME.match(p.name)), key=lambda p: (p.stat().st_mtime_ns, p.name)
    )
    for old in copies[:-KEEP]:
        with contextlib.suppress(FileNotFoundError):
            old.unlink()
