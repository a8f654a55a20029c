"""A channel that records what the gateway sends, for in-process gateway tests."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Literal

from channels.base import ApprovalOutcome, ApprovalPrompt, ButtonPress, OnButton, OnMessage
from channels.console import OWNER_ID
from core.models import InboundMessage


class CaptureChannel:
    name = "capture"

    def __init__(self, prefix: str = "console:") -> None:
        self.prefix = prefix
        self.sent: list[tuple[str, str]] = []
        # Approval prompts posted (chat id, prompt) and the edits that finished them.
        self.prompts: list[tuple[str, ApprovalPrompt]] = []
        self.outcomes: list[tuple[str, str, ApprovalPrompt, ApprovalOutcome]] = []
        self._arrived = asyncio.Condition()
        self._ids = itertools.count(1)
        self.fail_sends = False
        self.fail_approvals = False
        self.connected = False
        self.on_button: OnButton | None = None

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(self.prefix)

    async def connect(self, on_message: OnMessage, on_button: OnButton | None = None) -> None:
        self.on_message = on_message
        self.on_button = on_button
        self.connected = True

    async def disconnect(self) -> None:
        pass

    async def send(self, chat_id: str, text: str) -> None:
        if self.fail_sends:
            raise ConnectionError("channel is down")
        async with self._arrived:
            self.sent.append((chat_id, text))
            self._arrived.notify_all()

    async def send_approval(self, chat_id: str, prompt: ApprovalPrompt) -> str:
        if self.fail_approvals:
            raise ConnectionError("channel is down")
        async with self._arrived:
            self.prompts.append((chat_id, prompt))
            self._arrived.notify_all()
        return f"msg-{prompt.id}"

    async def finish_approval(
        self, chat_id: str, ref: str, prompt: ApprovalPrompt, outcome: ApprovalOutcome
    ) -> None:
        async with self._arrived:
            self.outcomes.append((chat_id, ref, prompt, outcome))
            self._arrived.notify_all()

    async def press(
        self,
        approval_id: str,
        decision: Literal["approve", "deny", "allow"] = "approve",
        user_id: str = OWNER_ID,
        chat_id: str = "console:main",
        user_name: str = "owner",
    ) -> str:
        """Simulate a click on a prompt's button, as a real channel reports it; returns the toast."""
        assert self.on_button is not None, "connected without on_button"
        return await self.on_button(ButtonPress(approval_id, decision, user_id, user_name, chat_id))

    def message(
        self, text: str, chat_id: str = "console:main", sender: str = OWNER_ID, sender_name: str = "owner"
    ) -> InboundMessage:
        return InboundMessage(
            chat_id, f"t{next(self._ids)}", sender, sender_name, text, time.time(), self.name
        )

    async def wait_for(self, count: int, timeout: float = 60) -> list[tuple[str, str]]:
        await self.wait_until(lambda: len(self.sent) >= count, timeout)
        return self.sent[:count]

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 60) -> None:
        """Until `predicate()` holds after something was sent, prompted or finished."""

        async def enough() -> None:
            async with self._arrived:
                await self._arrived.wait_for(predicate)

        await asyncio.wait_for(enough(), timeout)
