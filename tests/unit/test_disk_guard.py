"""gateway.disk.DiskGuard on real directories: what counts, which limit says no, who is told."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

from core.config import SandboxConfig
from core.models import Group
from gateway.disk import MB, DiskGuard
from groups import folders

TEAM = Group("team", "tg:1", "team", "@Andy")
MAIN = Group("main", "tg:2", "main", "@Andy", requires_trigger=False, is_main=True)


def guard(tmp_path: Path, told: list[str], **limits: float) -> DiskGuard:
    async def notify(text: str) -> None:
        told.append(text)

    for group in (TEAM, MAIN):
        folders.prepare(folders.group_dirs(tmp_path, group.folder), None)
    return DiskGuard(SandboxConfig(**limits), tmp_path, notify)  # type: ignore[arg-type]


def write(path: Path, megabytes: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(megabytes * MB))


def test_folder_and_inbox_count_and_main_is_told_once_per_crossing(tmp_path: Path) -> None:
    told: list[str] = []
    g = guard(tmp_path, told, group_quota_mb=4, min_free_mb=0)
    dirs = folders.group_dirs(tmp_path, "team")

    async def scenario() -> None:
        write(dirs.group / "a", 2)
        assert await g.check(TEAM) is None
        write(dirs.inbox / "1-photo.jpg", 3)  # attachments count too
        refusal = await g.check(TEAM)
        assert refusal is not None and "over its disk quota" in refusal and "Nothing was run" in refusal
        assert await g.check(TEAM) is not None
        assert len(told) == 1 and "group team" in told[0]
        refused = g.refusal("team")
        assert refused is not None and refused.errno == errno.EDQUOT
        (dirs.inbox / "1-photo.jpg").unlink()
        assert await g.check(TEAM) is None and g.refusal("team") is None
        write(dirs.group / "b", 3)
        assert await g.check(TEAM) is not None
        assert len(told) == 2  # a new crossing is a new notice

    asyncio.run(scenario())


def test_too_many_files_is_over_the_limit(tmp_path: Path) -> None:
    told: list[str] = []
    g = guard(tmp_path, told, group_max_files=100, min_free_mb=0)
    group_dir = folders.group_dirs(tmp_path, "team").group
    for i in range(150):
        (group_dir / f"f{i}").touch()
    refusal = asyncio.run(g.check(TEAM))
    assert refusal is not None and "more than" in refusal and "limit 100 files" in refusal


def test_main_counts_the_global_folder_and_is_not_told_about_itself(tmp_path: Path) -> None:
    told: list[str] = []
    g = guard(tmp_path, told, group_quota_mb=2, min_free_mb=0)
    write(folders.group_dirs(tmp_path, "main").global_ / "shared.bin", 3)
    assert asyncio.run(g.check(MAIN)) is not None
    assert asyncio.run(g.check(TEAM)) is None  # the global folder is main's, not every group's
    assert told == []


def test_below_the_floor_nobody_runs_and_main_is_told_once(tmp_path: Path) -> None:
    told: list[str] = []
    g = guard(tmp_path, told, min_free_mb=10**9)  # more than any disk has free
    for group in (TEAM, MAIN, TEAM):
        refusal = asyncio.run(g.check(group))
        assert refusal is not None and "disk is almost full" in refusal
    assert len(told) == 1 and "floor" in told[0]
    refused = g.refusal("team")
    assert refused is not None and refused.errno == errno.ENOSPC


def test_watch_stops_a_sandbox_that_crosses_the_quota(tmp_path: Path) -> None:
    told: list[str] = []
    g = guard(tmp_path, told, group_quota_mb=2, min_free_mb=0, disk_check_s=0.05)
    stopped: list[str] = []

    async def stop(reason: str) -> None:
        stopped.append(reason)

    async def scenario() -> None:
        watch = asyncio.create_task(g.watch(TEAM, stop))
        await asyncio.sleep(0.2)
        assert not watch.done()
        write(folders.group_dirs(tmp_path, "team").group / "big", 3)
        await asyncio.wait_for(watch, 10)

    asyncio.run(scenario())
    assert len(stopped) == 1 and "The assistant was stopped" in stopped[0]
    assert g.tripped["team"] == stopped[0]
