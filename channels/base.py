"""The contract every chat channel (console, Telegram, Slack) fulfils.

Channels only translate: they normalize inbound messages into `InboundMessage`
(namespaced chat ids, `is_from_bot` set for the bot's own output) and format and
chunk outbound text. Routing, storage and authorization live in the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from gateway.models import InboundMessage

OnMessage = Callable[[InboundMessage], Awaitable[object]]


@runtime_checkable
class Channel(Protocol):
    name: str
    connected: bool  # for /status; a channel keeps it true while it can receive and send

    async def connect(self, on_message: OnMessage) -> None:
        """Start receiving; every inbound message is awaited through `on_message` (which persists it)."""

    async def disconnect(self) -> None:
        """Stop receiving and release resources; idempotent."""

    async def send(self, chat_id: str, text: str) -> None:
        """Deliver text to a chat this channel owns; raises on failure so the outbox retries."""

    def owns_chat(self, chat_id: str) -> bool:
        """Whether `chat_id` (e.g. `console:main`, `tg:-100…`) belongs to this channel."""
