"""Runs the fuzz targets in a bounded CI mode or a long manual mode, counting executions and crashes.

A target is a property over hostile input: a body that raises (AssertionError or any escaping
exception) when the property breaks. The same registry serves pytest (`tests/fuzz/test_*.py`)
and the benchmark runner (`benchmarks/fuzz.py`), so `make bench` counts exactly what CI runs.

- CI mode (default): every target runs a fixed number of derandomized examples with no example
  database, so a CI failure reproduces on any machine and the whole run stays around a minute.
- Manual mode (`CLAWGATE_FUZZ_SECONDS=600 make fuzz`): the seconds are shared out among the
  selected targets; each one runs batches of freshly seeded random examples until its share is
  used or it finds a failure.

A failing run is a crash: hypothesis shrinks it and prints the falsifying example; the result
keeps the (shrunk) traceback so the report names input and place.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis.strategies import SearchStrategy

SECONDS_ENV = "CLAWGATE_FUZZ_SECONDS"
SCALE_ENV = "CLAWGATE_FUZZ_SCALE"  # multiplies every CI example count (e.g. 0.1 for a smoke run)
BATCH_EXAMPLES = 200  # manual mode: examples per freshly seeded hypothesis run (the time check between runs)

Setup = Callable[[], AbstractContextManager[Any]]


@dataclass
class Target:
    name: str
    body: Callable[..., None]
    strategies: dict[str, SearchStrategy[Any]]
    ci_examples: int
    setup: Setup | None = None
    examples: tuple[dict[str, Any], ...] = ()  # inputs that once broke a property; always run first


@dataclass
class Result:
    name: str
    executions: int
    crashes: int
    seconds: float
    failure: str | None = None


TARGETS: dict[str, Target] = {}


def fuzz_target(
    name: str,
    *,
    ci_examples: int,
    setup: Setup | None = None,
    examples: tuple[dict[str, Any], ...] = (),
    **strategies: SearchStrategy[Any],
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Register `body(env, **drawn)` as a target; `env` is what `setup()` yields (None without one).

    `examples` are regression inputs (keyword arguments for the body) found by earlier runs.
    """

    def register(body: Callable[..., None]) -> Callable[..., None]:
        if name in TARGETS:
            raise ValueError(f"fuzz target {name!r} registered twice")
        TARGETS[name] = Target(name, body, strategies, ci_examples, setup, examples)
        return body

    return register


def ci_settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
    )


def manual_settings() -> settings:
    return settings(
        max_examples=BATCH_EXAMPLES,
        derandomize=False,
        database=None,
        deadline=None,
        print_blob=True,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate, Phase.shrink, Phase.explain],
    )


def ci_examples(target: Target) -> int:
    scale = float(os.environ.get(SCALE_ENV, "1") or "1")
    return max(1, round(target.ci_examples * scale))


def _crashes(exc: BaseException) -> int:
    """Hypothesis reports several distinct bugs of one run as an exception group."""
    if isinstance(exc, BaseExceptionGroup):
        return sum(_crashes(e) for e in exc.exceptions)
    return 1


def run(target: Target, seconds: float | None = None) -> Result:
    """One target: CI mode when `seconds` is None, else random batches until the time is used."""
    counter = [0]

    def make_test(env: Any, chosen: settings) -> Callable[[], None]:
        def test(**drawn: Any) -> None:
            counter[0] += 1
            target.body(env, **drawn)

        wrapped = given(**target.strategies)(test)
        for case in target.examples:
            wrapped = example(**case)(wrapped)
        return chosen(wrapped)

    started = time.monotonic()
    failure: str | None = None
    crashes = 0
    with target.setup() if target.setup is not None else contextlib.nullcontext() as env:
        try:
            if seconds is None:
                make_test(env, ci_settings(ci_examples(target)))()
            else:
                deadline = started + seconds
                while time.monotonic() < deadline:
                    make_test(env, manual_settings())()
        except (Exception, ExceptionGroup) as exc:  # a broken property, whatever it raised
            crashes = _crashes(exc)
            failure = "".join(traceback.format_exception(exc))
    return Result(target.name, counter[0], crashes, time.monotonic() - started, failure)


def seconds_from_env() -> float | None:
    """Total seconds for manual mode, or None for the bounded CI mode."""
    raw = os.environ.get(SECONDS_ENV, "").strip()
    if not raw:
        return None
    value = float(raw)
    if value <= 0:
        raise ValueError(f"{SECONDS_ENV} must be a positive number of seconds, not {raw!r}")
    return value


def load_targets() -> dict[str, Target]:
    """Import every target module (registration happens at import)."""
    from tests.fuzz import (  # noqa: F401
        test_fuzz_ipc,
        test_fuzz_slack,
        test_fuzz_telegram,
        test_fuzz_vault,
    )

    return TARGETS


def run_all(total_seconds: float | None = None) -> list[Result]:
    targets = list(load_targets().values())
    share = None if total_seconds is None else total_seconds / len(targets)
    return [run(t, share) for t in targets]


RESULTS: list[Result] = []  # what the pytest session ran, for its terminal summary


def check(name: str) -> None:
    """The pytest entry point: run one target in the mode the environment selects; fail on a crash."""
    total = seconds_from_env()
    share = None if total is None else total / len(load_targets())
    result = run(TARGETS[name], share)
    RESULTS.append(result)
    if result.crashes:
        raise AssertionError(f"fuzz target {name} crashed:\n{result.failure}")


def quiet(*loggers: str) -> Setup:
    """A setup that keeps the refusals a target provokes by the thousand out of the output."""

    @contextlib.contextmanager
    def silenced() -> Iterator[None]:
        saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
        for logger, _ in saved:
            logger.setLevel(logging.CRITICAL)
        try:
            yield None
        finally:
            for logger, level in saved:
                logger.setLevel(level)

    return silenced
