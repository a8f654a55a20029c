"""`make bench`: clawgate's hot paths next to baselines measured in the same run; prints one JSON object.

- warm: message ingested -> the group's (already running) agent acknowledges it, over
  >= 200 messages, next to a bare JSON-lines round trip on a unix socket.
- cold: message ingested -> agent ready in a brand-new container, next to a bare
  `docker run --rm --entrypoint true <image>`.
- ingest: messages persisted per second across 100 groups, next to a raw sqlite3
  single-transaction insert of the same rows.
Needs Docker and the sandbox image (built if missing). Talks only to loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gateway.app import Gateway  # noqa: E402
from gateway.config import parse  # noqa: E402
from gateway.models import Group, InboundMessage  # noqa: E402
from gateway.store import Store  # noqa: E402
from tests.fakes.channel import CaptureChannel  # noqa: E402
from tests.fakes.model_server import FakeModelServer  # noqa: E402

WARM_MESSAGES = int(os.environ.get("BENCH_WARM_MESSAGES", "300"))
COLD_STARTS = int(os.environ.get("BENCH_COLD_STARTS", "7"))
INGEST_GROUPS = 100
INGEST_PER_GROUP = int(os.environ.get("BENCH_INGEST_PER_GROUP", "200"))
IMAGE = os.environ.get("CLAWGATE_BENCH_IMAGE", "clawgate-sandbox:latest")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def ensure_image() -> None:
    import docker

    from groups.sandbox.image import build_image

    client = docker.from_env()
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        build_image(client, IMAGE, None, lambda line: print(line, file=sys.stderr))


async def socket_rtt(samples: int) -> list[float]:
    """Baseline: one JSON line to a unix-socket echo server and back, same event loop."""
    path = Path(tempfile.mkdtemp(prefix="cgb")) / "echo.sock"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()

    server = await asyncio.start_unix_server(echo, path=str(path))
    reader, writer = await asyncio.open_unix_connection(str(path))
    payload = json.dumps({"id": 1, "method": "next_messages", "params": {}}).encode() + b"\n"
    times = []
    for _ in range(samples + 20):
        start = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        await reader.readline()
        times.append(time.perf_counter() - start)
    writer.close()
    server.close()
    return times[20:]


def bare_docker_run(samples: int) -> list[float]:
    times = []
    for _ in range(samples + 1):
        start = time.perf_counter()
        subprocess.run(
            ["docker", "run", "--rm", "--network", "none", "--entrypoint", "true", IMAGE],
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return times[1:]


async def gateway_latencies() -> tuple[list[float], list[float]]:
    """(warm, cold) message->agent-ready latencies through the real gateway."""
    tmp = Path(tempfile.mkdtemp(prefix="cgb"))
    config_dir, data_dir = tmp / "config", tmp / "data"
    config_dir.mkdir()
    with FakeModelServer() as model:
        config = parse(
            f'[model]\nbase_url = "{model.url}"\n[sandbox]\nimage = "{IMAGE}"\nidle_timeout_s = 600\n'
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
            await channel.wait_for(replies + 1, 120)  # next message starts its own run
            await gateway.drain()
            return received_at - start

        try:
            cold = []
            for i in range(COLD_STARTS + 1):
                await gateway.pool.stop("main")
                cold.append(await one(f"cold {i}"))
            warm = [await one(f"warm {i}") for i in range(WARM_MESSAGES + 10)]
        finally:
            await gateway.stop(10)
    return warm[10:], cold[1:]


async def ingest_throughput() -> tuple[float, float]:
    """(clawgate msgs/s, raw sqlite3 msgs/s) for INGEST_GROUPS x INGEST_PER_GROUP messages."""
    tmp = Path(tempfile.mkdtemp(prefix="cgb"))
    store = await Store.open(tmp / "bench.db")
    groups = [Group(f"g{i}", f"tg:{i}", f"g{i}", "@Andy") for i in range(INGEST_GROUPS)]
    for group in groups:
        await store.register_group(group)
    from gateway.router import Router

    by_chat = {g.chat_id: g for g in groups}
    router = Router(store, by_chat.get, lambda group: None)
    now = time.time()

    async def feed(group: Group) -> None:
        for n in range(INGEST_PER_GROUP):
            await router.ingest(
                InboundMessage(
                    group.chat_id, str(n), "u1", "alice", f"message {n} without trigger", now, "bench"
                )
            )

    start = time.perf_counter()
    await asyncio.gather(*(feed(g) for g in groups))
    elapsed = time.perf_counter() - start
    total = INGEST_GROUPS * INGEST_PER_GROUP
    assert await store.count_messages() == total
    await store.close()

    raw = sqlite3.connect(tmp / "raw.db")
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE m (chat TEXT, ext TEXT, text TEXT, ts REAL, UNIQUE(chat, ext))")
    rows = [(g.chat_id, str(n), f"message {n}", now) for g in groups for n in range(INGEST_PER_GROUP)]
    start = time.perf_counter()
    with raw:
        raw.executemany("INSERT INTO m VALUES (?, ?, ?, ?)", rows)
    raw_elapsed = time.perf_counter() - start
    raw.close()
    return total / elapsed, total / raw_elapsed


async def main() -> None:
    ensure_image()
    rtt = await socket_rtt(WARM_MESSAGES)
    docker_run = bare_docker_run(COLD_STARTS)
    warm, cold = await gateway_latencies()
    from benchmarks.bwrap_cold import bwrap_cold_starts

    bwrap_cold = await bwrap_cold_starts(COLD_STARTS)
    ingest, raw_ingest = await ingest_throughput()
    result = {
        "warm_p50_ms": ms(pct(warm, 0.5)),
        "warm_p99_ms": ms(pct(warm, 0.99)),
        "warm_samples": len(warm),
        "socket_rtt_p50_ms": ms(pct(rtt, 0.5)),
        "socket_rtt_p99_ms": ms(pct(rtt, 0.99)),
        "cold_start_p50_ms": ms(pct(cold, 0.5)),
        "bwrap_cold_start_p50_ms": ms(pct(bwrap_cold, 0.5)),
        "cold_start_samples": len(cold),
        "docker_run_p50_ms": ms(pct(docker_run, 0.5)),
        "cold_vs_docker_run": round(statistics.median(cold) / statistics.median(docker_run), 3),
        "ingest_msgs_per_s": round(ingest),
        "ingest_groups": INGEST_GROUPS,
        "raw_sqlite_msgs_per_s": round(raw_ingest),
        "targets": {"warm_p50_ms": 10, "cold_vs_docker_run": 1.5, "ingest_msgs_per_s": 5000},
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
