"""What the chaos tests share when they drive the real `clawgate run` as a subprocess."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


def drain_stderr(proc: asyncio.subprocess.Process) -> None:
    """Keep reading the gateway's stderr in the background.

    A pipe nobody reads fills up at 64 KiB and then blocks the gateway's next log line to
    stderr — with it, the whole event loop (a full disk makes every log record a traceback).
    """
    stderr = proc.stderr
    assert stderr is not None

    async def drain() -> None:
        while await stderr.read(65536):
            pass

    proc._clawgate_drain = asyncio.create_task(drain())  # type: ignore[attr-defined]


async def wait_ready(proc: asyncio.subprocess.Process) -> None:
    """Until the gateway says ready; then its stderr keeps being read (`drain_stderr`)."""
    assert proc.stderr is not None
    seen: list[bytes] = []  # what it said, for the failure message
    while True:
        line = await asyncio.wait_for(proc.stderr.readline(), 90)
        assert line, "the gateway exited before it was ready:\n" + b"".join(seen[-40:]).decode(
            errors="replace"
        )
        seen.append(line)
        if b"ready" in line:
            break
    drain_stderr(proc)


async def wait_until(predicate: Callable[[], object], seconds: float) -> bool:
    """Poll `predicate` until it holds or `seconds` pass; False on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not predicate():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True
