"""Prints executions and crashes per fuzz target at the end of a pytest session.

Results travel on each test's report (`user_properties`), not in a module global, so the
summary is the same whether the targets ran in this process or in pytest-xdist workers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict

import pytest

from tests.fuzz import harness

_REPORTED: list[harness.Result] = []


@pytest.fixture(autouse=True)
def _report_results(request: pytest.FixtureRequest) -> Iterator[None]:
    before = len(harness.RESULTS)
    yield
    for result in harness.RESULTS[before:]:
        request.node.user_properties.append(("fuzz", asdict(result)))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown":
        _REPORTED.extend(harness.Result(**value) for key, value in report.user_properties if key == "fuzz")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORTED:
        return
    mode = harness.seconds_from_env()
    terminalreporter.section(f"fuzz ({'CI-bounded' if mode is None else f'{mode:g} s manual'} mode)")
    for r in _REPORTED:
        terminalreporter.write_line(
            f"{r.name:28} {r.executions:8d} executions  {r.crashes} crash(es)  {r.seconds:6.1f} s"
        )
    total = sum(r.executions for r in _REPORTED)
    crashes = sum(r.crashes for r in _REPORTED)
    terminalreporter.write_line(f"{'total':28} {total:8d} executions  {crashes} crash(es)")
