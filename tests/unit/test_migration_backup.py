"""Store.open copies an old-schema database to backups/ before migrating it (real SQLite files)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from gateway import migration_backup
from gateway.store import MIGRATIONS, Store


def old_database(path: Path, version: int) -> None:
    """A database as clawgate at schema `version` left it, with one message in it."""
    db = sqlite3.connect(path)
    for number, script in enumerate(MIGRATIONS[:version], start=1):
        db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
    db.execute(
        "INSERT INTO messages (chat_id, external_id, sender_id, sender_name, text, timestamp, status)"
        " VALUES ('c', 'e1', 's', 'Ann', 'kept before the upgrade', 1.0, 'done')"
    )
    db.commit()
    db.close()


async def test_an_old_database_is_copied_before_it_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "clawgate.db"
    old_database(path, 3)
    store = await Store.open(path)
    try:
        assert await store.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()
    [copy] = (tmp_path / "backups").iterdir()
    assert copy.name.startswith("clawgate-v3-") and copy.name.endswith(".db")
    assert copy.stat().st_mode & 0o777 == 0o600
    db = sqlite3.connect(copy)
    try:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
        assert db.execute("SELECT text FROM messages").fetchall() == [("kept before the upgrade",)]
        # the copy is the old schema, untouched by migration 4
        assert not db.execute("SELECT name FROM sqlite_master WHERE name = 'wallet_requests'").fetchall()
    finally:
        db.close()


async def test_new_and_current_databases_are_not_copied(tmp_path: Path) -> None:
    path = tmp_path / "clawgate.db"
    await (await Store.open(path)).close()  # created at v0 and migrated: nothing to keep
    store = await Store.open(path)
    await store.close()
    assert not (tmp_path / "backups").exists()


async def test_only_the_newest_copies_are_kept(tmp_path: Path) -> None:
    folder = tmp_path / "backups"
    folder.mkdir()
    for n in range(6):
        old = folder / f"clawgate-v1-2020010{n}T000000Z.db"
        old.write_bytes(b"old")
        os.utime(old, (1_600_000_000 + n, 1_600_000_000 + n))
    unrelated = folder / "clawgate-before-restore-x.db"
    unrelated.write_bytes(b"kept: not a migration copy")
    path = tmp_path / "clawgate.db"
    old_database(path, 2)
    store = await Store.open(path)
    await store.close()
    names = sorted(p.name for p in folder.iterdir())
    migration_copies = [n for n in names if n.startswith("clawgate-v")]
    assert len(migration_copies) == migration_backup.KEEP
    assert any(n.startswith("clawgate-v2-") for n in migration_copies)
    assert "clawgate-v1-20200105T000000Z.db" in names and "clawgate-v1-20200100T000000Z.db" not in names
    assert unrelated.name in names


async def test_a_failed_copy_refuses_to_migrate(tmp_path: Path) -> None:
    path = tmp_path / "clawgate.db"
    old_database(path, 3)
    (tmp_path / "backups").write_text("a file where the folder should be")
    try:
        await Store.open(path)
    except Exception as exc:  # noqa: BLE001 - asserting the type below
        assert type(exc).__name__ == "StoreUnusable" and "backup taken first failed" in str(exc)
    else:
        raise AssertionError("migrated without a backup")
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == 3  # untouched
    db.close()
