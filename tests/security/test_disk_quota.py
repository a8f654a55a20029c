"""Break 5: a hostile agent fills its folder (and the disk the database lives on).

The agent writes with `dd` in a loop from inside its real sandbox. Its writer is bounded (it
stops by itself after a few hundred MB), so against a gateway without limits the test fails
instead of filling the machine's disk.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.security.conftest import HOSTILE, MAIN_CHAT, Tier, add_model_key, tool_result

QUOTA_MB = 16
MB = 1024 * 1024


def fill(megabytes: int, chunk_mb: int = 4) -> str:
    """Write up to `megabytes` in `chunk_mb` files, then idle (a bounded `dd` loop)."""
    return (
        f"i=0; while [ $i -lt {megabytes // chunk_mb} ]; do "
        f"dd if=/dev/zero of=/workspace/group/fill-$i bs=1M count={chunk_mb} 2>/dev/null; i=$((i+1)); "
        "done; sleep 30; echo finished-writing"
    )


class Driver:
    """Scripts the hostile agent's shell tool and watches both chats."""

    def __init__(self, gw: Gateway, model: FakeModelServer) -> None:
        self.gw = gw
        self.model = model
        self.channel: CaptureChannel = gw.test_channel  # type: ignore[attr-defined]
        self.ids = itertools.count(1)

    def texts(self, chat: str) -> list[str]:
        return [text for c, text in self.channel.sent if c == chat]

    async def say(self, command: str | None, timeout_s: int = 120) -> tuple[str, str | None]:
        """One hostile message (running `command` if given); its reply and the tool's output."""
        tool_id = f"toolu_disk_{next(self.ids)}"
        if command is not None:
            call: dict[str, Any] = {
                "id": f"msg_{tool_id}",
                "type": "message",
                "role": "assistant",
                "model": "fake",
                "content": [
                    {
                        "type": "tool_use",
                        "id": tool_id,
                        "name": "shell",
                        "input": {"command": command, "timeout_s": timeout_s},
                    }
                ],
                "stop_reason": "tool_use",
                "usage": {"input_tokens": 1, "output_tokens": 1},
            }
            self.model.responses.append((200, call))
        before = len(self.texts(HOSTILE.chat_id))
        await self.gw.ingest(self.channel.message(f"@Andy {tool_id}", chat_id=HOSTILE.chat_id))
        await self.channel.wait_until(lambda: len(self.texts(HOSTILE.chat_id)) > before, timeout_s + 60)
        await self.gw.drain()
        self.model.responses.clear()  # a refused turn never asked the model for its script
        result = None
        for record in self.model.requests:
            result = tool_result(record.body, tool_id) or result
        return self.texts(HOSTILE.chat_id)[before], result


async def gateway_with(
    tier: Tier, dirs: tuple[Path, Path], model: FakeModelServer, sandbox: str
) -> AsyncIterator[Driver]:
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model)
    channel = CaptureChannel()
    gw = Gateway(tier.config(model, sandbox=sandbox), config_dir, data_dir)
    await gw.start([channel])
    await gw.registry.register(HOSTILE)
    gw.test_channel = channel  # type: ignore[attr-defined]
    try:
        yield Driver(gw, model)
    finally:
        await gw.stop(grace_s=5)


@pytest.fixture
async def quota_driver(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer
) -> AsyncIterator[Driver]:
    sandbox = f"group_quota_mb = {QUOTA_MB}\ndisk_check_s = 0.2\nmin_free_mb = 64\n"
    async for driver in gateway_with(tier, dirs, model_server, sandbox):
        yield driver


def folder_bytes(path: Path) -> int:
    return sum(p.lstat().st_blocks * 512 for p in path.rglob("*"))


async def test_agent_writing_past_its_quota_is_stopped_refused_and_reported_once(
    tier: Tier, quota_driver: Driver
) -> None:
    d = quota_driver
    folder = d.gw.data_dir / "groups" / HOSTILE.folder

    # 1. The writer crosses the quota mid-turn: its sandbox is stopped and the chat is told.
    reply, output = await d.say(fill(256))
    assert "over its disk quota" in reply and f"of its {QUOTA_MB} MB quota" in reply, (reply, output)
    assert "The assistant was stopped" in reply, reply
    assert output is None or "finished-writing" not in output, output
    assert HOSTILE.folder not in d.gw.pool.live
    assert folder_bytes(folder) < 256 * MB  # stopped well before the writer was done
    notices = [t for t in d.texts(MAIN_CHAT) if "over its disk quota" in t]
    assert len(notices) == 1 and "group hostile" in notices[0], d.texts(MAIN_CHAT)

    # 2. While over, every turn is refused up front (no sandbox starts); main is not told again.
    requests = len(d.model.requests)
    reply, output = await d.say("echo should-not-run")
    assert "over its disk quota" in reply and "Nothing was run" in reply and output is None, reply
    assert len(d.model.requests) == requests and HOSTILE.folder not in d.gw.pool.live
    assert len([t for t in d.texts(MAIN_CHAT) if "over its disk quota" in t]) == 1

    # 3. Back under (the owner cleaned up): the group runs again.
    for junk in folder.glob("fill-*"):
        junk.unlink()
    reply, output = await d.say("echo back-to-work")
    assert output is not None and "back-to-work" in output, (reply, output)

    # 4. Over again later: the main chat is told again (once per crossing).
    reply, _ = await d.say(fill(256))
    assert "over its disk quota" in reply, reply
    assert len([t for t in d.texts(MAIN_CHAT) if "over its disk quota" in t]) == 2


async def test_one_runaway_file_is_cut_by_the_kernel_at_the_quota(tier: Tier, quota_driver: Driver) -> None:
    """RLIMIT_FSIZE = group_quota_mb: a single writer cannot overshoot even within one check."""
    d = quota_driver
    reply, output = await d.say(
        "dd if=/dev/zero of=/workspace/group/one bs=1M count=200 2>&1; sleep 30; echo finished-writing"
    )
    assert "over its disk quota" in reply, (reply, output)
    size = (d.gw.data_dir / "groups" / HOSTILE.folder / "one").stat().st_size
    assert 0 < size <= QUOTA_MB * MB, size


async def test_agent_cannot_push_the_data_dir_below_its_free_space_floor(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer
) -> None:
    """The floor sits 96 MB under today's free space; the agent's quota is far above that."""
    free_mb = shutil.disk_usage(dirs[1].parent).free // MB
    sandbox = f"group_quota_mb = 100000\ndisk_check_s = 0.2\nmin_free_mb = {free_mb - 96}\n"
    async for d in gateway_with(tier, dirs, model_server, sandbox):
        reply, output = await d.say(fill(512, chunk_mb=8))
        assert "disk is almost full" in reply, (reply, output)
        assert HOSTILE.folder not in d.gw.pool.live
        notices = [t for t in d.texts(MAIN_CHAT) if "free" in t and "floor" in t]
        assert len(notices) == 1, d.texts(MAIN_CHAT)
        # No turn starts while below the floor, and main is not told twice.
        reply, output = await d.say("echo should-not-run")
        assert "disk is almost full" in reply and output is None
        assert len([t for t in d.texts(MAIN_CHAT) if "free" in t and "floor" in t]) == 1
        folder = d.gw.data_dir / "groups" / HOSTILE.folder
        for junk in folder.glob("fill-*"):
            os.unlink(junk)
