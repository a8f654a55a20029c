"""Private files in the config dir: the master key, tokens, an exclusive writer lock, atomic replace.

The vault's secrets (`proxy.secrets`) and the wallet's keys (`gateway.wallet.keystore`) are
both encrypted under one master key and both rewritten by several possible writers (CLI
invocations, the gateway). They share these primitives so that "mode 0600, written whole
or not at all, one writer at a time" is implemented — and reviewed — once.

Errors are raised as `PrivateFileError` whose message names the file and the fix; callers
re-raise them as their own user-facing error type.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

MASTER_KEY_FILE = "master.key"
KEY_BYTES = 32
MAX_TOKEN_BYTES = 4096


class PrivateFileError(Exception):
    """A user-facing problem with a private file; the message never contains key material."""


def _read_private(fd: int, label: str, path: object, limit: int) -> bytes:
    """Up to `limit` bytes of an opened file that only we may read, else PrivateFileError.

    Checked on the open descriptor (not the path), so what is checked is what is read; `fd`
    is closed either way.
    """
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PrivateFileError(f"{label} is not a regular file")
        if st.st_mode & 0o077:
            raise PrivateFileError(
                f"{label} is accessible by group/others"
                f" (mode {stat.S_IMODE(st.st_mode):04o}); run `chmod 600 {path}`"
            )
        if st.st_uid != os.getuid():
            raise PrivateFileError(f"{label} is owned by another user")
        return os.read(fd, limit)
    finally:
        os.close(fd)


def ensure_dir(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)


@contextlib.contextmanager
def exclusive_lock(lock_path: Path) -> Iterator[None]:
    """Cross-process exclusive lock around a read-modify-write (fcntl; released on close/crash)."""
    ensure_dir(lock_path.parent)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the flock


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to a 0600 temp file beside `path`, fsync, rename over `path`, fsync the dir."""
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def read_master_key(key_path: Path, *, create: bool, what: str = "the stored secrets") -> bytes:
    """Read (or, for writers, create) the 32-byte master key, refusing unsafe permissions."""
    try:
        fd = os.open(key_path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        if not create:
            raise PrivateFileError(
                f"master key {key_path} is missing, so {what} cannot be decrypted"
            ) from None
        return _create_master_key(key_path, what)
    except OSError as e:
        raise PrivateFileError(f"cannot open master key {key_path}: {e.strerror}") from None
    key = _read_private(fd, f"master key {key_path}", key_path, KEY_BYTES + 1)
    if len(key) != KEY_BYTES:
        raise PrivateFileError(f"master key {key_path} is corrupt (expected {KEY_BYTES} bytes)")
    return key


def _create_master_key(key_path: Path, what: str) -> bytes:
    ensure_dir(key_path.parent)
    key = secrets.token_bytes(KEY_BYTES)
    # Write fully under a temp name, then link into place: O_EXCL semantics without a
    # window where another reader could see an empty or half-written key.
    fd, tmp = tempfile.mkstemp(prefix=f".{key_path.name}.", dir=key_path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, key)
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, key_path)
        except FileExistsError:
            return read_master_key(key_path, create=False, what=what)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(key_path.parent)
    return key


def read_or_create_token(path: Path, make: Callable[[], str], pattern: str, what: str) -> str:
    """A private token kept across restarts: read `path` (0600, ours, no link) or create it.

    `make` produces a new token when the file does not exist; one that exists must match
    `pattern` whole, else the error says to delete it (a token is never silently replaced,
    because whoever relies on it — e.g. Telegram's webhook — would start being refused).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        token = make()
        if not re.fullmatch(pattern, token):
            raise ValueError(f"a new {what} does not match {pattern}") from None
        return _create_token(path, token, pattern, what)
    except OSError as e:
        raise PrivateFileError(f"cannot open {what} file {path}: {e.strerror}") from None
    raw = _read_private(fd, f"{what} file {path}", path, MAX_TOKEN_BYTES + 1)
    try:
        token = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        token = ""
    if len(raw) > MAX_TOKEN_BYTES or not re.fullmatch(pattern, token):
        raise PrivateFileError(f"{what} file {path} is corrupt; delete it and a new one is made at start")
    return token


def _create_token(path: Path, token: str, pattern: str, what: str) -> str:
    ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode("ascii") + b"\n")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        try:
            os.link(tmp, path)  # whole or not at all, and never over a token another writer made
        except FileExistsError:
            return read_or_create_token(path, lambda: token, pattern, what)
    finally:
        if fd >= 0:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)
    return token
