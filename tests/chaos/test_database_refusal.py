"""A corrupt or newer database is refused at start-up with one clear line — never "ready"
followed by silence, never a traceback, never an orphan vault; `doctor` only looks.

The cases damage a real database the way disks and downgrades do, then run the real
`clawgate run` / `clawgate doctor` and read what they print.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from pathlib import Path

import pytest

from gateway.store import Store
from tests.e2e.test_console import write_config
from tests.e2e.test_crash_recovery import CLAWGATE, start


async def make_database(path: Path) -> None:
    store = await Store.open(path)
    await store.close()


def corrupt_pages(path: Path) -> None:
    """Overwrite every page after the header page: the file still opens, its b-trees do not."""
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    size = path.stat().st_size
    with open(path, "r+b") as f:
        for offset in range(page_size, size, page_size):
            f.seek(offset)
            f.write(b"\xa5" * page_size)


def newer_schema(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 999")
    with sqlite3.connect(path) as conn:  # into the main file, so the file alone shows any later write
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


def not_a_database(path: Path) -> None:
    path.write_bytes(b"this is not SQLite at all " * 400)


@pytest.mark.parametrize(
    ("damage", "expected"),
    [(corrupt_pages, "corrupt"), (newer_schema, "newer clawgate"), (not_a_database, "not a database")],
)
async def test_a_damaged_database_is_refused_with_one_clear_line(
    damage, expected, dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, sandbox_image, idle_s=600)
    db = data_dir / "clawgate.db"
    await make_database(db)
    damage(db)
    before = db.read_bytes()

    proc = await start(dict(os.environ))
    _, err = await asyncio.wait_for(proc.communicate(b"hello\n"), 60)
    text = err.decode()
    assert proc.returncode == 1, text
    assert expected in text, text
    assert "restore" in text or "upgrade" in text, text
    assert "Traceback" not in text and "ready" not in text, text
    assert db.read_bytes() == before, "a refused start must not touch the database"
    assert not (data_dir / "vault" / "vault.pid").exists(), "the vault was started for a refused run"


async def test_doctor_never_creates_a_database(dirs) -> None:
    _, data_dir = dirs
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        "doctor",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert "no database yet" in out.decode(), out.decode()
    assert not (data_dir / "clawgate.db").exists()


async def test_doctor_reports_a_corrupt_database(dirs) -> None:
    _, data_dir = dirs
    db = data_dir / "clawgate.db"
    await make_database(db)
    corrupt_pages(db)
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        "doctor",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1
    assert "corrupt" in out.decode(), out.decode()
