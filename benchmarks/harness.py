"""A real gateway for benchmarks: fake model on loopback, real sandboxes, real vault, real SQLite."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.config import parse  # noqa: E402
from gateway.app import Gateway  # noqa: E402
from proxy.secrets import SecretStore  # noqa: E402
from tests.fakes.channel import CaptureChannel  # noqa: E402
from tests.fakes.model_server import FakeModelServer, Recorded  # noqa: E402

IMAGE = os.environ.get("CLAWGATE_BENCH_IMAGE", "clawgate-sandbox:latest")


def ensure_image() -> None:
    import docker

    from groups.sandbox.image import build_image

    client = docker.from_env()
    try:
        client.images.get(IMAGE)
    except docker.errors.ImageNotFound:
        build_image(client, IMAGE, None, lambda line: print(line, file=sys.stderr))


class BenchGateway:
    def __init__(
        self, gateway: Gateway, channel: CaptureChannel, model: FakeModelServer | None = None
    ) -> None:
        self.gateway = gateway
        self.channel = channel
        self.model = model
        self._receipt: asyncio.Future[float] | None = None
        gateway.executor.observers.append(self._on_received)

    def _on_received(self, run: Any, received_at: float) -> None:
        if self._receipt is not None and not self._receipt.done():
            self._receipt.set_result(received_at)

    async def one(self, text: str) -> float:
        """Seconds from ingesting `text` until the agent acknowledged it; waits for the reply too."""
        self._receipt = asyncio.get_running_loop().create_future()
        replies = len(self.channel.sent)
        start = time.perf_counter()
        await self.gateway.ingest(self.channel.message(text))
        received_at = await asyncio.wait_for(self._receipt, 120)
        await self.channel.wait_for(replies + 1, 120)  # the next message starts its own run
        await self.gateway.drain()
        return received_at - start

    async def cold(self, text: str) -> float:
        await self.gateway.pool.stop("main")
        return await self.one(text)

    async def turn_overhead(self, text: str) -> float:
        """Seconds from ingesting `text` to its reply leaving, minus the model server's own time."""
        assert self.model is not None
        replies, model_before = len(self.channel.sent), self.model.busy_s
        start = time.perf_counter()
        await self.gateway.ingest(self.channel.message(text))
        await self.channel.wait_for(replies + 1, 300)
        elapsed = time.perf_counter() - start
        await self.gateway.drain()
        return elapsed - (self.model.busy_s - model_before)


@asynccontextmanager
async def bench_gateway(
    backend: str = "docker",
    model_delay_s: float = 0.0,
    sandbox_toml: str = "",
    extra_toml: str = "",
    image: str = IMAGE,
    model_key: bool = False,
) -> AsyncIterator[BenchGateway]:
    tmp = Path(tempfile.mkdtemp(prefix="cgb"))
    config_dir, data_dir = tmp / "config", tmp / "data"
    config_dir.mkdir()
    if backend == "bwrap":
        import docker

        from groups.sandbox.bwrap import ROOTFS_DIR
        from groups.sandbox.image import export_rootfs

        client = docker.from_env()
        try:
            await asyncio.to_thread(export_rootfs, client, IMAGE, data_dir / ROOTFS_DIR)
        finally:
            client.close()

    def slow_echo(record: Recorded) -> tuple[int, dict[str, Any]]:
        time.sleep(model_delay_s)
        return FakeModelServer._echo(record)

    with FakeModelServer(default=slow_echo if model_delay_s else None) as model:
        config = parse(
            f'[model]\nbase_url = "{model.url}"\n'
            f'[sandbox]\nbackend = "{backend}"\nimage = "{image}"\nidle_timeout_s = 600\n{sandbox_toml}\n'
            f'[vault]\nallow_private_upstreams = ["{model.host_port}"]\n{extra_toml}\n',
            Path("bench.toml"),
        )
        channel = CaptureChannel(prefix="")
        if model_key:  # the claude runtime's CLI starts only with a (placeholder) key in its environment
            SecretStore(config_dir).add("anthropic", "sk-ant-bench", model.host_port, "x-api-key", "{value}")
        gateway = Gateway(config, config_dir, data_dir)
        await gateway.start([channel])
        try:
            yield BenchGateway(gateway, channel, model)
        finally:
            await gateway.stop(10)
