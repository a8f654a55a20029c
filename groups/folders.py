"""Group folder names and the host directories behind each group.

A folder name becomes a path component and a Docker label, so it is validated
strictly: lowercase letters, digits, `-` and `_`, 1–48 characters, not reserved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from groups import groupfs

_FOLDER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
RESERVED = frozenset({"global", "run", "logs", "vault"})
INBOX_IN_SANDBOX = "/workspace/inbox"  # where a group's inbox is mounted, read-only


def validate_folder(name: str) -> str:
    if not _FOLDER.match(name) or name in RESERVED:
        raise ValueError(
            f"invalid group folder {name!r}: use 1-48 lowercase letters, digits, '-' or '_' "
            f"(not {', '.join(sorted(RESERVED))})"
        )
    return name


@dataclass(frozen=True, slots=True)
class GroupDirs:
    """Host paths for one group: its workspace, the shared global memory, its socket dir, and
    its inbox (attachments from the chat: host-owned, mounted read-only, so the agent cannot
    plant links where the channel writes)."""

    group: Path
    global_: Path
    run: Path
    inbox: Path


def group_dirs(data_dir: Path, folder: str) -> GroupDirs:
    validate_folder(folder)
    return GroupDirs(
        group=data_dir / "groups" / folder,
        global_=data_dir / "global",
        run=data_dir / "run" / folder,
        inbox=data_dir / "inbox" / folder,
    )


def prepare(dirs: GroupDirs, owner: tuple[int, int] | None, *, is_main: bool = False) -> None:
    """Create the directories; when the gateway runs as root, hand the workspace to the group's uid.

    The workspace and global folder are sandbox-writable, so they are set up through
    `groups.groupfs` (fd-relative, never following a planted link); the run and inbox dirs
    are host-owned and read-only in the sandbox. The global folder belongs to the main
    group's uid (main writes it; every other group gets it read-only). When a tree changes
    owner (each group has its own uid, see `groups.uids`), what its previous sandbox owner
    left inside follows it (`groupfs.hand_over`).
    """
    groupfs.ensure_root(dirs.group.parent, dirs.group.name, mode=0o700)
    groupfs.ensure_root(dirs.global_.parent, dirs.global_.name, mode=0o755)
    if owner is not None:
        groupfs.hand_over(dirs.group, owner)
        if is_main:
            groupfs.hand_over(dirs.global_, owner)
    groupfs.ensure_root(dirs.inbox.parent, dirs.inbox.name, mode=0o755)
    groupfs.ensure_root(dirs.run.parent, dirs.run.name, mode=0o755)
