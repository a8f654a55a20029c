"""Reading a sandbox's memory (groups/sandbox/memory.py): Docker stats, cgroups, a /proc tree.

The /proc and cgroup files are written to a tmp dir in the kernel's formats, and the process
tree is also read for real from this test's own process and a child it starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from groups.sandbox.memory import cgroup_usage, docker_usage, sandbox_usage, tree_rss

MIB = 1024 * 1024


def test_docker_stats_v2_v1_and_missing() -> None:
    v2 = {"memory_stats": {"usage": 50 * MIB, "stats": {"inactive_file": 10 * MIB}, "limit": 256 * MIB}}
    v1 = {"memory_stats": {"usage": 50 * MIB, "stats": {"total_inactive_file": 20 * MIB}}}
    assert docker_usage(v2) == 40 * MIB and docker_usage(v1) == 30 * MIB
    assert docker_usage({"memory_stats": {"usage": 5 * MIB}}) == 5 * MIB
    assert docker_usage({"memory_stats": {"usage": 5, "stats": {"inactive_file": 9}}}) == 5  # never negative
    for empty in ({}, {"memory_stats": {}}, {"memory_stats": {"usage": "x"}}, {"memory_stats": None}):
        assert docker_usage(empty) is None  # e.g. a runtime that reports no memory


def test_cgroup_v2_and_v1_files(tmp_path: Path) -> None:
    v2, v1, none = tmp_path / "v2", tmp_path / "v1", tmp_path / "none"
    for d in (v2, v1, none):
        d.mkdir()
    (v2 / "memory.current").write_text(f"{30 * MIB}\n")
    (v2 / "memory.stat").write_text(f"anon {20 * MIB}\nfile {10 * MIB}\ninactive_file {4 * MIB}\n")
    (v1 / "memory.usage_in_bytes").write_text(f"{30 * MIB}\n")
    (v1 / "memory.stat").write_text(f"cache 1\ntotal_inactive_file {6 * MIB}\n")
    assert cgroup_usage(v2) == 26 * MIB and cgroup_usage(v1) == 24 * MIB
    assert cgroup_usage(none) is None
    assert sandbox_usage([none, v2], True, -1) == 26 * MIB  # the leaf of the memory hierarchy


def fake_proc(root: Path, procs: dict[int, tuple[int, int | None]]) -> Path:
    """pid -> (ppid, VmRSS kB or None for a kernel thread), in /proc's formats."""
    for pid, (ppid, rss) in procs.items():
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "stat").write_text(f"{pid} (odd) name) S {ppid} 1 1 0 -1\n")  # a ")" in the name
        (d / "status").write_text("Name:\tx\n" + (f"VmRSS:\t    {rss} kB\n" if rss is not None else ""))
    (root / "self").mkdir()
    return root


def test_a_process_tree_is_summed_and_only_its_descendants(tmp_path: Path) -> None:
    proc = fake_proc(
        tmp_path / "proc",
        {10: (1, 100), 11: (10, 200), 12: (11, 300), 13: (10, None), 20: (1, 5000), 21: (20, 7000)},
    )
    assert tree_rss(10, proc) == 600 * 1024
    assert tree_rss(12, proc) == 300 * 1024
    assert tree_rss(99, proc) is None  # gone


def test_the_real_process_tree_of_this_test() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; b = bytearray(40 << 20); time.sleep(30)"])
    try:
        for _ in range(200):  # until the child has allocated (bounded: 200 x 50 ms)
            alone = tree_rss(child.pid) or 0
            if alone > 30 * MIB:
                break
            subprocess.run(["sleep", "0.05"], check=True)
        mine = tree_rss(os.getpid()) or 0
        assert alone > 30 * MIB and mine >= alone + 10 * MIB  # the child is counted under its parent
        assert (sandbox_usage([], False, child.pid) or 0) > 30 * MIB  # no memory cgroup: the tree
    finally:
        child.kill()
        child.wait()
