"""How much memory a sandbox uses now, for the dashboard's sandbox table — best effort, never raising.

Docker: the engine's one-shot stats; like `docker stats`, usage minus the inactive file cache
(page cache the kernel reclaims first, which the memory limit does not really charge).
bwrap: the sandbox's own memory cgroup when one was applied (the same "minus inactive file"
reading), otherwise the resident set of bwrap and every process below it, from /proc — the
sandbox's processes are in a pid namespace of their own, but on the host they are bwrap's
descendants. Any failure (a process gone mid-read, a file we may not read, stats a runtime
does not provide) is "unknown" (None), which the page shows as "—".
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

PROC = Path("/proc")


def docker_usage(stats: Mapping[str, Any]) -> int | None:
    """Bytes in use from a Docker stats document (cgroup v1 or v2 keys), or None if it has none."""
    memory = stats.get("memory_stats") or {}
    usage = memory.get("usage")
    if not isinstance(usage, int) or usage <= 0:
        return None
    detail = memory.get("stats") or {}
    inactive = detail.get("inactive_file", detail.get("total_inactive_file", 0))
    if isinstance(inactive, int) and 0 <= inactive < usage:
        return usage - inactive
    return usage


def _stat_value(text: str, key: str) -> int:
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            with contextlib.suppress(ValueError):
                return int(value)
    return 0


def cgroup_usage(leaf: Path) -> int | None:
    """Bytes in use by a memory cgroup (v2 `memory.current`, v1 `memory.usage_in_bytes`)."""
    for current, key in (
        ("memory.current", "inactive_file"),
        ("memory.usage_in_bytes", "total_inactive_file"),
    ):
        try:
            usage = int((leaf / current).read_text())
        except (OSError, ValueError):
            continue
        try:
            inactive = _stat_value((leaf / "memory.stat").read_text(), key)
        except OSError:
            inactive = 0
        return usage - inactive if 0 <= inactive < usage else usage
    return None


def _children(proc: Path) -> dict[int, list[int]]:
    """Parent pid -> child pids, from every /proc/<pid>/stat readable now."""
    tree: dict[int, list[int]] = {}
    for entry in proc.iterdir() if proc.is_dir() else ():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # exited while we looked
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1].isdigit():
            tree.setdefault(int(fields[1]), []).append(int(entry.name))
    return tree


def _rss(proc: Path, pid: int) -> int:
    try:
        status = (proc / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            with contextlib.suppress(IndexError, ValueError):
                return int(parts[1]) * 1024  # reported in kB
    return 0  # a kernel thread or a zombie has no VmRSS


def tree_rss(pid: int, proc: Path = PROC) -> int | None:
    """Summed resident set of `pid` and all its descendants; None if `pid` is gone."""
    if not (proc / str(pid)).exists():
        return None
    tree = _children(proc)
    total, todo, seen = 0, [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        total += _rss(proc, current)
        todo.extend(tree.get(current, ()))
    return total or None


def sandbox_usage(cgroup_dirs: Sequence[Path], cgroup_has_memory: bool, pid: int) -> int | None:
    """A bwrap sandbox's usage: its memory cgroup if it has one, else its process tree's RSS."""
    if cgroup_has_memory:
        for leaf in cgroup_dirs:
            if (leaf / "memory.current").exists() or (leaf / "memory.usage_in_bytes").exists():
                found = cgroup_usage(leaf)
                if found is not None:
                    return found
    return tree_rss(pid) if pid > 0 and os.name == "posix" else None
