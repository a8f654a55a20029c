"""Bounded versions of the gateway's open-ended waits, for tests.

`Gateway.drain()` waits, by design, until every accepted message is answered; a test whose
turn never finishes would wait there forever (a sandbox that blocked on an IPC reply did,
once, and stalled CI). Every wait in a test is bounded and says what it waited for.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def drained(gateway: Any, timeout_s: float = 300, what: str = "the accepted messages") -> None:
    """`gateway.drain()`, failing the test after `timeout_s` with what was still pending."""
    try:
        await asyncio.wait_for(gateway.drain(), timeout_s)
    except TimeoutError:
        live = getattr(getattr(gateway, "pool", None), "live", {})
        raise AssertionError(
            f"the gateway did not finish {what} within {timeout_s:g}s (live sandboxes: {sorted(live)})"
        ) from None


async def prompt_posted(gateway: Any, approval_id: str, timeout_s: float = 15) -> None:
    """Until the gateway has stored where it posted approval `approval_id` (its post returned).

    A channel fake shows the prompt before its answer reaches the gateway; a stop in between
    cuts the post, and a prompt the gateway cannot know it posted is denied (fail closed).
    A test that stops the gateway "while the owner has the prompt" waits for this first.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        record = await gateway.store.approval(approval_id)
        if record is not None and record.message_ref is not None:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the gateway never stored where it posted approval {approval_id}")
