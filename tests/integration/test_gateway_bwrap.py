"""The gateway end to end with `[sandbox] backend = "bwrap"`: real bwrap sandboxes, real vault, real SQLite.

Only the model is fake (a scripted server on loopback speaking the Anthropic API).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from core.config import parse
from gateway.app import Gateway, StartupError
from groups.sandbox.bwrap import BwrapSandbox
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.integration.bwrap_support import alive, bwrap_rootfs, descendants, link_rootfs
from tests.integration.test_gateway_docker import config_for as docker_config_for
from tests.waits import drained

__all__ = ["bwrap_rootfs"]

REAL_KEY = "sk-ant-api03-REALSECRET-" + "x" * 20


def config_for(model: FakeModelServer, image: str, idle: float = 30):  # type: ignore[no-untyped-def]
    return docker_config_for(model, image, idle=idle, backend="bwrap")


def proc_text(pids: set[int]) -> bytes:
    """environ and cmdline of every pid, as the host sees them."""
    seen = b""
    for pid in pids:
        for name in ("environ", "cmdline"):
            with contextlib.suppress(OSError):
                seen += Path(f"/proc/{pid}/{name}").read_bytes()
    return seen


def sandbox_of(gateway: Gateway, folder: str) -> BwrapSandbox | None:
    live = gateway.pool.live.get(folder)
    return live.sandbox if live is not None else None  # type: ignore[return-value]


@pytest.fixture
async def gateway(dirs, model_server, sandbox_image, bwrap_rootfs):  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    link_rootfs(data_dir, bwrap_rootfs)
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image), config_dir, data_dir)
    await gw.start([channel])
    gw.test_channel = channel  # type: ignore[attr-defined]
    yield gw
    trees = [descendants(live.sandbox.pid) | {live.sandbox.pid} for live in gw.pool.live.values()]  # type: ignore[attr-defined]
    await gw.stop(grace_s=5)
    await asyncio.sleep(0.2)
    assert not [pid for tree in trees for pid in tree if alive(pid)]


async def test_message_reaches_agent_and_reply_returns_with_vault_injected_key(gateway, model_server) -> None:  # type: ignore[no-untyped-def]
    from groups.sandbox.bwrap import BwrapBackend

    assert isinstance(gateway.backend, BwrapBackend)
    channel: CaptureChannel = gateway.test_channel
    await gateway.ingest(channel.message("hello there"))
    [(chat, reply)] = await channel.wait_for(1)
    assert chat == "console:main"
    assert reply.startswith("echo: ") and "hello there" in reply
    request = model_server.requests[0]
    assert request.headers["x-api-key"] == REAL_KEY  # injected on the way out
    assert "<messages>" in json.dumps(request.body)

    sandbox = sandbox_of(gateway, "main")
    assert sandbox is not None
    first_id = sandbox.id
    # Nothing in the sandbox holds the key: environment and argv of every process, seen from the host.
    seen = await asyncio.to_thread(proc_text, descendants(sandbox.pid) | {sandbox.pid})
    assert b"REALSECRET" not in seen
    assert b"ANTHROPIC_API_KEY=placeholder" in seen

    await gateway.ingest(channel.message("second message"))
    await channel.wait_for(2)
    assert sandbox_of(gateway, "main").id == first_id  # warm reuse  # type: ignore[union-attr]
    await drained(gateway)
    statuses = {m.status for m in await gateway.store.messages_for_chat("console:main")}
    assert statuses == {"done"}


async def test_idle_sandbox_is_stopped(dirs, model_server, sandbox_image, bwrap_rootfs) -> None:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    link_rootfs(data_dir, bwrap_rootfs)
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image, idle=1.5), config_dir, data_dir)
    await gw.start([channel])
    try:
        await gw.ingest(channel.message("hi"))
        await channel.wait_for(1)
        sandbox = sandbox_of(gw, "main")
        assert sandbox is not None
        tree = descendants(sandbox.pid) | {sandbox.pid}
        for _ in range(100):
            if sandbox_of(gw, "main") is None:
                break
            await asyncio.sleep(0.1)
        assert sandbox_of(gw, "main") is None
        await asyncio.wait_for(sandbox.wait_exit(), 10)
        await asyncio.sleep(0.2)
        assert not [pid for pid in tree if alive(pid)]
        assert gw.queue.holders == []
        await gw.ingest(channel.message("again"))  # a new cold sandbox answers
        await channel.wait_for(2)
        assert sandbox_of(gw, "main").id != sandbox.id  # type: ignore[union-attr]
    finally:
        await gw.stop(grace_s=5)


async def test_missing_rootfs_is_a_clear_startup_error(dirs, model_server, sandbox_image) -> None:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    gw = Gateway(config_for(model_server, sandbox_image), config_dir, data_dir)
    with pytest.raises(StartupError, match="clawgate image build --backend bwrap"):
        await gw.start([CaptureChannel()])


def test_unknown_backend_is_rejected() -> None:
    from core.config import ConfigError

    with pytest.raises(ConfigError, match="sandbox.backend"):
        parse('[sandbox]\nbackend = "podman"\n', Path("x.toml"))
