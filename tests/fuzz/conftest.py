"""Prints executions and crashes per fuzz target at the end of a pytest session."""

from __future__ import annotations

import pytest

from tests.fuzz import harness


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not harness.RESULTS:
        return
    mode = harness.seconds_from_env()
    terminalreporter.section(f"fuzz ({'CI-bounded' if mode is None else f'{mode:g} s manual'} mode)")
    for r in harness.RESULTS:
        terminalreporter.write_line(
            f"{r.name:28} {r.executions:8d} executions  {r.crashes} crash(es)  {r.seconds:6.1f} s"
        )
    total = sum(r.executions for r in harness.RESULTS)
    crashes = sum(r.crashes for r in harness.RESULTS)
    terminalreporter.write_line(f"{'total':28} {total:8d} executions  {crashes} crash(es)")
