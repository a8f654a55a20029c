"""Scheduling of agent work: one lane per group, a global cap on live sandboxes.

A group "holds a slot" while its sandbox is alive, busy or warm. A group that wants
work while every slot is held waits in FIFO order; a warm but idle sandbox is
evicted (least recently used first) to make room, and a group that just finished
gives its slot up at once if others are waiting, so no group can starve the rest.
Everything is driven by asyncio events and tasks: nothing on the message path
sleeps or polls.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class GroupQueue:
    def __init__(
        self,
        capacity: int,
        process: Callable[[str], Awaitable[None]],
        evict: Callable[[str], Awaitable[None]],
    ) -> None:
        self._capacity = capacity
        self._process = process
        self._evict = evict
        self._holders: OrderedDict[str, None] = OrderedDict()  # LRU order of live sandboxes
        self._stopping: set[str] = set()
        self._busy: set[str] = set()
        self._again: set[str] = set()
        self._waiting: deque[str] = deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False

    # -- introspection ---------------------------------------------------------------

    @property
    def busy(self) -> frozenset[str]:
        return frozenset(self._busy)

    @property
    def holders(self) -> list[str]:
        return list(self._holders)

    @property
    def waiting(self) -> list[str]:
        return list(self._waiting)

    def _used(self) -> int:
        return len(self._holders.keys() | self._stopping)

    # -- entry points ----------------------------------------------------------------

    def wake(self, folder: str) -> None:
        """A group has new work. Cheap and idempotent; safe to call for every message."""
        if self._closed:
            return
        if folder in self._busy:
            self._again.add(folder)
            return
        if folder in self._waiting:
            return
        if folder in self._holders or self._used() < self._capacity:
            self._start_lane(folder)
            return
        self._waiting.append(folder)
        self._update_idle()
        self._evict_one_idle()

    def released(self, folder: str) -> None:
        """The group's sandbox is gone (idle timeout, crash, admin stop): its slot is free."""
        self._holders.pop(folder, None)
        self._admit_waiting()

    async def expire(self, folder: str) -> None:
        """Stop a warm sandbox that has been idle long enough, unless it became busy again."""
        if folder in self._busy or folder not in self._holders:
            return
        await self._stop(folder)

    async def wait_idle(self) -> None:
        """Until no lane is running and nobody waits (used for graceful shutdown and tests)."""
        while not (self._idle.is_set() and not self._busy and not self._waiting):
            await self._idle.wait()

    async def close(self) -> None:
        """Stop taking work; let running lanes finish (callers bound this with a timeout)."""
        self._closed = True
        self._waiting.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # -- internals -------------------------------------------------------------------

    def _start_lane(self, folder: str) -> None:
        self._busy.add(folder)
        self._holders[folder] = None
        self._holders.move_to_end(folder)
        self._idle.clear()
        task = asyncio.create_task(self._lane(folder), name=f"lane:{folder}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane(self, folder: str) -> None:
        try:
            while True:
                self._again.discard(folder)
                try:
                    await self._process(folder)
                except Exception:
                    log.exception("lane for group %s failed", folder)
                if folder not in self._again or self._closed:
                    break
        finally:
            self._busy.discard(folder)
            if self._waiting and folder in self._holders:
                # Others are waiting for a slot: give ours up now rather than idling warm.
                await self._stop(folder)
            self._update_idle()

    async def _stop(self, folder: str) -> None:
        self._holders.pop(folder, None)
        self._stopping.add(folder)
        await self._finish_stop(folder)

    async def _finish_stop(self, folder: str) -> None:
        try:
            await self._evict(folder)
        except Exception:
            log.exception("stopping the sandbox of %s failed", folder)
        finally:
            self._stopping.discard(folder)
            self._admit_waiting()

    def _evict_one_idle(self) -> None:
        for folder in self._holders:  # oldest first
            if folder not in self._busy:
                # Claim the slot synchronously so a second waiter picks a different victim.
                self._holders.pop(folder)
                self._stopping.add(folder)
                task = asyncio.create_task(self._finish_stop(folder), name=f"evict:{folder}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return

    def _admit_waiting(self) -> None:
        while self._waiting and self._used() < self._capacity and not self._closed:
            self._start_lane(self._waiting.popleft())
        self._update_idle()

    def _update_idle(self) -> None:
        if not self._busy and not self._waiting:
            self._idle.set()
        else:
            self._idle.clear()
