"""Load on loopback: 100 groups, 10,000 messages injected as fast as the channel takes them.

The model answers every request after a small delay. Reports throughput (messages
answered per second, first inject to last answer), queue wait (ingest -> the agent has
the message) p50/p99, the gateway's peak RSS, and how many messages were not answered.
"""

from __future__ import annotations

import asyncio
import os
import resource
import time

from benchmarks.harness import bench_gateway
from core.models import Group

GROUPS = int(os.environ.get("LOAD_GROUPS", "100"))
MESSAGES = int(os.environ.get("LOAD_MESSAGES", "10000"))
MODEL_DELAY_S = float(os.environ.get("LOAD_MODEL_DELAY_S", "0.02"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else 0.0


async def run_load(backend: str) -> dict[str, float]:
    async with bench_gateway(backend, MODEL_DELAY_S, "max_containers = 8") as bench:
        gateway, channel = bench.gateway, bench.channel
        for i in range(GROUPS):
            await gateway.registry.register(Group(f"g{i}", f"load:{i}", f"g{i}", "@Andy", False, False))
        waits: list[float] = []

        def on_received(run, received_at: float) -> None:  # type: ignore[no-untyped-def]
            now = time.time()
            waits.extend(now - m.timestamp for m in run.messages)

        gateway.executor.observers.append(on_received)
        start = time.perf_counter()

        async def feed(group: int) -> None:
            for n in range(MESSAGES // GROUPS):
                await gateway.ingest(channel.message(f"m{n}", chat_id=f"load:{group}"))

        await asyncio.gather(*(feed(i) for i in range(GROUPS)))
        injected = time.perf_counter() - start
        await asyncio.wait_for(gateway.drain(), 900)
        elapsed = time.perf_counter() - start
        done = await gateway.store.count_messages("done")
    return {
        "load_groups": GROUPS,
        "load_messages": MESSAGES,
        "load_backend": backend,
        "load_inject_s": round(injected, 3),
        "load_msgs_per_s": round(MESSAGES / elapsed),
        "load_queue_wait_p50_ms": round(pct(waits, 0.5) * 1000, 1),
        "load_queue_wait_p99_ms": round(pct(waits, 0.99) * 1000, 1),
        "load_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_lost_messages": MESSAGES - done,
    }


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(run_load(os.environ.get("LOAD_BACKEND", "bwrap")))))
