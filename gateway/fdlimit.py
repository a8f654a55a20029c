"""The gateway's own file-descriptor budget: as large as the OS allows, and named when it runs out.

Every sandbox costs the gateway descriptors (IPC and vault sockets, Docker API connections),
and the per-group caps in `gateway.ipc_limits` are what should decide how many a group may
hold, not a low default soft limit (often 1024). When the process is out of descriptors
anyway, connecting to the vault fails too; that must be reported as what it is, not as "the
vault is not running".
"""

from __future__ import annotations

import errno
import logging
import os
import resource
from pathlib import Path

log = logging.getLogger(__name__)

_EXHAUSTED = (errno.EMFILE, errno.ENFILE)
_FALLBACK_CEILING = 1 << 20  # used when the hard limit is "unlimited" (the kernel's default nr_open)


def raise_soft_limit() -> tuple[int, int]:
    """Lift RLIMIT_NOFILE's soft limit to the hard limit; returns the (soft, hard) now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = _FALLBACK_CEILING
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (OSError, ValueError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
    return soft, hard


def open_count() -> int | None:
    """Descriptors open in this process, or None if that cannot be read (e.g. none left to read it)."""
    try:
        return len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself used
    except OSError:
        return None


def exhausted() -> bool:
    """True if this process (or the whole system) cannot open one more descriptor right now."""
    try:
        fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _EXHAUSTED:
            return True
        raise
    os.close(fd)
    return False


def exhausted_message(holders: str = "") -> str:
    """What to tell the owner; `holders` names who holds descriptors (e.g. IPC connections per group)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    count = open_count()
    held = f"{count} open" if count is not None else "all in use"
    where = f"; {holders}" if holders else ""
    return (
        f"the gateway is out of file descriptors ({held}, limit {soft}{where}). Raise the limit "
        "(`ulimit -n`, systemd LimitNOFILE=) or lower [ipc] max_connections / [sandbox] max_containers"
    )
