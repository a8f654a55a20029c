"""The scheduling rules, with real asyncio tasks and a recording stand-in for sandboxes."""

import asyncio

from gateway.queue import GroupQueue


class Recorder:
    def __init__(self) -> None:
        self.active: set[str] = set()
        self.max_parallel = 0
        self.order: list[str] = []
        self.evicted: list[str] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.queue: GroupQueue | None = None

    async def process(self, folder: str) -> None:
        assert folder not in self.active, "two lanes for one group"
        self.active.add(folder)
        self.max_parallel = max(self.max_parallel, len(self.active))
        self.order.append(folder)
        gate = self.gates.get(folder)
        if gate is not None:
            await gate.wait()
        await asyncio.sleep(0)
        self.active.discard(folder)

    async def evict(self, folder: str) -> None:
        self.evicted.append(folder)
        assert self.queue is not None
        self.queue.released(folder)


def make(capacity: int) -> tuple[GroupQueue, Recorder]:
    rec = Recorder()
    queue = GroupQueue(capacity, rec.process, rec.evict)
    rec.queue = queue
    return queue, rec


async def test_one_lane_per_group_and_rerun_on_new_work() -> None:
    queue, rec = make(4)
    rec.gates["a"] = asyncio.Event()
    queue.wake("a")
    await asyncio.sleep(0)
    queue.wake("a")
    queue.wake("a")
    rec.gates["a"].set()
    await queue.wait_idle()
    assert rec.order == ["a", "a"]  # the extra wakes collapse into one more pass


async def test_global_cap_and_fifo_fairness() -> None:
    queue, rec = make(2)
    for name in "abc":
        rec.gates[name] = asyncio.Event()
    for name in ["a", "b", "c", "d"]:
        queue.wake(name)
    await asyncio.sleep(0)
    assert rec.active == {"a", "b"}
    assert queue.waiting == ["c", "d"]
    rec.gates["a"].set()
    await asyncio.sleep(0.01)
    assert "c" in rec.order and "d" not in rec.order  # waiters are admitted in arrival order
    rec.gates["b"].set()
    rec.gates["c"].set()
    await queue.wait_idle()
    assert rec.max_parallel <= 2
    assert rec.order == ["a", "b", "c", "d"]
    assert "a" in rec.evicted  # a finished group gave its warm slot to a waiter


async def test_idle_warm_sandbox_is_evicted_for_a_newcomer() -> None:
    queue, rec = make(1)
    queue.wake("a")
    await queue.wait_idle()
    assert queue.holders == ["a"]  # kept warm
    queue.wake("b")
    await queue.wait_idle()
    assert rec.evicted == ["a"] and queue.holders == ["b"]


async def test_expire_skips_busy_groups() -> None:
    queue, rec = make(2)
    rec.gates["a"] = asyncio.Event()
    queue.wake("a")
    await asyncio.sleep(0)
    await queue.expire("a")
    assert rec.evicted == []
    rec.gates["a"].set()
    await queue.wait_idle()
    await queue.expire("a")
    assert rec.evicted == ["a"] and queue.holders == []
