"""Crash points for recovery tests.

`CLAWGATE_CRASH_AT=<point>` makes the gateway SIGKILL itself the first time it reaches
that point, so a test can crash it at an exact place in a run (the same as `kill -9`
arriving at that instant) and then prove that a restart loses nothing and sends no
reply twice. Unset (always, outside tests) it costs one string comparison.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "after_ingest",  # the message is committed, nothing else happened
    "after_claim",  # a run owns the message, no sandbox yet
    "agent_running",  # the agent has the turn and is working on it
    "after_result",  # the agent answered, the answer is not in the outbox yet
    "after_enqueue",  # the reply is in the outbox, not sent
    "outbox_claimed",  # a deliverer took the reply; it may wait in a rate limiter, not on the wire
    "after_handoff",  # the reply is marked handed to the network, the request is not written yet
    "after_send",  # the reply was sent, not yet marked sent
    "after_finish",  # the run is closed
)

_ARMED = os.environ.get("CLAWGATE_CRASH_AT", "")
if _ARMED and _ARMED not in POINTS:
    raise SystemExit(f"CLAWGATE_CRASH_AT={_ARMED!r} is not one of {', '.join(POINTS)}")


def crash_point(name: str) -> None:
    if name == _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
