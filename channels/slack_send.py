"""Slack's side of at-most-once delivery (see channels/delivery.py).

Posting uses its own Web API client whose connection-error retry covers only errors raised
before the request was written (no connection could be made). slack_sdk's default also
retries a server disconnect or a reset, which happen after the write, when Slack may
already have posted the message: that retry is how a reply gets posted twice.
"""

from __future__ import annotations

import contextlib

from aiohttp import ClientConnectorError
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from channels.delivery import NotAccepted


def post_client(token: str, base_url: str, max_rate_limit_retries: int) -> AsyncWebClient:
    return AsyncWebClient(
        token=token,
        base_url=base_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(error_types=[ClientConnectorError]),
            AsyncRateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries),
        ],
    )


def not_accepted(exc: Exception) -> NotAccepted | None:
    """A `NotAccepted` when `exc` proves Slack did not post the message, else None (unknown)."""
    if isinstance(exc, SlackApiError):  # Slack answered: ok=false, 4xx, 5xx or 429
        retry_after = None
        with contextlib.suppress(TypeError, ValueError, AttributeError):
            retry_after = float(exc.response.headers.get("Retry-After"))
        return NotAccepted(f"Slack answered: {exc.response.get('error', exc)}", retry_after)
    if isinstance(exc, ClientConnectorError):
        return NotAccepted(f"could not reach Slack: {exc}")
    return None
