"""kill -9 at every crash point of a run, then restart: nothing lost, no reply twice.

Each case runs the real `clawgate run` (console channel, real Docker, real vault) with
`CLAWGATE_CRASH_AT=<point>`, which SIGKILLs the gateway the moment it reaches that
point. A second, normal start must answer whatever was not answered, exactly once,
and remove the container the dead gateway left behind. A reply claimed but not yet handed
to the channel (`outbox_claimed`) is sent after the restart; one handed over when the
gateway died (`after_handoff`) is never resent: one dead letter, one notice.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import sys
import time
from pathlib import Path

import pytest

from gateway.app import instance_id
from gateway.faults import POINTS
from groups.sandbox.docker import LABEL_INSTANCE
from proxy.secrets import SecretStore
from tests.docker_containers import labelled
from tests.e2e.test_console import write_config

ROOT = Path(__file__).resolve().parents[2]
CLAWGATE = str(Path(sys.executable).parent / "clawgate")


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        CLAWGATE,
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
    )


def open_work(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM messages WHERE status IN ('pending', 'processing')"
        ).fetchone()
    return int(count)


@pytest.mark.parametrize("point", POINTS)
async def test_kill_at_crash_point_then_restart(
    point, dirs, model_server, sandbox_image, docker_client
) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, sandbox_image, idle_s=600)
    SecretStore(config_dir).add("anthropic", "sk-ant-crash", model_server.host_port, "x-api-key", "{value}")
    text = f"crash test at {point}"

    crashing = await start({**os.environ, "CLAWGATE_CRASH_AT": point})
    assert crashing.stdin and crashing.stdout
    crashing.stdin.write(text.encode() + b"\n")
    await crashing.stdin.drain()
    first_out, _ = await asyncio.wait_for(crashing.communicate(), 90)
    assert crashing.returncode == -signal.SIGKILL, f"did not crash at {point}"
    label = [f"{LABEL_INSTANCE}={instance_id(data_dir)}"]
    orphans = {c.id for c in labelled(docker_client, label)}

    restarted = await start(dict(os.environ))
    assert restarted.stdin and restarted.stderr
    while b"ready" not in await asyncio.wait_for(restarted.stderr.readline(), 60):
        pass  # start-up (including orphan removal) is complete once it says ready
    deadline = time.monotonic() + 90
    while open_work(data_dir / "clawgate.db") and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert open_work(data_dir / "clawgate.db") == 0, "the restarted gateway did not finish the work"
    alive = {c.id for c in labelled(docker_client, label)}
    assert not orphans & alive, "the restart did not remove the crashed gateway's container"
    restarted.stdin.close()
    second_out, _ = await asyncio.wait_for(restarted.communicate(), 60)
    assert restarted.returncode == 0

    replies = [
        line
        for line in (first_out + second_out).decode().splitlines()
        if line.startswith("Andy: echo: ") and text in line
    ]
    if point == "after_handoff":  # the reply may have left: never resent, one dead letter + notice
        notices = [line for line in second_out.decode().splitlines() if "dead letter #" in line]
        assert replies == [] and len(notices) == 1 and "/retry " in notices[0], (replies, notices)
    else:
        assert len(replies) == 1, f"{point}: expected exactly one reply, got {replies}"
    with sqlite3.connect(data_dir / "clawgate.db") as conn:
        statuses = [row[0] for row in conn.execute("SELECT status FROM messages WHERE text = ?", (text,))]
    assert statuses == ["done"], f"{point}: the message is {statuses}"
    assert labelled(docker_client, label) == []
