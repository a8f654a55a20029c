"""What a channel tells the outbox about one send: was it handed to the network, and if it
failed, is it proven that the platform did not accept it?

A reply is sent at most once, so the outbox must tell three cases apart:
- never handed to the network (still queued, or waiting in a local rate limiter): send it
  normally, also after a restart;
- failed before sending (connection refused, DNS, an HTTP answer such as 429/4xx/5xx that
  proves the platform did not take it): `NotAccepted`, retried with backoff no sooner than
  the platform's `retry_after`;
- anything else once handed (a timeout after the request was written, a reset while
  waiting for the answer): the outcome is unknown and the reply is never resent
  automatically.

A channel calls `handed_off()` right before it writes a request to the network; the outbox
installs the hook (`handoff_hook`) for the duration of one send, which commits the mark.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

Hook = Callable[[], Awaitable[None]]
_HOOK: ContextVar[Hook | None] = ContextVar("clawgate_handoff_hook", default=None)


class NotAccepted(Exception):
    """The platform provably did not accept the request; safe to send it again later."""

    def __init__(self, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


async def handed_off() -> None:
    """Called by a channel immediately before a request goes onto the wire."""
    hook = _HOOK.get()
    if hook is not None:
        await hook()


@contextmanager
def handoff_hook(hook: Hook) -> Iterator[None]:
    token = _HOOK.set(hook)
    try:
        yield
    finally:
        _HOOK.reset(token)
