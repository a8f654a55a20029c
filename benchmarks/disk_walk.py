"""`group_usage_walk_ms` for `make bench`: what the disk-quota check costs per measurement.

The gateway measures a group's folder before every turn and every `[sandbox] disk_check_s`
while its sandbox lives (`gateway/disk.py`), with `groups.groupfs.usage`: fd-relative,
lstat only, one fd per level. The baseline is the plain path-based `os.walk` + `os.lstat`
over the same tree, measured in alternating rounds in the same run.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from groups import groupfs  # noqa: E402

DIRS = 200
FILES_PER_DIR = 100
ROUNDS = 7


def _os_walk_bytes(root: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def run() -> dict[str, float | int]:
    base = Path(tempfile.mkdtemp(prefix="cg-walk-bench-"))
    try:
        for d in range(DIRS):
            sub = base / f"d{d}" / "nested"
            sub.mkdir(parents=True)
            for f in range(FILES_PER_DIR):
                (sub / f"f{f}").write_bytes(b"x" * 100)
        ours: list[float] = []
        plain: list[float] = []
        for _ in range(ROUNDS):
            started = time.perf_counter()
            used = groupfs.usage(base)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            baseline = _os_walk_bytes(base)
            plain.append(time.perf_counter() - started)
            assert used.complete and used.bytes >= baseline, (used, baseline)
        entries = DIRS * (FILES_PER_DIR + 2)
        return {
            "group_usage_walk_entries": entries,
            "group_usage_walk_p50_ms": round(statistics.median(ours) * 1000, 3),
            "os_walk_lstat_p50_ms": round(statistics.median(plain) * 1000, 3),
            "group_usage_vs_os_walk": round(statistics.median(ours) / statistics.median(plain), 3),
        }
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    print(run())
