"""A channel that records what the gateway sends, for in-process gateway tests."""

from __future__ import annotations

import asyncio
import itertools
import time

from channels.base import OnMessage
from channels.console import OWNER_ID
from gateway.models import InboundMessage


class CaptureChannel:
    name = "capture"

    def __init__(self, prefix: str = "console:") -> None:
        self.prefix = prefix
        self.sent: list[tuple[str, str]] = []
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)
        self.fail_sends = False
        self.connected = False

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(self.prefix)

    async def connect(self, on_message: OnMessage) -> None:
        self.on_message = on_message
        self.connected = True

    async def disconnect(self) -> None:
        pass

    async def send(self, chat_id: str, text: str) -> None:
        if self.fail_sends:
            raise ConnectionError("channel is down")
        async with self._arrived:
            self.sent.append((chat_id, text))
            self._arrived.notify_all()

    def message(
        self, text: str, chat_id: str = "console:main", sender: str = OWNER_ID, sender_name: str = "owner"
    ) -> InboundMessage:
        return InboundMessage(
            chat_id, f"t{next(self._ids)}", sender, sender_name, text, time.time(), self.name
        )

    async def wait_for(self, count: int, timeout: float = 60) -> list[tuple[str, str]]:
        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(lambda: len(self.sent) >= count)

        await asyncio.wait_for(enough(), timeout)
        return self.sent[:count]
