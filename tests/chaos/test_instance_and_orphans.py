"""One gateway per data dir, and no vault outlives its gateway — against real processes.

Each case runs the real `clawgate run` (console channel on a pipe, real Docker, the real
vault subprocess) and then does what an operator or the OOM killer does: starts a
second copy, or `kill -9`s the gateway. The checks are on the host afterwards: which
processes are alive, who answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

from proxy.process import PID_FILE
from proxy.secrets import SecretStore
from tests.chaos.support import wait_ready
from tests.e2e.test_console import write_config
from tests.e2e.test_crash_recovery import start


def alive(pid: int) -> bool:
    """Alive and not a zombie (a killed child of ours stays a zombie until reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def vault_pid(data_dir: Path) -> int:
    return int((data_dir / "vault" / PID_FILE).read_text())


async def gone_within(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    return not alive(pid)


def setup(dirs, model_server, image: str) -> Path:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, image, idle_s=600)
    SecretStore(config_dir).add("anthropic", "sk-ant-chaos", model_server.host_port, "x-api-key", "{value}")
    return data_dir


async def test_second_instance_on_same_data_dir_is_refused_naming_the_first(
    dirs, model_server, sandbox_image
) -> None:
    data_dir = setup(dirs, model_server, sandbox_image)
    first = await start(dict(os.environ))
    try:
        await wait_ready(first)
        first_vault = vault_pid(data_dir)
        second = await start(dict(os.environ))
        _, err = await asyncio.wait_for(second.communicate(b""), 60)
        assert second.returncode not in (0, None)
        text = err.decode()
        assert f"pid {first.pid}" in text and "already running" in text, text
        assert "Traceback" not in text
        # the refused copy touched nothing the first one owns
        assert alive(first_vault) and vault_pid(data_dir) == first_vault
        assert first.stdin and first.stdout
        first.stdin.write(b"still there?\n")
        await first.stdin.drain()
        reply = await asyncio.wait_for(first.stdout.readline(), 90)
        assert reply.startswith(b"Andy:"), reply
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
        await first.wait()


async def test_kill_9_of_the_gateway_never_leaves_its_vault_running(
    dirs, model_server, sandbox_image
) -> None:
    data_dir = setup(dirs, model_server, sandbox_image)
    for _ in range(3):
        gateway = await start(dict(os.environ))
        await wait_ready(gateway)
        vault = vault_pid(data_dir)
        assert alive(vault)
        gateway.kill()
        await gateway.wait()
        assert await gone_within(vault, 20), f"vault pid {vault} outlived its gateway"
    # and the data dir is free again: a new start is not refused
    gateway = await start(dict(os.environ))
    try:
        await wait_ready(gateway)
    finally:
        gateway.kill()
        await gateway.wait()


async def test_a_vault_that_could_not_notice_its_gateway_died_is_removed_at_the_next_start(
    dirs, model_server, sandbox_image
) -> None:
    data_dir = setup(dirs, model_server, sandbox_image)
    gateway = await start(dict(os.environ))
    await wait_ready(gateway)
    stale = vault_pid(data_dir)
    os.kill(stale, signal.SIGSTOP)  # frozen: it cannot see the lifeline close
    gateway.kill()
    await gateway.wait()
    try:
        assert alive(stale)
        restarted = await start(dict(os.environ))
        try:
            await wait_ready(restarted)
            assert not alive(stale), "the stale vault was not removed at start-up"
            assert vault_pid(data_dir) != stale and alive(vault_pid(data_dir))
        finally:
            restarted.kill()
            await restarted.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stale, signal.SIGKILL)
