"""Group folder names and the host directories behind each group.

A folder name becomes a path component and a Docker label, so it is validated
strictly: lowercase letters, digits, `-` and `_`, 1–48 characters, not reserved.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

_FOLDER = re.compile(r"^[a-z0-9][a-z0-9_-]{0,47}$")
RESERVED = frozenset({"global", "run", "logs", "vault"})


def validate_folder(name: str) -> str:
    if not _FOLDER.match(name) or name in RESERVED:
        raise ValueError(
            f"invalid group folder {name!r}: use 1-48 lowercase letters, digits, '-' or '_' "
            f"(not {', '.join(sorted(RESERVED))})"
        )
    return name


@dataclass(frozen=True, slots=True)
class GroupDirs:
    """Host paths for one group: its workspace, the shared global memory, and its socket dir."""

    group: Path
    global_: Path
    run: Path


def group_dirs(data_dir: Path, folder: str) -> GroupDirs:
    validate_folder(folder)
    return GroupDirs(
        group=data_dir / "groups" / folder,
        global_=data_dir / "global",
        run=data_dir / "run" / folder,
    )


def prepare(dirs: GroupDirs, owner: tuple[int, int] | None) -> None:
    """Create the directories; when the gateway runs as root, hand the workspace to the sandbox uid."""
    for path in (dirs.group, dirs.global_):
        path.mkdir(parents=True, exist_ok=True)
        if owner is not None:
            os.chown(path, *owner)
        path.chmod(0o755 if path == dirs.global_ else 0o700)
    dirs.run.mkdir(parents=True, exist_ok=True)
    dirs.run.chmod(0o755)
