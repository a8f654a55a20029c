"""Which uid:gid a group's sandbox runs as: its own, so that no two groups share a kernel identity.

Why per group. Some kernel state is keyed by uid and crosses every namespace a sandbox has:
the per-uid user keyring (one group adds a key, another reads it), RLIMIT_NPROC (one group's
processes count against another's), and ownership of files in a read-write mount granted to
two groups. Seccomp already denies the keyring calls (`groups.sandbox.seccomp`); separate uids
make "nothing is shared" true without relying on that one filter.

How. When the gateway runs as root, group `n` (numbered in the order groups first start, never
reused) runs as uid = gid = `[sandbox] run_as_uid` + n, n >= 1; the numbering lives in
`<data dir>/sandbox-uids.json` (0600, replaced atomically under a lock), so it is stable across
restarts and collision-free by construction. `run_as_uid` itself is no group's uid any more: it
was the one uid all groups shared before, and files it owns in a group's folder are handed to
the group's own uid when that folder is next prepared (`groups.folders.prepare`). Reserve
`run_as_uid` .. `run_as_uid + MAX_GROUPS` on the host for this (no login user in that range).

As a normal user, every sandbox maps the gateway's own uid inside its own user namespace (bwrap
`--unshare-user`; rootless Docker likewise); the kernel keeps a separate user keyring per user
namespace, and the namespace is all a sandbox can address, so the uid is the gateway's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from core.private_files import atomic_write, exclusive_lock

UIDS_FILE = "sandbox-uids.json"
LOCK_FILE = ".sandbox-uids.lock"
MAX_GROUPS = 65_535
MAX_UID = 2**32 - 2  # (uid_t)-1 means "no change" to chown and setresuid


class UidError(Exception):
    """The uid map is unreadable or exhausted; the message says which file and what to do."""


def _read(path: Path) -> dict[str, int]:
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise UidError(f"cannot read the sandbox uid map {path}: {exc}; fix or restore it") from None
    groups = raw.get("groups") if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not all(
        isinstance(k, str) and type(v) is int and 1 <= v <= MAX_GROUPS for k, v in groups.items()
    ):
        raise UidError(f"the sandbox uid map {path} is malformed; fix or restore it")
    if len(set(groups.values())) != len(groups):
        raise UidError(f"the sandbox uid map {path} gives two groups one uid; fix or restore it")
    return groups


def group_offset(data_dir: Path, folder: str) -> int:
    """The group's stable number n >= 1, allocated on first use (max + 1: never a freed one)."""
    path = data_dir / UIDS_FILE
    with exclusive_lock(data_dir / LOCK_FILE):
        groups = _read(path)
        if folder in groups:
            return groups[folder]
        offset = max(groups.values(), default=0) + 1
        if offset > MAX_GROUPS:
            raise UidError(f"all {MAX_GROUPS} sandbox uids of {path} are allocated")
        groups[folder] = offset
        atomic_write(path, json.dumps({"version": 1, "groups": groups}, indent=1, sort_keys=True).encode())
        return offset


def group_identity(data_dir: Path, folder: str, run_as_uid: int) -> tuple[int, int]:
    """The uid:gid of `folder`'s sandbox (see the module doc)."""
    if os.getuid() != 0:
        return os.getuid(), os.getgid()
    uid = run_as_uid + group_offset(data_dir, folder)
    if uid > MAX_UID:
        raise UidError(f"[sandbox] run_as_uid = {run_as_uid} leaves no room for per-group uids; lower it")
    return uid, uid
