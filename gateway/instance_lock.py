"""One gateway per data dir: an exclusive `flock` on `<data dir>/clawgate.lock`.

Two gateways on one data dir would each remove the other's "orphan" containers, take
over the control socket and poll the same bot token, so a message could be answered
twice or by nobody. The lock is a kernel `flock`, not a PID file: it is released the
instant its holder dies (even by `kill -9`), so there is no stale-lock cleanup to get
wrong. The holder's PID is written into the file only so the refusal can name it.

The descriptor is opened close-on-exec: a child (the vault, a `bwrap` sandbox) that
inherited it would keep the data dir locked after the gateway died.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

LOCK_FILE = "clawgate.lock"


class AlreadyRunning(Exception):
    """Another live process holds the data dir; the message names its PID."""


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise AlreadyRunning; never blocks."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"pid {holder}" if holder else "another process"
            raise AlreadyRunning(
                f"another clawgate ({who}) is already running with data dir {self.path.parent}; "
                "stop it first, or give this one its own CLAWGATE_DATA_DIR"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing the only descriptor drops the flock
        self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def holder_pid(data_dir: Path) -> int | None:
    """The PID of the gateway holding `data_dir`, or None when nobody holds it."""
    path = Path(data_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
