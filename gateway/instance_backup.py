"""`clawgate backup create|restore`: one archive holding the database and the config dir.

Why this shape:

* The database is copied with SQLite's online backup API, which yields a consistent snapshot
  while a gateway keeps writing (WAL mode); a plain file copy could catch half a transaction.
* Secrets in the config dir (vault secrets, wallet keys) are already encrypted under
  ``master.key``; they go into the archive as they are. Only the master key itself is sealed
  under a passphrase, with the same Argon2id + AES-256-GCM scheme as wallet backups
  (:mod:`gateway.passphrase_crypto`), so the archive is useless without the passphrase.
* The header is authenticated: it is the GCM associated data of the sealed key and holds the
  SHA-256 of the payload, so any edit of the header or the payload makes restore refuse.

File format (version 1)::

    b"CLAWGATE-BACKUP\\n"                      16 bytes of magic
    uint32, big-endian                       length of the JSON document that follows
    {"header": {...}, "sealed": "<b64>"}     header = format, version, kdf, cipher, nonce,
                                             created_at, clawgate, schema_version,
                                             payload {sha256, bytes}, files
    payload                                  a gzip'd tar: data/clawgate.db and config/...

Restore is all or nothing: the archive is read, unsealed, hash-checked and unpacked into
staging directories beside the targets, and the database passes ``quick_check`` and the schema
check, before anything is replaced. Then the config dir and the database are swapped in by
renames, which are undone if a later one fails. The previous config dir and database are kept
aside (never deleted) and their paths are reported. The data-dir lock
(:mod:`gateway.instance_lock`) is held throughout, so a running gateway refuses the restore and
no gateway can start during it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sqlite3
import struct
import tarfile
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

from core.paths import DATABASE
from core.private_files import MASTER_KEY_FILE, PrivateFileError, fsync_dir, read_master_key
from gateway.instance_lock import AlreadyRunning, DataDirLock
from gateway.passphrase_crypto import (
    CIPHER,
    DEFAULT_KDF,
    KdfParams,
    SealError,
    b64,
    check_passphrase,
    new_kdf_header,
    seal,
    unb64,
    unseal,
)

MAGIC = b"CLAWGATE-BACKUP\n"
FORMAT = "clawgate-backup"
FORMAT_VERSION = 1
MAX_HEADER_BYTES = 1024 * 1024
DB_MEMBER = "data/" + DATABASE
CONFIG_PREFIX = "config/"
_DB_SIDE_FILES = ("", "-wal", "-shm", "-journal")
_CHUNK = 1024 * 1024


class BackupError(Exception):
    """A backup cannot be made or restored; the message says why and never holds a secret."""


@dataclass(frozen=True, slots=True)
class Created:
    path: Path
    schema_version: int
    files: int


@dataclass(slots=True)
class Restored:
    schema_version: int
    files: int
    kept_aside: list[Path] = field(default_factory=list)


def clawgate_version() -> str:
    try:
        return metadata.version("clawgate")
    except metadata.PackageNotFoundError:
        return "unknown"


# -- create -------------------------------------------------------------------------------


def create_backup(
    archive: Path,
    passphrase: str,
    config_dir: Path,
    data_dir: Path,
    *,
    force: bool = False,
    params: KdfParams = DEFAULT_KDF,
) -> Created:
    """Write one archive of the database (online snapshot) and the config dir to ``archive``."""
    try:
        check_passphrase(passphrase)
        params.check()
    except SealError as e:
        raise BackupError(e.message) from None
    archive = Path(archive).absolute()
    if archive.is_dir():
        raise BackupError(f"{archive} is a directory")
    if (archive.exists() or archive.is_symlink()) and not force:
        raise BackupError(f"{archive} already exists (use --force to overwrite it)")
    db = Path(data_dir) / DATABASE
    if not db.is_file():
        raise BackupError(f"no database at {db}: nothing to back up (the first `clawgate run` creates it)")
    if not archive.parent.is_dir():
        raise BackupError(f"directory {archive.parent} does not exist")
    master_key = _read_master_key(Path(config_dir))
    try:
        with tempfile.TemporaryDirectory(prefix=".clawgate-backup-", dir=archive.parent) as tmp:
            work = Path(tmp)  # mkdtemp: mode 0700, so the snapshot is never readable by others
            snapshot = work / DATABASE
            schema = _snapshot(db, snapshot)
            payload = work / "payload.tar.gz"
            files = _write_payload(payload, snapshot, Path(config_dir))
            digest, size = _hash_file(payload)
            kdf, nonce = new_kdf_header(params)
            header: dict[str, Any] = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "kdf": kdf,
                "cipher": CIPHER,
                "nonce": nonce,
                "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "clawgate": clawgate_version(),
                "schema_version": schema,
                "payload": {"sha256": digest, "bytes": size},
                "files": files,
                "master_key": master_key is not None,
            }
            secret = json.dumps({"master_key": b64(master_key) if master_key else None}).encode()
            sealed = seal(passphrase, secret, header)
            document = json.dumps({"header": header, "sealed": b64(sealed)}).encode("utf-8")
            _write_archive(archive, document, payload)
    except OSError as e:
        raise BackupError(f"cannot write {archive}: {e.strerror or e}") from None
    except SealError as e:
        raise BackupError(e.message) from None
    return Created(archive, schema, len(files))


def _read_master_key(config_dir: Path) -> bytes | None:
    path = config_dir / MASTER_KEY_FILE
    if not (path.exists() or path.is_symlink()):
        return None  # nothing was ever encrypted on this install
    try:
        return read_master_key(path, create=False)
    except PrivateFileError as e:
        raise BackupError(str(e)) from None


def _snapshot(db: Path, dest: Path) -> int:
    """Copy ``db`` to ``dest`` with the online backup API; return the snapshot's schema version."""
    try:
        src = sqlite3.connect(db.absolute().as_uri() + "?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise BackupError(f"cannot open database {db}: {e}") from None
    try:
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # consistent even while the gateway writes: retried until a clean pass
            _check_database(dst, dest, db)
            return int(dst.execute("PRAGMA user_version").fetchone()[0])
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise BackupError(f"cannot back up database {db}: {e}") from None
    finally:
        src.close()


def _check_database(conn: sqlite3.Connection, path: Path, shown: Path) -> None:
    from gateway.store import MIGRATIONS  # late: keeps `clawgate backup --help` light

    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check").fetchall()]
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.DatabaseError as e:
        raise BackupError(f"database {shown} is corrupt or not a database ({e})") from None
    if rows != ["ok"]:
        raise BackupError(f"database {shown} is corrupt (quick_check: {'; '.join(rows[:3])[:300]})")
    if version > len(MIGRATIONS):
        raise BackupError(
            f"database {shown} has schema v{version}, newer than this clawgate knows"
            f" (v{len(MIGRATIONS)}); upgrade clawgate first"
        )


def _config_files(config_dir: Path) -> Iterator[tuple[Path, str]]:
    """Regular files of the config dir (not the master key: it travels sealed), sorted."""
    if not config_dir.is_dir():
        return
    for path in sorted(config_dir.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue  # sockets, links: nothing a restore could put back faithfully
        rel = path.relative_to(config_dir).as_posix()
        if rel == MASTER_KEY_FILE:
            continue
        yield path, rel


def _write_payload(payload: Path, snapshot: Path, config_dir: Path) -> list[str]:
    members: list[str] = []
    with tarfile.open(payload, "w:gz", compresslevel=6, format=tarfile.PAX_FORMAT) as tar:
        tar.add(snapshot, arcname=DB_MEMBER, recursive=False, filter=_normalize)
        members.append(DB_MEMBER)
        for path, rel in _config_files(config_dir):
            tar.add(path, arcname=CONFIG_PREFIX + rel, recursive=False, filter=_normalize)
            members.append(CONFIG_PREFIX + rel)
    return members


def _normalize(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o600
    return info


def _hash_file(path: Path) -> tuple[str, int]:
    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def _write_archive(archive: Path, document: bytes, payload: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{archive.name}.", dir=archive.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(MAGIC + struct.pack(">I", len(document)) + document)
            with open(payload, "rb") as src:
                shutil.copyfileobj(src, out, _CHUNK)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, archive)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(archive.parent)


# -- restore ------------------------------------------------------------------------------


def read_header(archive: Path) -> dict[str, Any]:
    """The archive's header (unauthenticated until the passphrase opens it)."""
    with _open_archive(Path(archive)) as (_, header, _sealed, _offset):
        return header


@contextlib.contextmanager
def _open_archive(archive: Path) -> Iterator[tuple[io.BufferedReader, dict[str, Any], bytes, int]]:
    try:
        f = open(archive, "rb")  # noqa: SIM115 - handed to the caller by the context manager
    except FileNotFoundError:
        raise BackupError(f"{archive} does not exist") from None
    except OSError as e:
        raise BackupError(f"cannot read {archive}: {e.strerror}") from None
    with f:
        start = f.read(len(MAGIC) + 4)
        if len(start) < len(MAGIC) + 4 or not start.startswith(MAGIC):
            raise BackupError(f"{archive} is not a clawgate backup")
        (length,) = struct.unpack(">I", start[len(MAGIC) :])
        if length > MAX_HEADER_BYTES:
            raise BackupError(f"{archive}: header too large; not a clawgate backup or damaged")
        raw = f.read(length)
        try:
            doc = json.loads(raw)
            header, sealed = doc["header"], doc["sealed"]
            if not isinstance(header, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise BackupError(f"{archive}: damaged header") from None
        if header.get("format") != FORMAT:
            raise BackupError(f"{archive} is not a clawgate backup (format is not {FORMAT!r})")
        if header.get("version") != FORMAT_VERSION:
            raise BackupError(
                f"{archive} is backup format version {header.get('version')!r}; this clawgate reads"
                f" version {FORMAT_VERSION} (upgrade clawgate to restore it)"
            )
        payload = header.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("sha256"), str):
            raise BackupError(f"{archive}: damaged header (no payload digest)")
        try:
            sealed_bytes = unb64(sealed, "sealed key")
        except SealError as e:
            raise BackupError(f"{archive}: {e.message}") from None
        yield f, header, sealed_bytes, len(MAGIC) + 4 + length


def target_problems(config_dir: Path, data_dir: Path) -> list[str]:
    """What a restore would replace: an existing database or a non-empty config dir."""
    found = []
    if Path(config_dir).is_dir() and any(Path(config_dir).iterdir()):
        found.append(f"config dir {config_dir} is not empty")
    if any((Path(data_dir) / (DATABASE + s)).exists() for s in _DB_SIDE_FILES):
        found.append(f"database {Path(data_dir) / DATABASE} exists")
    return found


def restore_backup(
    archive: Path, passphrase: str, config_dir: Path, data_dir: Path, *, force: bool = False
) -> Restored:
    """Verify everything in ``archive``, then put its config dir and database in place.

    Holds the data-dir lock for the whole restore: a running gateway makes this refuse (naming
    its PID), and a gateway started meanwhile refuses to start.
    """
    config_dir, data_dir = Path(config_dir).absolute(), Path(data_dir).absolute()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    lock = DataDirLock(data_dir)
    try:
        lock.acquire()
    except AlreadyRunning as e:
        raise BackupError(f"refusing to restore: {e}") from None
    try:
        problems = target_problems(config_dir, data_dir)
        if problems and not force:
            raise BackupError(
                f"{'; '.join(problems)} (use --force to replace them; the current ones are kept aside)"
            )
        return _restore_locked(Path(archive), passphrase, config_dir, data_dir)
    finally:
        lock.release()


def _restore_locked(archive: Path, passphrase: str, config_dir: Path, data_dir: Path) -> Restored:
    config_dir.parent.mkdir(parents=True, exist_ok=True)
    with (
        _open_archive(archive) as (f, header, sealed, offset),
        tempfile.TemporaryDirectory(prefix=".clawgate-restore-", dir=data_dir) as data_tmp,
        tempfile.TemporaryDirectory(prefix=f".{config_dir.name}.restore-", dir=config_dir.parent) as cfg_tmp,
    ):
        try:
            secret = json.loads(unseal(passphrase, sealed, header))
            master_key = unb64(secret["master_key"], "master key") if secret["master_key"] else None
        except SealError as e:
            raise BackupError(e.message) from None
        except (ValueError, KeyError, TypeError):
            raise BackupError(f"{archive}: the sealed part is not a key record") from None
        if master_key is not None and len(master_key) != 32:
            raise BackupError(f"{archive}: the sealed master key has the wrong length")
        payload = Path(data_tmp) / "payload.tar.gz"
        _copy_verified(f, offset, payload, header["payload"], archive)
        staged_config = Path(cfg_tmp) / "config"
        staged_config.mkdir(mode=0o700)
        staged_db = Path(data_tmp) / DATABASE
        files = _unpack(payload, staged_config, staged_db, archive)
        if master_key is not None:
            key_path = staged_config / MASTER_KEY_FILE
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(master_key)
                out.flush()
                os.fsync(out.fileno())
        conn = sqlite3.connect(staged_db.absolute().as_uri() + "?mode=ro", uri=True)
        try:
            _check_database(conn, staged_db, Path(f"{archive}:{DB_MEMBER}"))
            schema = int(conn.execute("PRAGMA user_version").fetchone()[0])
        finally:
            conn.close()
        try:
            kept = _swap_in(staged_config, staged_db, config_dir, data_dir)
        except OSError as e:
            raise BackupError(f"cannot put the restored files in place ({e}); nothing was changed") from None
        return Restored(schema, files, kept)


def _copy_verified(
    f: io.BufferedReader, offset: int, dest: Path, expected: dict[str, Any], archive: Path
) -> None:
    """Copy the payload to a private file, refusing it unless its SHA-256 matches the header's."""
    h, size = hashlib.sha256(), 0
    f.seek(offset)
    with open(dest, "wb") as out:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
            size += len(chunk)
            out.write(chunk)
    if h.hexdigest() != expected.get("sha256") or size != expected.get("bytes"):
        raise BackupError(
            f"{archive}: the payload does not match its authenticated digest (tampered or damaged)"
        )


def _unpack(payload: Path, config_root: Path, staged_db: Path, archive: Path) -> int:
    """Extract the verified payload; only regular files at safe relative paths are accepted."""
    count, have_db = 0, False
    try:
        with tarfile.open(payload, "r:gz") as tar:
            for member in tar:
                name = member.name
                if not member.isreg():
                    raise BackupError(f"{archive}: unexpected entry {name!r} (only regular files)")
                if name == DB_MEMBER:
                    target, have_db = staged_db, True
                elif name.startswith(CONFIG_PREFIX):
                    rel = PurePosixPath(name[len(CONFIG_PREFIX) :])
                    if rel.is_absolute() or not rel.parts or ".." in rel.parts or str(rel) == MASTER_KEY_FILE:
                        raise BackupError(f"{archive}: refusing entry {name!r}")
                    target = config_root.joinpath(*rel.parts)
                else:
                    raise BackupError(f"{archive}: unexpected entry {name!r}")
                if target.exists():
                    raise BackupError(f"{archive}: duplicate entry {name!r}")
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                source = tar.extractfile(member)
                assert source is not None  # a regular file always has contents
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
                    out.flush()
                    os.fsync(out.fileno())
                count += 1
    except (tarfile.TarError, EOFError, OSError) as e:
        raise BackupError(f"{archive}: the payload cannot be unpacked ({e})") from None
    if not have_db:
        raise BackupError(f"{archive}: the archive holds no database")
    return count


def _swap_in(staged_config: Path, staged_db: Path, config_dir: Path, data_dir: Path) -> list[Path]:
    """Rename the staged files into place; on any failure undo every rename already made."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside_root = data_dir / "backups"
    done: list[tuple[Path, Path]] = []  # (from, to) renames made so far, undone in reverse
    kept: list[Path] = []

    def move(src: Path, dst: Path) -> None:
        os.rename(src, dst)
        done.append((src, dst))

    try:
        if config_dir.exists() or config_dir.is_symlink():
            aside = config_dir.with_name(f"{config_dir.name}.before-restore-{stamp}")
            move(config_dir, aside)
            kept.append(aside)
        move(staged_config, config_dir)
        for suffix in _DB_SIDE_FILES:
            current = data_dir / (DATABASE + suffix)
            if current.exists():
                aside_root.mkdir(mode=0o700, exist_ok=True)
                aside = aside_root / f"clawgate-before-restore-{stamp}.db{suffix}"
                move(current, aside)
                kept.append(aside)
        move(staged_db, data_dir / DATABASE)
        fsync_dir(config_dir.parent)
        fsync_dir(data_dir)
    except BaseException:
        for src, dst in reversed(done):
            with contextlib.suppress(OSError):
                os.rename(dst, src)
        raise
    empty_aside = [p for p in kept if p.is_dir() and not any(p.iterdir())]
    for p in empty_aside:  # an empty config dir that was there before: nothing worth keeping
        p.rmdir()
    return [p for p in kept if p not in empty_aside]
