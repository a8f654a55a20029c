"""`fuzz_execs` for `make bench`: the CI-bounded fuzz run (tests/fuzz), executions and crashes.

Runs the same targets as `pytest tests/fuzz` through hypothesis's API, without pytest, and
counts every execution of a target body (generation and shrinking alike). A crash is a broken
property; the benchmark reports it and the run's JSON carries `fuzz_crashes` (must be 0).
`python -m benchmarks.fuzz` prints the per-target figures; `CLAWGATE_FUZZ_SECONDS=N` runs the
long manual mode instead.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz import harness  # noqa: E402


def run(total_seconds: float | None = None) -> dict[str, object]:
    start = time.monotonic()
    results = harness.run_all(total_seconds)
    elapsed = time.monotonic() - start
    for r in results:
        if r.failure:
            print(f"fuzz target {r.name} crashed:\n{r.failure}", file=sys.stderr)
    executions = sum(r.executions for r in results)
    return {
        "fuzz_execs": executions,
        "fuzz_crashes": sum(r.crashes for r in results),
        "fuzz_seconds": round(elapsed, 1),
        "fuzz_execs_per_s": round(executions / elapsed, 1),
        "fuzz_targets": {r.name: {"execs": r.executions, "crashes": r.crashes} for r in results},
    }


if __name__ == "__main__":
    print(json.dumps(run(harness.seconds_from_env())))
