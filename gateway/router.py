"""Where an inbound message goes: persisted first, then maybe queued for its group.

The order matters for invariant 7: the message is committed before anything else
looks at it, so a crash after `ingest` returns loses nothing. Who may trigger a turn at all
(the group's sender policy, admins only in the main chat) is `gateway.senders`' decision,
taken before the commit so the stored status is final or `held`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from functools import lru_cache

from core.models import Group, InboundMessage
from gateway import commands
from gateway.faults import crash_point
from gateway.senders import SenderGate
from gateway.store import Store

CommandHandler = Callable[[commands.Command, InboundMessage, Group | None], Awaitable[None]]


@lru_cache(maxsize=256)
def trigger_pattern(trigger: str) -> re.Pattern[str]:
    """`@Andy` matches as a whole word anywhere, case-insensitively (`@andy,` yes; `@andyx` no)."""
    return re.compile(rf"(?<![\w@]){re.escape(trigger)}(?!\w)", re.IGNORECASE)


def classify(message: InboundMessage, group: Group | None) -> str:
    """The message's initial status; see the lifecycle in `gateway.store.messages`."""
    if message.is_from_bot:
        return "bot"
    if group is None:
        return "stored"
    if group.is_main or not group.requires_trigger or trigger_pattern(group.trigger).search(message.text):
        return "pending"
    return "context"


class Router:
    """Persist every inbound message, then wake the group's lane if it asks for an answer."""

    def __init__(
        self,
        store: Store,
        group_for_chat: Callable[[str], Group | None],
        wake: Callable[[str], None],
        on_command: CommandHandler | None = None,
        senders: SenderGate | None = None,
    ) -> None:
        self._store = store
        self._group_for_chat = group_for_chat
        self._wake = wake
        self._on_command = on_command
        self._senders = senders

    async def ingest(self, message: InboundMessage) -> str:
        group = self._group_for_chat(message.chat_id)
        command = None if message.is_from_bot else commands.parse(message.text)
        status = "command" if command is not None else classify(message, group)
        if self._senders is not None:
            status = self._senders.classify(message, group, status)
        await self._store.ingest(message, status)
        crash_point("after_ingest")
        if command is not None and self._on_command is not None:
            await self._on_command(command, message, group)  # command text never reaches an agent
        elif status == "pending" and group is not None:
            self._wake(group.folder)
        elif status == "held" and group is not None and self._senders is not None:
            await self._senders.after_ingest(group, message)  # asks the owner, once per sender
        return status
