"""Everything the Telegram channel sends: replies, "typing…", approval prompts and their outcome.

Kept apart from the channel (channels/telegram.py), which owns the connection and the inbound
side, because sending has rules of its own that every outgoing request must follow: a reply
is rendered to Telegram's HTML in chunks of at most `LIMIT`, and sent as plain text when
Telegram rejects the markup; a 429 `retry_after` is waited out (up to `MAX_RETRY_AFTER_S`);
a group that became a supergroup is followed (`ChatMigrated`, reported back so the
registration moves); and a first chunk that provably did not reach Telegram is
`NotAccepted` (channels/telegram_send.py), so the gateway may send it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telegram import LinkPreviewOptions, Message
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, ChatMigrated, RetryAfter, TelegramError

from channels.base import ApprovalOutcome, ApprovalPrompt
from channels.telegram_approvals import decided_text, keyboard, pending_text
from channels.telegram_chats import ChatRoutes
from channels.telegram_format import LIMIT, html_to_plain, render
from channels.telegram_send import not_accepted, retry_after_s

log = logging.getLogger("channels.telegram")

MAX_RETRY_AFTER_S = 300.0
SEND_ATTEMPTS = 5
TYPING_REFRESH_S = 4.0
TYPING_MAX_S = 300.0
NO_PREVIEW = LinkPreviewOptions(is_disabled=True)


class TelegramOutbound:
    """The channel's sending half. `bot` gives the connected bot (ConnectionError before
    connect); `migrate(old, new)` is called when Telegram says a chat moved."""

    def __init__(
        self, bot: Callable[[], Any], routes: ChatRoutes, migrate: Callable[[int, int], Awaitable[None]]
    ) -> None:
        self._bot = bot
        self._routes = routes
        self._migrate = migrate
        self.typing_tasks: dict[int, asyncio.Task[None]] = {}

    async def send(self, chat_id: str, text: str) -> None:
        chat, thread = self._routes.target(chat_id)
        self.stop_typing(chat)
        for index, chunk in enumerate(render(text, LIMIT)):
            try:
                await self._send_chunk(chat, thread, chunk)
            except TelegramError as exc:
                refused = not_accepted(exc)
                if refused is None or index > 0:  # unknown, or earlier chunks are already out
                    raise
                raise refused from exc

    async def _send_chunk(self, chat: int, thread: int | None, chunk: str) -> Message:
        try:
            return await self.call(
                lambda c: self._bot().send_message(
                    c,
                    chunk,
                    parse_mode=ParseMode.HTML,
                    message_thread_id=thread,
                    link_preview_options=LinkPreviewOptions(is_disabled=True),
                ),
                chat,
            )
        except BadRequest as exc:
            if "parse entities" not in str(exc).lower() and "tag" not in str(exc).lower():
                raise
            log.warning("telegram rejected our HTML (%s); sending plain text", exc)
        plain = html_to_plain(chunk)
        return await self.call(
            lambda c: self._bot().send_message(c, plain[:LIMIT], message_thread_id=thread), chat
        )

    async def call[T](self, request: Callable[[int], Awaitable[T]], chat: int) -> T:
        """One Bot API request: waits out 429 `retry_after`, follows a group→supergroup migration."""
        for attempt in range(1, SEND_ATTEMPTS + 1):
            try:
                return await request(chat)
            except RetryAfter as exc:
                wait = retry_after_s(exc)
                if attempt == SEND_ATTEMPTS or wait > MAX_RETRY_AFTER_S:
                    raise
                log.info("telegram: rate limited, retrying in %.0fs", wait)
                await asyncio.sleep(wait)
            except ChatMigrated as exc:
                await self._migrate(chat, exc.new_chat_id)
                chat = exc.new_chat_id
        raise AssertionError("unreachable")

    # -- "typing…" ---------------------------------------------------------------------------

    async def typing(self, chat_id: str) -> None:
        """Show "typing…" in the chat until the next reply to it (refreshed; best effort)."""
        try:
            chat, thread = self._routes.target(chat_id)
        except ValueError:
            return
        if chat in self.typing_tasks and not self.typing_tasks[chat].done():
            return

        async def refresh() -> None:
            deadline = time.monotonic() + TYPING_MAX_S
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    await self._bot().send_chat_action(chat, ChatAction.TYPING, message_thread_id=thread)
                await asyncio.sleep(TYPING_REFRESH_S)

        task = asyncio.create_task(refresh(), name="telegram-typing")
        self.typing_tasks[chat] = task
        task.add_done_callback(
            lambda t: self.typing_tasks.pop(chat) if self.typing_tasks.get(chat) is t else None
        )

    def stop_typing(self, chat: int) -> None:
        task = self.typing_tasks.pop(chat, None)
        if task is not None:
            task.cancel()

    def stop_all_typing(self) -> None:
        for task in self.typing_tasks.values():
            task.cancel()
        self.typing_tasks.clear()

    # -- approvals ---------------------------------------------------------------------------

    async def send_approval(self, chat_id: str, prompt: ApprovalPrompt) -> str:
        chat, thread = self._routes.target(chat_id)
        body, buttons = pending_text(prompt), keyboard(prompt)
        message = await self.call(
            lambda c: self._bot().send_message(
                c,
                body,
                parse_mode=ParseMode.HTML,
                reply_markup=buttons,
                message_thread_id=thread,
                link_preview_options=NO_PREVIEW,
            ),
            chat,
        )
        return f"{message.chat.id}:{message.message_id}"

    async def finish_approval(self, ref: str, prompt: ApprovalPrompt, outcome: ApprovalOutcome) -> None:
        chat_text, _, message_text = ref.rpartition(":")
        chat, message_id = int(chat_text), int(message_text)
        chat = self._routes.current(chat)
        body = decided_text(prompt, outcome)
        try:
            # editMessageText without reply_markup removes the inline keyboard
            await self.call(
                lambda c: self._bot().edit_message_text(
                    body,
                    chat_id=c,
                    message_id=message_id,
                    parse_mode=ParseMode.HTML,
                    link_preview_options=NO_PREVIEW,
                ),
                chat,
            )
        except BadRequest as exc:
            if "not modified" not in str(exc).lower():
                raise
