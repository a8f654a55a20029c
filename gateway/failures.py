"""Which failures are worth retrying, and when.

Transient: the Docker engine or the vault hiccuped, the model answered 429/5xx or was
unreachable, the turn timed out or the container died, a channel send failed. These
are retried with exponential backoff and jitter. Everything else (the model refused
the request, a policy said no, a malformed request) is terminal: retrying would only
repeat it.
"""

from __future__ import annotations

import random
import re

from gateway.config import RetryConfig

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 529}
_TRANSIENT_WORDS = (
    "unreachable",
    "timed out",
    "timeout",
    "did not finish",
    "stopped unexpectedly",
    "connection",
    "overloaded",
)


def is_transient(error: str) -> bool:
    match = re.search(r"\bHTTP (\d{3})\b", error)
    if match:
        status = int(match.group(1))
        return status in _TRANSIENT_STATUS or status >= 500
    lowered = error.lower()
    return any(word in lowered for word in _TRANSIENT_WORDS)


def backoff_delay(policy: RetryConfig, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): exponential, capped, with ±50% jitter."""
    base = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return base * (0.5 + (rng or random).random())
