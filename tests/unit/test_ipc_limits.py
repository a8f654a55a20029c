"""The IPC rate limiters and their configuration, on a clock the test moves (no sleeping)."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, parse
from gateway.ipc_limits import IpcLimits, LogGate, Pacer, TokenBucket, line_cost


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refuses_past_the_burst_and_refills_at_the_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=5, clock=clock)
    assert [bucket.take() for _ in range(7)] == [True] * 5 + [False] * 2
    clock.now += 0.1  # one token back
    assert bucket.take() and not bucket.take()
    clock.now += 60  # refills up to the burst, not beyond
    assert sum(bucket.take() for _ in range(50)) == 5


def test_pacer_lets_the_burst_through_then_delays_in_arrival_order() -> None:
    clock = Clock()
    pacer = Pacer(rate=100, burst=10, clock=clock)
    assert [pacer.reserve() for _ in range(10)] == [0.0] * 10
    waits = [pacer.reserve() for _ in range(5)]
    assert waits == pytest.approx([0.01, 0.02, 0.03, 0.04, 0.05])
    # An expensive call books its slot in order; a cheap one arriving later waits behind it.
    big = pacer.reserve(50)
    small = pacer.reserve(1)
    assert big == pytest.approx(0.55) and small == pytest.approx(0.56)


def test_pacer_never_refuses_and_recovers_its_burst() -> None:
    clock = Clock()
    pacer = Pacer(rate=10, burst=20, clock=clock)
    assert all(pacer.reserve() >= 0 for _ in range(1000))  # deep in debt: still only a delay
    clock.now += 1000
    assert [pacer.reserve() for _ in range(20)] == [0.0] * 20
    assert pacer.reserve() > 0


def test_pacer_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError):
        Pacer(rate=0, burst=10)
    with pytest.raises(ValueError):
        Pacer(rate=1, burst=0)


def test_line_cost_counts_started_kibibytes() -> None:
    assert [line_cost(n) for n in (0, 1, 1024, 1025, 256 * 1024)] == [1, 1, 1, 2, 256]


def test_log_gate_summarizes_a_flood() -> None:
    gate = LogGate(per_s=1, burst=3)
    allowed = [gate.allow() for _ in range(10)]
    assert allowed[:3] == [0, 0, 0] and allowed[3:] == [None] * 7
    gate._bucket.tokens = 1  # a second later
    assert gate.allow() == 7  # the next line says how many were left out


def test_limits_come_from_config_with_an_idle_timeout_longer_than_any_turn() -> None:
    limits = IpcLimits.from_config(parse("[sandbox]\nturn_timeout_s = 1200\n", Path("t.toml")))
    assert limits.idle_timeout_s == 1260 and limits.max_connections == 32
    custom = parse(
        "[ipc]\nmax_connections = 8\nmax_line_bytes = 65536\nline_timeout_s = 2\nidle_timeout_s = 1000\n"
        "requests_per_s = 1\nrequests_burst = 2\nlines_per_s = 50\nlines_burst = 60\n",
        Path("t.toml"),
    )
    assert IpcLimits.from_config(custom) == IpcLimits(8, 65536, 2, 1000, 1, 2, 50, 60)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[ipc]\nidle_timeout_s = 60\n", "ipc.idle_timeout_s (60) must be longer than sandbox.turn"),
        ("[ipc]\nmax_connections = 1\n", "ipc.max_connections"),
        ("[ipc]\nmax_line_bytes = 100\n", "ipc.max_line_bytes"),
        ("[ipc]\nrate = 5\n", "ipc.rate: unknown key"),
    ],
)
def test_bad_ipc_config_is_refused_naming_the_key(toml: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(toml, Path("t.toml"))
