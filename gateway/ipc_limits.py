"""What one group's IPC socket may cost the host: connections, line sizes, time, request rates.

A sandbox is hostile (README trust model): whatever it sends over `ipc.sock` must not let
it exhaust what every group shares, i.e. the gateway's descriptors, memory and event loop.
Each group therefore gets

- at most `max_connections` open connections (more are refused at once, never queued);
- lines of at most `max_line_bytes`, enforced while reading, so a half-sent line holds at
  most about that much memory per connection (see `gateway.ipc_reader`);
- an idle timeout between lines and a line timeout from a line's first byte to its end;
- two rate limits. Every line, parsed or not, is *paced* by the generous `lines` budget
  (`Pacer`): it is delayed, never refused, so the turn protocol (`next_messages`,
  `received`, `turn_done`, `status`) is never refused and an answer is never lost, while
  a flood cannot make the gateway parse more than a bounded number of lines and bytes per
  second. Every other method (and every malformed request) also takes a token from the
  strict `requests` bucket (`TokenBucket`) and is refused with `rate_limited` when it is
  empty: those methods act on the gateway and the outside world.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.config import Config

LINE_UNIT_BYTES = 1024  # a line costs one `lines` unit per started KiB: bytes are paced too


@dataclass(frozen=True, slots=True)
class IpcLimits:
    """The limits of one group's socket (see `[ipc]` in README 'Configuration')."""

    max_connections: int = 32
    max_line_bytes: int = 256 * 1024
    line_timeout_s: float = 10.0
    idle_timeout_s: float = 960.0
    requests_per_s: float = 20.0
    requests_burst: float = 100.0
    lines_per_s: float = 1000.0
    lines_burst: float = 1000.0

    @classmethod
    def from_config(cls, config: Config) -> IpcLimits:
        ipc = config.ipc
        return cls(
            max_connections=ipc.max_connections,
            max_line_bytes=ipc.max_line_bytes,
            line_timeout_s=ipc.line_timeout_s,
            idle_timeout_s=config.ipc_idle_timeout_s,
            requests_per_s=ipc.requests_per_s,
            requests_burst=ipc.requests_burst,
            lines_per_s=ipc.lines_per_s,
            lines_burst=ipc.lines_burst,
        )


def line_cost(length: int) -> int:
    """The `lines` units a line of `length` bytes costs (at least one)."""
    return max(1, -(-length // LINE_UNIT_BYTES))


class TokenBucket:
    """Refuses beyond `rate` per second after a `burst`: for requests that may simply be retried."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst = rate, burst
        self._now = clock
        self.tokens = burst
        self.stamp = self._now()

    def take(self) -> bool:
        now = self._now()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class Pacer:
    """Delays instead of refusing, first come first served, for work that must never be dropped.

    A reservation scheme (GCRA): each call books the next free slot and is told how long to
    wait for it, so callers are served strictly in arrival order whatever their cost.
    (`aiolimiter`, already installed, serves waiters by amount, smallest first: a large
    `turn_done` could then starve behind a stream of small lines.) The debt is bounded by
    the callers: one line per connection is in flight, and connections are capped.
    """

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst = rate, burst
        self._now = clock
        self._free_at = self._now() - burst / rate  # when the bucket is fully refilled

    def reserve(self, cost: float = 1.0) -> float:
        """Book `cost` units; returns the seconds to wait before going ahead (0 within the burst)."""
        now = self._now()
        start = max(self._free_at, now - self.burst / self.rate)
        self._free_at = start + cost / self.rate
        return max(0.0, self._free_at - now)


class LogGate:
    """At most `per_s` log lines per second (burst `burst`); says how many were left out.

    Refusals are audited, but a flood of refused requests must not become a flood of log
    lines (disk is shared too).
    """

    def __init__(self, per_s: float = 2.0, burst: float = 10.0) -> None:
        self._bucket = TokenBucket(per_s, burst)
        self.suppressed = 0

    def allow(self) -> int | None:
        """None if this line is left out; else the number left out since the last one allowed."""
        if not self._bucket.take():
            self.suppressed += 1
            return None
        skipped, self.suppressed = self.suppressed, 0
        return skipped
