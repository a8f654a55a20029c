"""Which failures are worth retrying, and when.

Transient: the Docker engine or the vault hiccuped, the model answered 429/5xx, a
malformed (unparseable) response, or was unreachable, the turn timed out or the container
died, a channel send failed. A model's `Retry-After` travels in the error text ("retry
after Ns", see groups/agent/transport.py) and the retry waits at least that long. These
are retried with exponential backoff and jitter. Everything else (the model refused
the request, a policy said no, a budget is used up, a malformed request) is terminal: retrying would only
repeat it.
"""

from __future__ import annotations

import random
import re

from core.config import RetryConfig

_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504, 529}
_TRANSIENT_WORDS = (
    "unreachable",
    "timed out",
    "timeout",
    "did not finish",
    "stopped unexpectedly",
    "connection",
    "overloaded",
    "bad response",  # a malformed 2xx body: the next call usually parses (like a 5xx)
)
BUDGET_REFUSAL = "clawgate budget:"  # proxy/budget.py; relayed by groups/agent/transport.py
_RETRY_AFTER = re.compile(r"\bretry after (\d+(?:\.\d+)?)s\b")


def is_transient(error: str) -> bool:
    if error.startswith(BUDGET_REFUSAL):  # the vault refused a model call: over budget, final
        return False
    match = re.search(r"\bHTTP (\d{3})\b", error)
    if match:
        status = int(match.group(1))
        return status in _TRANSIENT_STATUS or status >= 500
    lowered = error.lower()
    return any(word in lowered for word in _TRANSIENT_WORDS)


def retry_after_s(error: str) -> float | None:
    """The wait a model asked for (its `Retry-After`), if the error carries one."""
    match = _RETRY_AFTER.search(error)
    return float(match.group(1)) if match else None


def backoff_delay(policy: RetryConfig, attempt: int, rng: random.Random | None = None) -> float:
    """Delay before retry number `attempt` (1-based): exponential, capped, with ±50% jitter."""
    base: float = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    return base * (0.5 + (rng or random).random())
