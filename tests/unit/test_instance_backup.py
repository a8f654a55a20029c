"""gateway.instance_backup on real SQLite files and real directories (no gateway needed).

The end-to-end cases against a running `clawgate run` are in tests/chaos/test_backup_restore.py;
here are the archive-format attacks that need a crafted file: header edits, a sealed archive
whose payload tries to escape the config dir, and a failure half-way through the swap.
"""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import tarfile
from pathlib import Path

import pytest

from core.private_files import read_master_key
from gateway import instance_backup as ib
from gateway.instance_lock import DataDirLock
from gateway.passphrase_crypto import KdfParams, b64, new_kdf_header, seal

FAST = KdfParams(memory_kib=8192, iterations=1, lanes=1)
PASS = "a long enough passphrase"


def make_instance(root: Path) -> tuple[Path, Path]:
    config_dir, data_dir = root / "config", root / "data"
    (config_dir / "sub").mkdir(parents=True)
    data_dir.mkdir()
    (config_dir / "config.toml").write_text('assistant_name = "Andy"\n')
    (config_dir / "sub" / "note.json").write_text("{}")
    read_master_key(config_dir / "master.key", create=True)
    db = sqlite3.connect(data_dir / "clawgate.db")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE messages (id INTEGER PRIMARY KEY, text TEXT)")
    db.executemany("INSERT INTO messages (text) VALUES (?)", [(f"m{n}",) for n in range(50)])
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    return config_dir, data_dir


def snapshot(*roots: Path) -> dict[str, bytes]:
    out = {}
    for root in roots:
        if root.exists():
            for p in sorted(root.rglob("*")):
                if p.is_file() and p.name != "clawgate.lock":
                    out[str(p)] = p.read_bytes()
    return out


def test_round_trip_while_a_writer_holds_the_database_open(tmp_path: Path) -> None:
    config_dir, data_dir = make_instance(tmp_path / "src")
    writer = sqlite3.connect(data_dir / "clawgate.db")
    writer.execute("INSERT INTO messages (text) VALUES ('uncommitted')")  # open write transaction
    archive = tmp_path / "a.backup"
    made = ib.create_backup(archive, PASS, config_dir, data_dir, params=FAST)
    writer.rollback()
    writer.close()
    assert made.schema_version == 1 and archive.stat().st_mode & 0o777 == 0o600
    dst_config, dst_data = tmp_path / "dst" / "config", tmp_path / "dst" / "data"
    done = ib.restore_backup(archive, PASS, dst_config, dst_data)
    assert done.kept_aside == [] and done.files == 3
    db = sqlite3.connect(dst_data / "clawgate.db")
    texts = [r[0] for r in db.execute("SELECT text FROM messages ORDER BY id")]
    db.close()
    assert texts == [f"m{n}" for n in range(50)]  # committed rows only
    for rel in ("config.toml", "sub/note.json", "master.key"):
        assert (dst_config / rel).read_bytes() == (config_dir / rel).read_bytes()
    assert (dst_config / "master.key").stat().st_mode & 0o777 == 0o600


def test_the_master_key_is_not_in_the_archive_in_clear(tmp_path: Path) -> None:
    config_dir, data_dir = make_instance(tmp_path)
    archive = tmp_path / "a.backup"
    ib.create_backup(archive, PASS, config_dir, data_dir, params=FAST)
    raw = archive.read_bytes()
    key = (config_dir / "master.key").read_bytes()
    assert key not in raw and b64(key).encode() not in raw
    with tarfile.open(fileobj=io.BytesIO(raw[raw.index(b"\x1f\x8b") :])) as tar:
        assert "config/master.key" not in tar.getnames()


def _edit_header(archive: Path, change) -> None:  # type: ignore[no-untyped-def]
    raw = archive.read_bytes()
    (length,) = struct.unpack(">I", raw[16:20])
    doc = json.loads(raw[20 : 20 + length])
    change(doc["header"])
    new = json.dumps(doc).encode()
    archive.write_bytes(raw[:16] + struct.pack(">I", len(new)) + new + raw[20 + length :])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda h: h.update(created_at="2000-01-01T00:00:00+00:00"), "wrong passphrase"),
        (lambda h: h.update(files=["data/clawgate.db"]), "wrong passphrase"),
        (lambda h: h["payload"].update(sha256="0" * 64), "wrong passphrase"),
        (lambda h: h.update(version=2), "version 2"),
        (lambda h: h["kdf"].update(memory_kib=4 * 1024 * 1024), "memory"),
    ],
)
def test_an_edited_header_is_refused_and_nothing_is_written(tmp_path: Path, change, message: str) -> None:  # type: ignore[no-untyped-def]
    config_dir, data_dir = make_instance(tmp_path / "src")
    archive = tmp_path / "a.backup"
    ib.create_backup(archive, PASS, config_dir, data_dir, params=FAST)
    _edit_header(archive, change)
    dst = tmp_path / "dst"
    with pytest.raises(ib.BackupError, match=message):
        ib.restore_backup(archive, PASS, dst / "config", dst / "data")
    assert snapshot(dst) == {} and not (dst / "config").exists()


def test_a_failure_during_the_swap_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir, data_dir = make_instance(tmp_path / "src")
    archive = tmp_path / "a.backup"
    ib.create_backup(archive, PASS, config_dir, data_dir, params=FAST)
    other_config, other_data = make_instance(tmp_path / "other")
    (other_config / "config.toml").write_text("different\n")
    before = snapshot(other_config, other_data)
    real_rename = os.rename
    failed: list[str] = []

    def rename(src: str | Path, dst: str | Path) -> None:
        staged = ".clawgate-restore-" in str(src)
        if staged and Path(dst) == other_data / "clawgate.db" and not failed:  # the last step
            failed.append(str(src))
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(ib.os, "rename", rename)
    with pytest.raises(ib.BackupError, match="nothing was changed"):
        ib.restore_backup(archive, PASS, other_config, other_data, force=True)
    assert failed and snapshot(other_config, other_data) == before
    assert sorted(p.name for p in other_config.parent.iterdir()) == ["config", "data"]


def test_existing_targets_need_force_and_are_kept_aside(tmp_path: Path) -> None:
    config_dir, data_dir = make_instance(tmp_path / "src")
    archive = tmp_path / "a.backup"
    ib.create_backup(archive, PASS, config_dir, data_dir, params=FAST)
    other_config, other_data = make_instance(tmp_path / "other")
    old_toml = b"old\n"
    (other_config / "config.toml").write_bytes(old_toml)
    with pytest.raises(ib.BackupError, match="not empty"):
        ib.restore_backup(archive, PASS, other_config, other_data)
    assert (other_config / "config.toml").read_bytes() == old_toml
    done = ib.restore_backup(archive, PASS, other_config, other_data, force=True)
    kept_config = next(p for p in done.kept_aside if p.is_dir())
    assert (kept_config / "config.toml").read_bytes() == old_toml
    assert (other_config / "config.toml").read_bytes() == (config_dir / "config.toml").read_bytes()


def _sealed_archive(path: Path, members: dict[str, bytes]) -> None:
    """An archive made with the right passphrase but a hostile payload (what a thief could not make,
    but a bug or an old version might): restore must still refuse it whole."""
    import hashlib

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    payload = buf.getvalue()
    kdf, nonce = new_kdf_header(FAST)
    header = {
        "format": ib.FORMAT,
        "version": ib.FORMAT_VERSION,
        "kdf": kdf,
        "cipher": "aes-256-gcm",
        "nonce": nonce,
        "payload": {"sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)},
    }
    sealed = seal(PASS, json.dumps({"master_key": None}).encode(), header)
    doc = json.dumps({"header": header, "sealed": b64(sealed)}).encode()
    path.write_bytes(ib.MAGIC + struct.pack(">I", len(doc)) + doc + payload)


def _db_bytes(tmp_path: Path) -> bytes:
    db = sqlite3.connect(tmp_path / "x.db")
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    return (tmp_path / "x.db").read_bytes()


@pytest.mark.parametrize(
    "evil",
    ["config/../escaped", "config//etc/passwd", "elsewhere/file", "config/master.key"],
)
def test_a_payload_entry_outside_the_config_dir_is_refused(tmp_path: Path, evil: str) -> None:
    archive = tmp_path / "evil.backup"
    _sealed_archive(archive, {"data/clawgate.db": _db_bytes(tmp_path), evil: b"pwned"})
    dst = tmp_path / "dst"
    with pytest.raises(ib.BackupError, match="entry"):
        ib.restore_backup(archive, PASS, dst / "config", dst / "data")
    assert not (tmp_path / "escaped").exists() and not (dst / "config").exists()


def test_a_corrupt_database_in_the_archive_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "corrupt.backup"
    raw = bytearray(_db_bytes(tmp_path))
    raw[100:4096] = b"\xff" * (4096 - 100)
    _sealed_archive(archive, {"data/clawgate.db": bytes(raw)})
    dst = tmp_path / "dst"
    with pytest.raises(ib.BackupError, match="corrupt"):
        ib.restore_backup(archive, PASS, dst / "config", dst / "data")
    assert snapshot(dst) == {} and not (dst / "config").exists()


def test_restore_refuses_while_the_data_dir_is_locked_naming_the_pid(tmp_path: Path) -> None:
    config_dir, data_dir = make_instance(tmp_path / "src")
    archive = tmp_path / "a.backup"
    ib.create_backup(archive, PASS, config_dir, data_dir, params=FAST)
    lock = DataDirLock(data_dir)
    lock.acquire()
    try:
        with pytest.raises(ib.BackupError, match=f"pid {os.getpid()}"):
            ib.restore_backup(archive, PASS, config_dir, data_dir, force=True)
    finally:
        lock.release()


def test_the_archive_holds_the_database_the_gateway_uses() -> None:
    from core.paths import DATABASE

    assert ib.DATABASE == DATABASE
