"""Delivering replies: recorded in the outbox first, sent at most once, retried only when safe.

An entry moves pending -> sending (claimed, `claim_outbox` is atomic so two deliverers
cannot both take it) -> handed (committed by the channel's `handed_off()` right before the
request is written to the network) -> sent. Everything before `handed` — the queue, a
channel's local rate limiter — is "not yet sent": a failure or a crash there sends it again
normally. Once handed, only a failure that proves the platform did not accept the request
(`channels.delivery.NotAccepted`: connection refused, a 429/4xx/5xx answer) is retried, with
backoff and never sooner than the platform's `retry_after`. Any other failure once handed (a
timeout after the request was written) has an unknown outcome: the entry becomes a dead
letter with one notice to the main chat naming `/retry <id>`, and is never resent on its own.
A notice that fails is dead-lettered without a notice of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from channels.base import Channel
from channels.delivery import NotAccepted, handoff_hook
from core.config import RetryConfig
from gateway.failures import backoff_delay
from gateway.faults import crash_point
from gateway.store import Store

log = logging.getLogger(__name__)

MainChat = Callable[[], str | None]


class Outbox:
    def __init__(
        self,
        store: Store,
        channels: Sequence[Channel],
        retry: RetryConfig | None = None,
        main_chat: MainChat | None = None,
    ) -> None:
        self._store = store
        self._channels = list(channels)
        self._retry = retry or RetryConfig()
        self._main_chat = main_chat or (lambda: None)
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

    async def notice(self, chat_id: str, text: str) -> None:
        """A notice to the owner: delivered like a reply, but never the subject of another notice."""
        entry_id = await self._store.enqueue_notice(chat_id, text)
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
            crash_point("outbox_claimed")
            handed = False

            async def mark(entry_id: int = entry.id) -> None:
                nonlocal handed
                if not handed:
                    await self._store.mark_outbox_handed(entry_id)
                    handed = True
                    crash_point("after_handoff")

            try:
                with handoff_hook(mark):
                    await channel.send(entry.chat_id, entry.text)
            except Exception as exc:
                await self._failed(entry.id, entry.chat_id, entry.attempts + 1, exc, handed)
                continue
            crash_point("after_send")
            await self._store.settle_outbox(entry.id, sent=True)
            sent += 1
        return sent

    async def _failed(self, entry_id: int, chat_id: str, attempts: int, exc: Exception, handed: bool) -> None:
        reason = f"sending to {chat_id} failed: {exc.__class__.__name__}: {str(exc)[:200]}"
        if handed and not isinstance(exc, NotAccepted):
            await self._dead_letter(entry_id, f"delivery to {chat_id} is unknown ({reason}); not resent")
            return
        if attempts < self._retry.max_attempts:
            await self._store.settle_outbox(entry_id, sent=False)
            delay = backoff_delay(self._retry, attempts)
            if isinstance(exc, NotAccepted) and exc.retry_after_s is not None:
                delay = max(delay, exc.retry_after_s)  # never sooner than the platform asked
            log.warning("%s; retry %d in %.1fs", reason, attempts, delay)
            timer = asyncio.get_running_loop().call_later(delay, self._retry_later, entry_id)
            self._timers.add(timer)
            return
        await self._dead_letter(entry_id, reason)

    async def _dead_letter(self, entry_id: int, reason: str) -> None:
        main = self._main_chat()
        notify = main is not None and not await self._store.is_notice(entry_id)

        def notice(letter: int) -> tuple[str, str]:
            assert main is not None
            return main, f"⚠️ dead letter #{letter}: {reason[:300]}. /retry {letter} or /drop {letter}"

        letter, notice_id = await self._store.dead_letter_reply_with_notice(
            entry_id, reason, notice if notify else None
        )
        log.error("reply %s became dead letter #%s: %s", entry_id, letter, reason)
        if notice_id is not None:
            await self.flush([notice_id])

    def _retry_later(self, entry_id: int) -> None:
        task = asyncio.create_task(self.flush([entry_id]))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def recover(self) -> tuple[int, int]:
        """After a crash: entries never handed to the network go back to pending (sent normally);
        entries handed but unsettled may have been delivered, so each becomes a dead letter with
        one notice (queued; `start()` flushes it). Returns (requeued, dead-lettered)."""
        requeued = await self._store.requeue_unhanded_replies()
        handed = await self._store.handed_replies()
        main = self._main_chat()
        for entry_id, chat_id, is_notice in handed:
            reason = f"delivery to {chat_id} is unknown: the gateway stopped while sending it"

            def notice(letter: int, reason: str = reason) -> tuple[str, str]:
                assert main is not None
                return main, f"⚠️ dead letter #{letter}: {reason}. /retry {letter} or /drop {letter}"

            wanted = main is not None and not is_notice
            await self._store.dead_letter_reply_with_notice(entry_id, reason, notice if wanted else None)
        return requeued, len(handed)

    def close(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
