"""No test can hang the suite: each one is bounded by pyproject's `timeout` (pytest-timeout).

A hang used to stall `make test` until CI's own limit killed the whole run with no hint of
where it stood (a sandbox waiting for an IPC reply that never came). With the limit, the
hung test fails on its own, with the stack of every thread, and the other tests go on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HANGS = """
import asyncio
import time


async def test_awaits_forever():
    await asyncio.Event().wait()  # an event nobody sets: a reply that never comes


def test_blocks_forever():
    time.sleep(3600)  # a blocking call that never returns


def test_finishes():
    pass
"""


def suite_settings() -> dict[str, object]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]


def test_every_test_of_the_suite_is_bounded() -> None:
    timeout = float(suite_settings()["timeout"])  # type: ignore[arg-type]
    # Bounded, and well inside CI's 90 minutes; generous enough for the slowest real test.
    assert 300 <= timeout <= 1800, timeout


def test_a_hanging_test_fails_with_its_stack_and_the_run_goes_on(tmp_path: Path) -> None:
    (tmp_path / "test_hangs.py").write_text(HANGS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "COV_"))}
    # The suite's own settings (asyncio mode, the timeout plugin), with the limit lowered so
    # that this proof takes seconds.
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-c",
            str(ROOT / "pyproject.toml"),
            "--rootdir",
            str(tmp_path),
            "-p",
            "no:cacheprovider",
            "-o",
            "timeout=2",
            "test_hangs.py",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "2 failed, 1 passed" in out, out
    # Once per hung test, in its traceback (`E` lines). The short summary may repeat the
    # message or cut it, depending on the terminal's width, so it is not counted.
    timeouts = [
        line
        for line in out.splitlines()
        if line.startswith("E") and "Failed: Timeout (>2.0s) from pytest-timeout." in line
    ]
    assert len(timeouts) == 2, out
    assert "FAILED test_hangs.py::test_awaits_forever" in out, out
    assert "FAILED test_hangs.py::test_blocks_forever" in out, out
    assert "test_hangs.py:11: Failed" in out, out  # the traceback points at the line that blocked
