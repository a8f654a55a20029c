"""Delivering replies: recorded in the outbox first, sent once, retried when a channel fails.

`claim_outbox` flips an entry from pending to sending atomically, so two deliverers
(or a restart racing a retry) cannot send the same entry twice.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from channels.base import Channel
from gateway.store import Store

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, store: Store, channels: Sequence[Channel]) -> None:
        self._store = store
        self._channels = list(channels)

    def channel_for(self, chat_id: str) -> Channel | None:
        return next((c for c in self._channels if c.owns_chat(chat_id)), None)

    async def post(self, run_id: int | None, seq: int, chat_id: str, text: str) -> None:
        """Record a reply durably, then try to send it now."""
        entry_id = await self._store.enqueue_reply(run_id, seq, chat_id, text)
        if entry_id is not None:
            await self.flush([entry_id])

    async def flush(self, ids: list[int] | None = None) -> int:
        """Send pending entries (all of them when `ids` is None); returns how many were sent."""
        sent = 0
        for entry in await self._store.pending_outbox(ids):
            channel = self.channel_for(entry.chat_id)
            if channel is None:
                log.warning(
                    "no connected channel owns chat %s; reply %s stays queued", entry.chat_id, entry.id
                )
                continue
            if not await self._store.claim_outbox(entry.id):
                continue
            try:
                await channel.send(entry.chat_id, entry.text)
            except Exception as exc:
                log.warning(
                    "sending reply %s to %s failed (%s); it stays queued",
                    entry.id,
                    entry.chat_id,
                    exc.__class__.__name__,
                )
                await self._store.settle_outbox(entry.id, sent=False)
                continue
            await self._store.settle_outbox(entry.id, sent=True)
            sent += 1
        return sent
