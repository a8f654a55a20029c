"""`[retention]`: old message bodies leave the database, at start-up and then once a day.

The database holds every message of every chat the bot is in, including chats nobody
registered; kept forever that is a growing store of other people's words the gateway never
uses again. What the agent still needs is never pruned: messages waiting for an answer, the
untriggered context the next turn gets (the newest `context_messages` of each chat are kept
whatever their age) and failed messages that `/retry` revives (see Store.prune_messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from core.config import Config
from gateway.store import Store

log = logging.getLogger(__name__)

DAY_S = 86400.0


async def prune_once(store: Store, config: Config, now: float | None = None) -> tuple[int, int]:
    """Apply the policy once; return (bodies emptied, rows deleted)."""
    policy = config.retention
    now = time.time() if now is None else now
    emptied, deleted = await store.prune_messages(
        closed_before=now - policy.message_days * DAY_S if policy.message_days else None,
        unregistered_before=now - policy.unregistered_days * DAY_S if policy.unregistered_days else None,
        keep_last=config.context_messages,
    )
    if emptied or deleted:
        log.info(
            "retention: emptied %d old message bodies, deleted %d messages of unregistered chats",
            emptied,
            deleted,
        )
    return emptied, deleted


class Retention:
    """Runs `prune_once` now and every `interval_s` until stopped; a failure waits for the next day."""

    def __init__(self, store: Store, config: Config, interval_s: float = DAY_S) -> None:
        self._store = store
        self._config = config
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="retention")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await prune_once(self._store, self._config)
            except Exception:  # a full disk or a locked database: try again next time
                log.exception("retention: pruning old messages failed")
            await asyncio.sleep(self._interval_s)
