"""`mount_cases_checked` for `make bench`: how many generated mount-validation cases pass the oracle.

Runs the hypothesis properties of `tests/unit/test_mounts.py` (generated paths, symlink chains,
`..` segments, unicode look-alikes, hostile container paths) in a fresh temporary tree for a
fixed number of examples and returns the number of cases checked. A case that breaks invariant 3
(docs/ARCHITECTURE.md: every extra mount validated against the allowlist) raises.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def run(scale: float = 1.0) -> int:
    """Check 2100 x `scale` generated cases; returns how many were checked."""
    from tests.unit import test_mounts

    base = Path(tempfile.mkdtemp(prefix="cgmounts-bench-"))
    try:
        with test_mounts.world_at(base) as world:
            return test_mounts.run_properties(world, scale)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    print(run())
