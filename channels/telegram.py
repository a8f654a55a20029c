"""Telegram through python-telegram-bot (>= 22): long polling by default, webhook optional.

Webhook mode always checks Telegram's secret token (`channels.telegram_webhook`); without one
in the config, one is generated and kept in the config dir.

Chat ids are `tg:<chat id>[:<topic id>]`; which topic a reply goes to, and where a
migrated group went, is `channels/telegram_chats.py`. Everything the channel sends (reply
chunks, 429 waits, "typing…", approval prompts) is `channels/telegram_outbound.py`; this
module connects, receives, and stores each update before it is acknowledged.

A mention of `@<bot username>` or a reply to one of the bot's messages is the trigger:
the mention is removed and `@<assistant name>` put in front, so the gateway's trigger
rule (which knows only the assistant name) matches. A group that becomes a supergroup
changes its chat id; `on_migrate(old, new)` tells the gateway so the registration moves.

The bot token is used only to build the Bot API URLs; it is never logged (the `httpx`
request log, which would print those URLs, is silenced) and never given to a container.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from telegram import Message, Update
from telegram.error import InvalidToken, NetworkError
from telegram.ext import Application

try:
    from telegram.ext import AIORateLimiter as _AIORateLimiter

    AIORateLimiter: type[_AIORateLimiter] | None = _AIORateLimiter
except ImportError:  # pragma: no cover - the extra is a dependency; without it we only honour 429s
    AIORateLimiter = None

from channels.base import (
    ApprovalOutcome,
    ApprovalPrompt,
    ButtonPress,
    ChannelUnavailable,
    GroupInbox,
    OnButton,
    OnMessage,
)
from channels.telegram_approvals import parse_callback
from channels.telegram_attachments import save_attachment
from channels.telegram_chats import PREFIX, ChatRoutes, parse_chat_id
from channels.telegram_commands import sync_commands
from channels.telegram_format import apply_trigger
from channels.telegram_outbound import TelegramOutbound
from channels.telegram_poll import UpdatePoller
from channels.telegram_send import HandoffRequest
from channels.telegram_webhook import WebhookServer, check_secret, webhook_secret
from core import redaction
from core.models import InboundMessage

if TYPE_CHECKING:
    from core.config import TelegramConfig

log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """An update could not be stored; it must not be acknowledged."""


WEBHOOK_PATH = "/clawgate-telegram"

OnMigrate = Callable[[str, str], Awaitable[None] | None]

logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines contain the token-bearing URL


class TelegramChannel:
    name = "telegram"

    def __init__(
        self,
        token: str,
        assistant_name: str,
        *,
        base_url: str = "https://api.telegram.org",
        mode: str = "polling",
        webhook_url: str | None = None,
        webhook_listen: str = "127.0.0.1",
        webhook_port: int = 8443,
        webhook_secret_token: str | None = None,
        data_dir: Path | None = None,
        commands: Sequence[tuple[str, str]] | None = None,
        on_migrate: OnMigrate | None = None,
        group_inbox: GroupInbox | None = None,
        max_file_bytes: int = 20 * 1024 * 1024,
        poll_timeout_s: float = 10.0,
        send_timeout_s: float = 5.0,
    ) -> None:
        if mode not in ("polling", "webhook"):
            raise ValueError(f"telegram mode must be polling or webhook, not {mode!r}")
        if mode == "webhook":  # without a secret, anyone who can reach the URL forges updates
            check_secret(webhook_secret_token or "")
        self._token = token
        redaction.register([token, webhook_secret_token or ""])  # PTB puts the token in URLs and errors
        self._assistant = assistant_name
        self._base_url = base_url.rstrip("/")
        self._mode = mode
        self._webhook = (webhook_url, webhook_listen, webhook_port, webhook_secret_token)
        self._data_dir = data_dir
        self._commands = list(commands) if commands is not None else None
        self._on_migrate = on_migrate
        self._group_inbox = group_inbox
        self._max_file_bytes = max_file_bytes
        self._poll_timeout = poll_timeout_s
        self._send_timeout = send_timeout_s
        self._app: Application[Any, Any, Any, Any, Any, Any] | None = None
        self._server: WebhookServer | None = None
        self._poller: UpdatePoller | None = None
        self._unavailable_told: set[str] = set()
        self._on_message: OnMessage | None = None
        self._on_button: OnButton | None = None
        self._routes = ChatRoutes()
        self._out = TelegramOutbound(lambda: self._bot, self._routes, self._migrate)
        self._tasks: set[asyncio.Task[None]] = set()
        self.bot_id: int | None = None
        self.bot_username: str | None = None
        self.connected = False

    @classmethod
    def from_config(
        cls,
        config: TelegramConfig,
        assistant_name: str,
        data_dir: Path,
        *,
        config_dir: Path | None = None,
        group_inbox: GroupInbox | None = None,
        on_migrate: OnMigrate | None = None,
        commands: Sequence[tuple[str, str]] | None = None,
    ) -> TelegramChannel:
        """In webhook mode without `webhook_secret_token`, the secret is generated once and
        kept in `config_dir` (never mounted into a container), so restarts reuse it."""
        if config.token is None:
            raise ValueError("telegram.token is not set (config.toml or env CLAWGATE_TELEGRAM_TOKEN)")
        secret = config.webhook_secret_token
        generated: str | None = None
        if config.mode == "webhook" and secret is None:
            if config_dir is None:
                raise ValueError("telegram webhook mode needs webhook_secret_token or a dir to keep one in")
            generated = webhook_secret(config_dir)
        return cls(
            config.token.get_secret_value(),
            assistant_name,
            base_url=config.base_url,
            mode=config.mode,
            webhook_url=config.webhook_url,
            webhook_listen=config.webhook_listen,
            webhook_port=config.webhook_port,
            webhook_secret_token=secret.get_secret_value() if secret is not None else generated,
            data_dir=data_dir,
            group_inbox=group_inbox,
            on_migrate=on_migrate,
            commands=commands,
            max_file_bytes=int(config.max_file_mb * 1024 * 1024),
        )

    def __repr__(self) -> str:  # never show the token
        return f"TelegramChannel(mode={self._mode!r}, base_url={self._base_url!r})"

    # -- lifecycle -------------------------------------------------------------------------

    def owns_chat(self, chat_id: str) -> bool:
        try:
            parse_chat_id(chat_id)
        except ValueError:
            return False
        return True

    async def connect(self, on_message: OnMessage, on_button: OnButton | None = None) -> None:
        """Check the token (getMe), then receive; a refused token or no Bot API is ChannelUnavailable.

        python-telegram-bot's own error for a refused token quotes the token, so it is replaced
        here (and not chained) before anything can print it.
        """
        try:
            await self._connect(on_message, on_button)
        except InvalidToken:
            raise ChannelUnavailable(
                f"the Bot API at {self._base_url} refused the bot token: check [telegram] token"
                " (or CLAWGATE_TELEGRAM_TOKEN) and base_url"
            ) from None
        except NetworkError as exc:  # TimedOut included
            raise ChannelUnavailable(
                f"cannot reach the Bot API at {self._base_url}: {redaction.one_line(exc)}"
            ) from None

    async def _connect(self, on_message: OnMessage, on_button: OnButton | None) -> None:
        self._on_message, self._on_button = on_message, on_button
        builder = (
            Application.builder()
            .token(self._token)
            .base_url(f"{self._base_url}/bot")
            .base_file_url(f"{self._base_url}/file/bot")
            .get_updates_read_timeout(self._poll_timeout + 10)
            .concurrent_updates(False)  # messages in order; button presses run as their own tasks
            # Marks each send "handed to the network" after the rate limiter, before the write.
            .request(HandoffRequest(connection_pool_size=256, read_timeout=self._send_timeout))
        )
        builder = builder.updater(None)  # inbound is ours: stored before acknowledged (telegram_poll)
        app: Application[Any, Any, Any, Any, Any, Any]
        if AIORateLimiter is not None:  # Telegram's flood limits; a 429 still reaches `TelegramOutbound.call`
            app = builder.rate_limiter(AIORateLimiter(max_retries=0)).build()
        else:
            app = builder.build()
        self._app = app  # disconnect() shuts down whatever initialize() got to
        await app.initialize()
        self.bot_id, self.bot_username = app.bot.id, app.bot.username
        if self._commands is not None:
            await sync_commands(app.bot, self._commands, self._data_dir)
        allowed = ["message", "channel_post", "callback_query"]
        if self._mode == "webhook":
            url, listen, port, secret = self._webhook
            assert secret is not None  # checked in __init__
            server = WebhookServer(listen, port, WEBHOOK_PATH, secret, self._deliver)
            await server.start()
            self._server = server
            await app.bot.set_webhook(url=url or "", secret_token=secret, allowed_updates=allowed)
        else:
            self._poller = UpdatePoller(
                app.bot, self._handle_batch, timeout_s=int(self._poll_timeout), allowed_updates=allowed
            )
            await self._poller.start()
        self.connected = True
        log.info("telegram connected as @%s (%s)", self.bot_username, self._mode)

    async def disconnect(self) -> None:
        self.connected = False
        app, self._app = self._app, None
        self._out.stop_all_typing()
        for task in self._tasks:
            task.cancel()
        server, self._server = self._server, None
        if server is not None:
            with contextlib.suppress(Exception):
                await server.stop()
        if app is None:
            return
        poller, self._poller = self._poller, None
        if poller is not None:
            await poller.stop()
        with contextlib.suppress(Exception):
            if app.running:
                await app.stop()
        with contextlib.suppress(Exception):
            await app.shutdown()

    @property
    def webhook_port(self) -> int | None:
        """The port the webhook server listens on (webhook mode; useful with port 0)."""
        return self._server.port if self._server is not None else None

    async def _deliver(self, data: dict[str, Any]) -> None:
        """An authenticated webhook update, handled before the HTTP answer goes back.

        Telegram retries an update until it gets a 2xx, so the answer is the acknowledgement:
        raising here (the store could not write) makes the webhook answer 500 and Telegram
        delivers the update again later.
        """
        app = self._app
        if app is None:
            raise ConnectionError("telegram channel is not connected")
        try:
            update = Update.de_json(data, app.bot)
        except Exception as exc:
            raise ValueError(f"not a Telegram update ({type(exc).__name__})") from None
        if await self._handle_batch([update]) < 1:
            raise StoreUnavailable("the update could not be stored")

    @property
    def _bot(self) -> Any:
        if self._app is None:
            raise ConnectionError("telegram channel is not connected")
        return self._app.bot

    # -- inbound -----------------------------------------------------------------------------

    async def _handle_batch(self, updates: Sequence[Update]) -> int:
        """Store a batch of updates in order; return how many leading ones are stored.

        The messages are handed to the gateway together, so the store's group commit writes
        them in one transaction (one fsync) and keeps their order. Button presses run as
        tasks of their own once the messages before them are stored: a press must never
        wait behind a turn. An update that cannot be read is logged and counted as handled,
        so one hostile update cannot stop the bot; one that cannot be *stored* is not.
        """
        assert self._on_message is not None
        inbound: list[InboundMessage | None] = []
        for update in updates:
            message = update.message or update.channel_post
            item = None
            if message is not None:
                try:
                    item = await self._inbound(message)
                except Exception:
                    log.exception("telegram: skipped update %s that could not be read", update.update_id)
            inbound.append(item)
        results = await asyncio.gather(
            *(self._on_message(item) for item in inbound if item is not None), return_exceptions=True
        )
        outcome = iter(results)
        for index, (update, item) in enumerate(zip(updates, inbound, strict=True)):
            if item is not None:
                result = next(outcome)
                if isinstance(result, BaseException):
                    log.error(
                        "telegram: could not store update %s (%s); Telegram keeps it",
                        update.update_id,
                        type(result).__name__,
                    )
                    await self._tell_unavailable(item.chat_id)
                    return index
                self._unavailable_told.discard(item.chat_id)
            if update.callback_query is not None:
                task = asyncio.create_task(self._handle_callback(update), name="telegram-button")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return len(updates)

    async def _tell_unavailable(self, chat_id: str) -> None:
        """Once per chat until a message from it is stored again: the sender is not left guessing."""
        if chat_id in self._unavailable_told:
            return
        self._unavailable_told.add(chat_id)
        with contextlib.suppress(Exception):
            chat, thread = self._routes.target(chat_id)
            await self._bot.send_message(
                chat_id=chat,
                message_thread_id=thread,
                text="⚠️ The assistant cannot take messages right now (its storage is failing). "
                "Telegram keeps yours; it will be read once storage is back.",
            )

    async def _inbound(self, message: Message) -> InboundMessage | None:
        """The message as the gateway stores it, or None (service messages, migrations)."""
        chat = message.chat
        if message.migrate_to_chat_id:
            await self._migrate(chat.id, message.migrate_to_chat_id)
            return None
        if message.migrate_from_chat_id:
            await self._migrate(message.migrate_from_chat_id, chat.id)
            return None
        text = message.text or message.caption or ""
        sender = message.from_user
        is_bot = bool(sender and sender.is_bot) or (sender is not None and sender.id == self.bot_id)
        if not is_bot:
            self._routes.heard(chat.id, message.message_thread_id if message.is_topic_message else None)
        saved = await self._save_attachment(message, f"{PREFIX}{chat.id}") if not is_bot else None
        if saved:
            text = f"{text}\n{saved}".strip()
        if not text.strip():
            return None  # joins, pins and other service messages
        if not is_bot:
            text = self._apply_trigger(message, text)
        if sender is not None:
            sender_id, sender_name = f"{PREFIX}{sender.id}", sender.full_name or sender.username or ""
        else:  # channel posts and anonymous admins speak as the chat
            origin = message.sender_chat or chat
            sender_id, sender_name = f"{PREFIX}{origin.id}", origin.title or ""
        return InboundMessage(
            chat_id=f"{PREFIX}{chat.id}",
            external_id=f"{chat.id}:{message.message_id}",
            sender_id=sender_id,
            sender_name=sender_name,
            text=text,
            timestamp=message.date.timestamp() if message.date else time.time(),
            channel=self.name,
            chat_name=chat.title or chat.full_name or "",
            is_from_bot=is_bot,
        )

    def _apply_trigger(self, message: Message, text: str) -> str:
        reply = message.reply_to_message
        replied = bool(reply and reply.from_user and reply.from_user.id == self.bot_id)
        return apply_trigger(text, self.bot_username, replied, self._assistant)

    async def _migrate(self, old: int, new: int) -> None:
        if not self._routes.migrate(old, new):
            return
        log.info("telegram: chat %s became supergroup %s", old, new)
        if self._on_migrate is not None:
            result = self._on_migrate(f"{PREFIX}{old}", f"{PREFIX}{new}")
            if asyncio.iscoroutine(result):
                await result

    async def _save_attachment(self, message: Message, chat_id: str) -> str | None:
        if self._group_inbox is None:
            return None
        return await save_attachment(self._bot, message, self._group_inbox, chat_id, self._max_file_bytes)

    async def _handle_callback(self, update: Update) -> None:
        query = update.callback_query
        if query is None:
            return
        parsed = parse_callback(query.data)
        answer = "This button is not recognised."
        if parsed is not None and self._on_button is not None:
            chat = query.message.chat.id if query.message is not None else 0
            press = ButtonPress(
                approval_id=parsed[0],
                decision=parsed[1],
                user_id=f"{PREFIX}{query.from_user.id}",
                user_name=query.from_user.full_name or query.from_user.username or "",
                chat_id=f"{PREFIX}{chat}",
            )
            try:
                answer = await self._on_button(press)
            except Exception:
                log.exception("telegram: approval button handler failed")
                answer = "Something went wrong; try /approve or /deny."
        with contextlib.suppress(Exception):
            await query.answer(answer[:200])

    # -- outbound (channels/telegram_outbound.py) -------------------------------------------

    async def send(self, chat_id: str, text: str) -> None:
        await self._out.send(chat_id, text)

    async def typing(self, chat_id: str) -> None:
        """Show "typing…" in the chat until the next reply to it (refreshed; best effort)."""
        await self._out.typing(chat_id)

    async def send_approval(self, chat_id: str, prompt: ApprovalPrompt) -> str:
        return await self._out.send_approval(chat_id, prompt)

    async def finish_approval(
        self, chat_id: str, ref: str, prompt: ApprovalPrompt, outcome: ApprovalOutcome
    ) -> None:
        await self._out.finish_approval(ref, prompt, outcome)
