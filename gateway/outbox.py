"""Delivering replies: recorded in the outbox first, sent once, retried when a channel fails.

`claim_outbox` flips an entry from pending to sending atomically, so two deliverers
(or a restart racing a retry) cannot send the same entry twice. A failed send goes
back to pending and is retried with backoff; after the last attempt it becomes a dead
letter. An entry found still `sending` after a crash may or may not have reached the
chat: it is dead-lettered rather than resent, because a reply is sent at most once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from channels.base import Channel
from gateway.config import RetryConfig
from gateway.failures import backoff_delay
from gateway.faults import crash_point
from gateway.store import Store

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        store: Store,
        channels: Sequence[Channel],
        retry: RetryConfig | None = None,
        notify_main: Callable[[str], Awaitable[None]] | None = None,
    ) -> None:
        self._store = store
        self._channels = list(channels)
        self._retry = retry or RetryConfig()
        self._notify_main = notify_main
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[int]] = set()

    def set_retry_policy(self, retry: RetryConfig) -> None:
        """A SIGHUP reload (gateway.reload): failures from now on use the new policy."""
        self._retry = retry

    def channel_for(self, chat_id: str) -> Channel | None:
        return next((c for c in self._channels if c.owns_chat(chat_id)), None)

    def show_typing(self, chat_id: str) -> None:
        """Best effort "typing…" while an agent works, for channels that have it (Telegram)."""
        typing = getattr(self.channel_for(chat_id), "typing", None)
        if typing is not None:
            task = asyncio.create_task(typing(chat_id))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def post(self, run_id: int | None, seq: int, chat_id: str, text: str) -> None:
        """Record a reply durably, then try to send it now."""
        entry_id = await self._store.enqueue_reply(run_id, seq, chat_id, text)
        crash_point("after_enqueue")
        if entry_id is not None:
            await self.flush([entry_id])

    async def flush(self, ids: list[int] | None = None) -> int:
        """Send pending entries (all of them when `ids` is None); returns how many were sent."""
        sent = 0
        for entry in await self._store.pending_outbox(ids):
            channel = self.channel_for(entry.chat_id)
            if channel is None:
                log.warning("no channel owns chat %s; reply %s stays queued", entry.chat_id, entry.id)
                continue
            if not await self._store.claim_outbox(entry.id):
                continue
            try:
                await channel.send(entry.chat_id, entry.text)
            except Exception as exc:
                await self._failed(entry.id, entry.chat_id, entry.attempts + 1, exc)
                continue
            crash_point("after_send")
            await self._store.settle_outbox(entry.id, sent=True)
            sent += 1
        return sent

    async def _failed(self, entry_id: int, chat_id: str, attempts: int, exc: Exception) -> None:
        reason = f"sending to {chat_id} failed: {exc.__class__.__name__}: {str(exc)[:200]}"
        if attempts < self._retry.max_attempts:
            await self._store.settle_outbox(entry_id, sent=False)
            delay = backoff_delay(self._retry, attempts)
            log.warning("%s; retry %d in %.1fs", reason, attempts, delay)
            timer = asyncio.get_running_loop().call_later(delay, self._retry_later, entry_id)
            self._timers.add(timer)
            return
        letter = await self._store.dead_letter_reply(entry_id, reason)
        log.error("reply %s became dead letter #%s: %s", entry_id, letter, reason)
        if self._notify_main is not None:
            await self._notify_main(f"⚠️ dead letter #{letter}: {reason}. /retry {letter} or /drop {letter}")

    def _retry_later(self, entry_id: int) -> None:
        task = asyncio.create_task(self.flush([entry_id]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self) -> int:
        """After a crash: entries caught mid-send are dead-lettered (never resent); returns how many."""
        return await self._store.dead_letter_unsettled_replies()

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
