"""Telegram long polling that acknowledges an update only after it is stored.

Telegram forgets every update below the `offset` of the next `getUpdates` call. PTB's
`Updater` computes that offset when it *fetches* a batch and polls again while the
handlers are still working on it, so a kill at that moment lost whole batches that
Telegram already considered delivered (invariant 11 in docs/ARCHITECTURE.md). This loop
asks for the next batch only after the channel has handled — committed — the current
one; if handling fails (the database cannot write: full disk, I/O error), the offset
stays at the first update that did not land, and Telegram delivers it and everything
after it again after a back-off. Updates handled twice that way are harmless: the store
ignores a message it already has (same chat, same message id).

A poison update — one the channel cannot even read — must not wedge the bot, so the
channel reports it as handled (and logs it); only a failure to *store* holds the offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from telegram import Update
from telegram.error import Conflict, Forbidden, InvalidToken, RetryAfter, TelegramError

from channels.telegram_send import retry_after_s

log = logging.getLogger(__name__)

BATCH_LIMIT = 100  # Telegram's maximum per getUpdates
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 30.0

# Handles one batch in order; returns how many leading updates are durably handled
# (len(batch) when all are). Raising counts as zero handled.
HandleBatch = Callable[[Sequence[Update]], Awaitable[int]]


class UpdatePoller:
    def __init__(
        self,
        bot: Any,
        handle_batch: HandleBatch,
        *,
        timeout_s: int,
        allowed_updates: Sequence[str],
    ) -> None:
        self._bot = bot
        self._handle_batch = handle_batch
        self._timeout_s = timeout_s
        self._allowed = list(allowed_updates)
        self._offset: int | None = None  # next update id to ask for; all below are stored
        self._confirmed: int | None = None  # the offset Telegram has last been sent
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # A webhook left set makes getUpdates fail with Conflict; pending updates are kept.
        await self._bot.delete_webhook(drop_pending_updates=False)
        self._task = asyncio.create_task(self._run(), name="telegram-poll")

    async def stop(self) -> None:
        """Stop polling, then tell Telegram what was stored since the last poll.

        Without that last call the final batch would be delivered again at the next
        start (harmless, but it replays admin commands into the log).
        """
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._offset is not None and self._offset != self._confirmed:
            with contextlib.suppress(Exception):
                await self._bot.get_updates(offset=self._offset, limit=1, timeout=0)

    async def _run(self) -> None:
        backoff = BACKOFF_INITIAL_S
        while True:
            try:
                updates = await self._bot.get_updates(
                    offset=self._offset,
                    limit=BATCH_LIMIT,
                    timeout=self._timeout_s,
                    allowed_updates=self._allowed,
                )
            except asyncio.CancelledError:
                raise
            except RetryAfter as exc:
                await asyncio.sleep(_wait_s(exc))
                continue
            except (InvalidToken, Forbidden) as exc:
                log.error("telegram: polling refused (%s); check telegram.token", type(exc).__name__)
                await asyncio.sleep(BACKOFF_MAX_S)
                continue
            except Conflict:
                log.error("telegram: another process is polling this bot or a webhook is set")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            except TelegramError as exc:  # network errors, timeouts, 5xx
                log.warning("telegram: getUpdates failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            self._confirmed = self._offset
            if not updates:
                backoff = BACKOFF_INITIAL_S
                continue
            try:
                handled = await self._handle_batch(updates)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("telegram: handling a batch of %d update(s) failed", len(updates))
                handled = 0
            handled = max(0, min(handled, len(updates)))
            if handled:
                self._offset = updates[handled - 1].update_id + 1
            if handled < len(updates):  # not stored: Telegram keeps it; ask again after a pause
                self._offset = updates[handled].update_id
                log.warning(
                    "telegram: %d update(s) not stored; they stay with Telegram, retrying in %.0fs",
                    len(updates) - handled,
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
            else:
                backoff = BACKOFF_INITIAL_S


def _wait_s(exc: RetryAfter) -> float:
    """Telegram's asked-for pause, kept between 1 s and 5 min so a hostile or broken answer
    neither spins the poll loop nor parks it for a day."""
    return min(max(retry_after_s(exc), 1.0), 300.0)
