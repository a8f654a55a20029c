"""Telegram's side of at-most-once delivery (see channels/delivery.py).

`HandoffRequest` marks a send as handed to the network inside `do_request`, i.e. after
python-telegram-bot's local rate limiter has let it through and right before httpx writes
it, so a reply still waiting in the limiter counts as unsent. `not_accepted` reads a
python-telegram-bot error (and the httpx error it wraps) to tell "provably not accepted"
from "outcome unknown".
"""

from __future__ import annotations

import math
import warnings
from datetime import timedelta
from typing import Any

import httpx
from telegram.error import NetworkError, RetryAfter, TelegramError, TimedOut
from telegram.request import HTTPXRequest

from channels.delivery import NotAccepted, handed_off

# httpx errors raised before any byte of the request reached Telegram.
_BEFORE_WRITE = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


class HandoffRequest(HTTPXRequest):
    async def do_request(self, *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        await handed_off()
        return await super().do_request(*args, **kwargs)


UNREADABLE_RETRY_AFTER_S = 30.0


def retry_after_s(exc: RetryAfter) -> float:
    """Seconds Telegram asks us to wait: PTB gives an int today and a timedelta in its next
    major version (and warns about it on every read). A value that is no finite number of
    seconds reads as UNREADABLE_RETRY_AFTER_S rather than breaking the caller's wait."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            value = exc.retry_after
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    except (AttributeError, TypeError, ValueError, OverflowError):
        return UNREADABLE_RETRY_AFTER_S
    return seconds if math.isfinite(seconds) else UNREADABLE_RETRY_AFTER_S


def not_accepted(exc: TelegramError) -> NotAccepted | None:
    """A `NotAccepted` when `exc` proves Telegram did not take the request, else None (unknown)."""
    cause = exc.__cause__
    if isinstance(exc, RetryAfter):
        return NotAccepted(f"rate limited by Telegram: {exc}", retry_after_s(exc))
    if isinstance(exc, TimedOut | NetworkError):
        if isinstance(cause, _BEFORE_WRITE):
            return NotAccepted(f"could not reach Telegram: {exc}")
        if cause is None or isinstance(cause, TelegramError):  # an HTTP answer (e.g. 5xx)
            return None if isinstance(exc, TimedOut) else NotAccepted(f"Telegram answered: {exc}")
        return None  # a read/write timeout or reset after the request went out
    return NotAccepted(f"Telegram refused: {exc}")  # 400/401/403/404/409: an HTTP answer
