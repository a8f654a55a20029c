"""A clock tests move by hand, for the scheduler and approvals (`gateway.scheduler.Clock`)."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, start: float) -> None:
        self.t = start
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep_until(self, when: float) -> None:
        if when <= self.t:
            return
        entry = (when, asyncio.get_running_loop().create_future())
        self.sleepers.append(entry)
        try:
            await entry[1]
        finally:
            self.sleepers.remove(entry)

    def set(self, t: float) -> None:
        """Jump to `t` and wake every sleeper whose time has come."""
        assert t >= self.t, "time only moves forward"
        self.t = t
        for when, future in list(self.sleepers):
            if when <= t and not future.done():
                future.set_result(None)
