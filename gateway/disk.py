"""Disk quotas for group folders and a free-space floor for the data dir (invariant 12).

Why measured rather than enforced by the kernel: a group folder is a bind mount of a directory
on the data dir's filesystem. Docker's `--storage-opt size` limits a container's own layer, not
bind mounts; project quotas and per-group loop filesystems need root and filesystem support the
gateway cannot assume. So usage is measured with `groups.groupfs.usage` (an lstat walk counting
allocated blocks, never following links, bounded in entries and depth) before every turn and
every `[sandbox] disk_check_s` while the group's sandbox is alive.

A group over `group_quota_mb` (its folder + its inbox, + the global folder for main) or
`group_max_files` has its turns refused with a message in its own chat; a live sandbox that
crosses the line is stopped; the main chat is told once, until the group is back under. When
the data dir's free space falls below `min_free_mb`, every sandbox is stopped at its next check
and no turn starts, so the database keeps its room. How far a fast writer can overshoot is
bounded by its write rate times the check interval; `min_free_mb` is the margin for that.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.config import SandboxConfig
from core.models import Group
from groups import groupfs
from groups.folders import group_dirs

log = logging.getLogger(__name__)

MB = 1024 * 1024
_REMEDY = "delete files from the group's folder (or ask the owner to raise [sandbox] group_quota_mb)."


def _mb(value: int) -> str:
    return f"{value / MB:.0f} MB" if value >= 10 * MB else f"{value / MB:.1f} MB"


class DiskGuard:
    def __init__(
        self, config: SandboxConfig, data_dir: Path, notify_main: Callable[[str], Awaitable[None]]
    ) -> None:
        self._quota = config.group_quota_mb * MB
        self._max_files = config.group_max_files
        self._min_free = config.min_free_mb * MB
        self.interval = config.disk_check_s
        self._data_dir = data_dir
        self._notify_main = notify_main
        self._over: dict[str, str] = {}  # folder -> why it is refused; the main chat was told
        self._low_space = False  # below the floor; the main chat was told
        self.tripped: dict[str, str] = {}  # folder -> why its running sandbox was stopped

    def free_bytes(self) -> int:
        st = os.statvfs(self._data_dir)
        return st.f_bavail * st.f_frsize

    async def usage(self, group: Group) -> tuple[int, str | None]:
        """Bytes the group occupies and, if it is over a limit, which one (in words)."""
        dirs = group_dirs(self._data_dir, group.folder)
        roots = [dirs.group, dirs.inbox, *([dirs.global_] if group.is_main else [])]
        total = entries = 0
        for root in roots:
            used = await groupfs.ausage(root, max_entries=max(self._max_files - entries, 0))
            total += used.bytes
            entries += used.entries
            if not used.complete:
                return total, f"its folder has {used.reason} (limit {self._max_files} files)"
        if total > self._quota:
            return total, f"its folder uses {_mb(total)} of its {_mb(self._quota)} quota"
        return total, None

    async def _verdict(self, group: Group) -> str | None:
        """None if the group is within its limits; otherwise which line it crossed (in words).
        Tells the main chat once per crossing."""
        free = await asyncio.to_thread(self.free_bytes)
        if free < self._min_free:
            if not self._low_space:
                self._low_space = True
                log.error("data dir free space %s is below min_free_mb; no sandbox runs", _mb(free))
                await self._notify_main(
                    f"⚠️ the data dir's disk has only {_mb(free)} free (floor: {_mb(self._min_free)}); "
                    "sandboxes are stopped and turns refused until space is freed."
                )
            return f"the gateway's disk is almost full ({_mb(free)} free); the owner has been told"
        self._low_space = False
        _, over = await self.usage(group)
        if over is None:
            if self._over.pop(group.folder, None) is not None:
                log.info("group %s is back under its disk quota", group.folder)
            return None
        if group.folder not in self._over:
            self._over[group.folder] = over
            log.warning("group %s is over its disk quota: %s", group.folder, over)
            if not group.is_main:  # main sees the refusal in its own chat already
                await self._notify_main(
                    f"⚠️ group {group.folder} is over its disk quota ({over}); its turns are refused "
                    "until it is back under."
                )
        return f"this group is over its disk quota: {over}"

    async def check(self, group: Group) -> str | None:
        """None if the group may run now; otherwise why not, worded for its chat."""
        verdict = await self._verdict(group)
        if verdict is None:
            return None
        return f"{verdict}. Nothing was run; {_REMEDY}"

    def refusal(self, folder: str) -> OSError | None:
        """The last known verdict for a group, without touching the disk (for inbound attachments)."""
        if self._low_space:
            return OSError(errno.ENOSPC, "the gateway's disk is almost full")
        if folder in self._over:
            return OSError(errno.EDQUOT, "the group is over its disk quota")
        return None

    async def watch(self, group: Group, stop: Callable[[str], Awaitable[None]]) -> None:
        """While the group's sandbox lives: measure every interval; stop it once over a line.

        A folder with many files takes a while to walk (~150 ms per 20,000 entries): the pause
        between walks is at least twice the last walk, so measuring never takes more than a
        third of a core per live sandbox."""
        pause = self.interval
        while True:
            await asyncio.sleep(pause)
            started = time.monotonic()
            try:
                verdict = await self._verdict(group)
            except OSError as exc:  # the folder vanished or became unreadable: measure next time
                log.warning("cannot measure the folder of %s: %s", group.folder, exc)
                continue
            pause = max(self.interval, 2 * (time.monotonic() - started))
            if verdict is not None:
                reason = f"{verdict}. The assistant was stopped; {_REMEDY}"
                self.tripped[group.folder] = reason
                log.warning("stopping the sandbox of %s: %s", group.folder, verdict)
                await stop(reason)
                return
