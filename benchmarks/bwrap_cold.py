"""Cold start of the bwrap backend: message ingested -> agent ready in a brand-new bwrap sandbox.

Measured through the real Gateway exactly like `run.gateway_latencies()` measures the Docker
cold path (stop the group's sandbox, send a message, time until the agent acknowledges it).
The rootfs is exported into the benchmark's own data dir first (not timed).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.app import Gateway  # noqa: E402
from gateway.config import parse  # noqa: E402
from tests.fakes.channel import CaptureChannel  # noqa: E402
from tests.fakes.model_server import FakeModelServer  # noqa: E402

IMAGE = os.environ.get("CLAWGATE_BENCH_IMAGE", "clawgate-sandbox:latest")


async def bwrap_cold_starts(samples: int) -> list[float]:
    """`samples` message->agent-ready latencies (s), each in a new bwrap sandbox; one warm-up dropped."""
    import docker

    from groups.sandbox.bwrap import ROOTFS_DIR
    from groups.sandbox.image import export_rootfs

    tmp = Path(tempfile.mkdtemp(prefix="cgbw"))
    config_dir, data_dir = tmp / "config", tmp / "data"
    config_dir.mkdir()
    client = docker.from_env()
    try:
        await asyncio.to_thread(export_rootfs, client, IMAGE, data_dir / ROOTFS_DIR)
    finally:
        client.close()
    with FakeModelServer() as model:
        config = parse(
            f'[model]\nbase_url = "{model.url}"\n'
            f'[sandbox]\nbackend = "bwrap"\nimage = "{IMAGE}"\nidle_timeout_s = 600\n'
            f'[vault]\nallow_private_upstreams = ["{model.host_port}"]\n',
            Path("bench.toml"),
        )
        channel = CaptureChannel()
        gateway = Gateway(config, config_dir, data_dir)
        await gateway.start([channel])
        receipts: dict[int, asyncio.Future[float]] = {}

        def on_received(run, received_at: float) -> None:  # type: ignore[no-untyped-def]
            for future in receipts.values():
                if not future.done():
                    future.set_result(received_at)

        gateway.executor.observers.append(on_received)

        async def one(text: str) -> float:
            future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
            receipts[0] = future
            replies = len(channel.sent)
            start = time.perf_counter()
            await gateway.ingest(channel.message(text))
            received_at = await asyncio.wait_for(future, 120)
            await channel.wait_for(replies + 1, 120)
            await gateway.drain()
            return received_at - start

        try:
            cold = []
            for i in range(samples + 1):
                await gateway.pool.stop("main")
                cold.append(await one(f"cold {i}"))
        finally:
            await gateway.stop(10)
    return cold[1:]


if __name__ == "__main__":
    import json
    import statistics

    times = asyncio.run(bwrap_cold_starts(int(os.environ.get("BENCH_COLD_STARTS", "7"))))
    print(
        json.dumps(
            {"bwrap_cold_start_p50_ms": round(statistics.median(times) * 1000, 3), "samples": len(times)}
        )
    )
