"""Slack through slack-bolt (async): Socket Mode by default, HTTP mode with signing-secret checks.

Chat ids are `slack:<channel id>`; `slack:<channel>:<thread_ts>` also works for `send` and
pins the reply to that thread. A reply to `slack:<channel>` goes into the thread of the last
human message seen in that channel (top level if that message was at top level), so a
question asked in a thread is answered there. `<@BOT>` mentions become the gateway trigger
(`@<assistant_name>`); messages from bots (this one and others) are dropped. Redelivered
events (Socket Mode retries, HTTP `X-Slack-Retry-Num`) are dropped by event id and by
`channel:ts`, in a bounded LRU. An event is acknowledged only after `on_message` returned
(Bolt's `process_before_response`), so a message is persisted before Slack stops retrying.

Tokens live in `SlackConfig` as `SecretStr`; slack_sdk redacts the Authorization header in
its own debug logs, and nothing here logs them.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.app.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from channels.base import (
    ApprovalOutcome,
    ApprovalPrompt,
    ButtonPress,
    ChannelUnavailable,
    OnButton,
    OnMessage,
)
from channels.delivery import handed_off
from channels.slack_format import escape, split_message, to_mrkdwn, unescape
from channels.slack_send import not_accepted, post_client
from core import redaction
from core.config import SlackConfig
from core.models import InboundMessage

log = logging.getLogger(__name__)

PREFIX = "slack:"
SECTION_LIMIT = 2900  # a Block Kit section's text is capped at 3000
APPROVE, DENY, ALLOW_FOR = "clawgate_approve", "clawgate_deny", "clawgate_allow_for"
_DECISIONS: dict[str, Literal["approve", "deny", "allow"]] = {
    APPROVE: "approve",
    DENY: "deny",
    ALLOW_FOR: "allow",
}
_HUMAN_SUBTYPES = {None, "file_share", "thread_broadcast", "me_message"}
_SLACK_TS = re.compile(r"[0-9]{1,12}\.[0-9]{1,9}")


def _plain_section(text: str) -> dict[str, Any]:
    """Text shown exactly as given (within a section's 3000-character cap)."""
    if len(text) > SECTION_LIMIT:
        text = text[:SECTION_LIMIT].rsplit("\n", 1)[0] + "\n…"
    return {"type": "section", "text": {"type": "plain_text", "text": text or "-", "emoji": False}}


def _when(at: float) -> str:
    fallback = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(at)}^{{date_short_pretty}} {{time}}|{fallback}>"


# ---------------------------------------------------------------- the channel


class _Lru:
    def __init__(self, size: int) -> None:
        self._size = size
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """True if the key is new."""
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        if len(self._keys) > self._size:
            self._keys.popitem(last=False)
        return True

    def discard(self, key: str) -> None:
        self._keys.pop(key, None)


class SlackChannel:
    name = "slack"

    def __init__(
        self,
        config: SlackConfig,
        assistant_name: str,
        *,
        ping_interval: float = 10.0,
        dedupe_size: int = 4096,
        max_rate_limit_retries: int = 5,
    ) -> None:
        if config.bot_token is None:
            raise ValueError("slack.bot_token is required")
        secret = config.signing_secret
        if config.mode == "http" and (secret is None or not secret.get_secret_value().strip()):
            # Bolt would check signatures made with an empty key, which anyone can make.
            raise ValueError("slack.signing_secret is required in http mode")
        self._config = config
        redaction.register(
            s.get_secret_value() for s in (config.bot_token, config.app_token, secret) if s is not None
        )
        self._assistant = assistant_name
        self._ping_interval = ping_interval
        self._seen = _Lru(dedupe_size)
        self._threads: dict[str, str | None] = {}  # channel -> thread of the last human message
        self._names: dict[str, asyncio.Future[str]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._client = AsyncWebClient(
            token=config.bot_token.get_secret_value(),
            base_url=config.base_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                AsyncRateLimitErrorRetryHandler(max_retry_count=max_rate_limit_retries),
            ],
        )
        self._poster = post_client(
            config.bot_token.get_secret_value(), config.base_url, max_rate_limit_retries
        )
        self._app: AsyncApp | None = None
        self._socket: AsyncSocketModeHandler | None = None
        self._runner: web.AppRunner | None = None
        self._on_message: OnMessage | None = None
        self._on_button: OnButton | None = None
        self.bot_user_id = ""
        self.bot_id = ""
        self.http_port: int | None = None  # the bound port in HTTP mode (useful with port 0)
        self._running = False

    # -- lifecycle

    @property
    def connected(self) -> bool:
        if not self._running:
            return False
        if self._socket is not None:
            session = self._socket.client.current_session
            return session is not None and not session.closed
        return self._runner is not None

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(PREFIX)

    async def connect(self, on_message: OnMessage, on_button: OnButton | None = None) -> None:
        """Check the bot token (auth.test), then receive; a refusal or no API is ChannelUnavailable."""
        try:
            await self._connect(on_message, on_button)
        except SlackApiError as exc:
            method = str(exc.response.api_url or "").rstrip("/").rsplit("/", 1)[-1] or "the Web API"
            setting = "app_token" if method == "apps.connections.open" else "bot_token"
            raise ChannelUnavailable(
                f"Slack refused {method}: {exc.response.get('error') or exc.response.status_code}"
                f" (check [slack] {setting})"
            ) from None
        except (OSError, TimeoutError, aiohttp.ClientError) as exc:
            raise ChannelUnavailable(
                f"cannot reach the Slack API at {self._config.base_url}: {redaction.one_line(exc)}"
            ) from None

    async def _connect(self, on_message: OnMessage, on_button: OnButton | None) -> None:
        self._on_message, self._on_button = on_message, on_button
        auth = await self._client.auth_test()
        self.bot_user_id, self.bot_id = str(auth.get("user_id") or ""), str(auth.get("bot_id") or "")
        http = self._config.mode == "http"
        secret = self._config.signing_secret
        app = AsyncApp(
            client=self._client,
            signing_secret=secret.get_secret_value() if secret is not None else "",
            request_verification_enabled=http,
            process_before_response=True,  # ack only after on_message persisted the message
            logger=logging.getLogger("clawgate.slack.bolt"),
        )
        app.event("message")(self._handle_event)
        app.event("app_mention")(self._handle_event)
        app.action(APPROVE)(self._handle_action)
        app.action(DENY)(self._handle_action)
        app.action(ALLOW_FOR)(self._handle_action)
        self._app = app
        if http:
            await self._serve_http(app)
        else:
            assert self._config.app_token is not None  # checked by the config
            app_token = self._config.app_token.get_secret_value()
            # slack_sdk's connect() retries a refused app token forever (a start-up that never
            # fails and never gets ready), so the first WebSocket URL is asked for here, where a
            # refusal raises; the client then connects to it.
            opened = await self._client.apps_connections_open(app_token=app_token)
            self._socket = AsyncSocketModeHandler(  # disconnect() closes it if connecting fails
                app, app_token, web_client=self._client, ping_interval=self._ping_interval
            )
            self._socket.client.wss_uri = str(opened["url"])
            await self._socket.connect_async()
        self._running = True
        log.info("slack connected (%s mode) as %s", self._config.mode, self.bot_user_id)

    async def _serve_http(self, app: AsyncApp) -> None:
        async def endpoint(request: web.Request) -> web.StreamResponse:
            # Bolt checks the signature and the timestamp's age, but a timestamp that is not a
            # number makes it raise (a 500 and a traceback per forged request): refuse it here.
            if not re.fullmatch(r"\d{1,12}", request.headers.get("X-Slack-Request-Timestamp", "")):
                return web.Response(status=401)
            response = await app.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(response)

        web_app = web.Application()
        web_app.router.add_post(self._config.http_path, endpoint)
        self._runner = web.AppRunner(web_app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._config.http_host, self._config.http_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self._config.http_port

    async def disconnect(self) -> None:
        self._running = False
        if self._socket is not None:
            socket, self._socket = self._socket, None
            await socket.close_async()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        for task in list(self._tasks):
            task.cancel()

    # -- inbound

    async def _handle_event(self, body: dict[str, Any], event: dict[str, Any]) -> None:
        event_id = body.get("event_id")
        if isinstance(event_id, str) and not self._seen.add(f"event:{event_id}"):
            log.debug("slack: dropped redelivered event %s", event_id)
            return
        try:
            await self._handle_message(event)
        except BaseException:
            if isinstance(event_id, str):
                self._seen.discard(f"event:{event_id}")  # let Slack's retry try again
            raise

    async def _handle_message(self, event: dict[str, Any]) -> None:
        subtype = event.get("subtype")
        if subtype not in _HUMAN_SUBTYPES:
            return
        user, channel, ts = event.get("user"), event.get("channel"), event.get("ts")
        if event.get("bot_id") or event.get("bot_profile") or not user or user == self.bot_user_id:
            return  # bots (this one and others) are never an input
        if not (isinstance(user, str) and isinstance(channel, str) and isinstance(ts, str)):
            return
        if self._on_message is None:
            return
        if not _SLACK_TS.fullmatch(ts):  # Slack's "<seconds>.<micros>"; it is also the message's time
            log.warning("slack: dropped an event with a malformed ts %.40r", ts)
            return
        key = f"msg:{channel}:{ts}"  # `message` and `app_mention` describe the same message
        if not self._seen.add(key):
            return
        thread = event.get("thread_ts")
        self._threads[channel] = thread if isinstance(thread, str) else None
        try:
            await self._on_message(
                InboundMessage(
                    chat_id=f"{PREFIX}{channel}",
                    external_id=ts,
                    sender_id=f"{PREFIX}{user}",
                    sender_name=await self._display_name(user),
                    text=self._rewrite(str(event.get("text") or "")),
                    timestamp=float(ts),
                    channel=self.name,
                    chat_name=channel,
                )
            )
        except BaseException:
            self._seen.discard(key)
            raise

    def _rewrite(self, text: str) -> str:
        """`<@BOT>` → the gateway trigger (`<@BOT> /cmd` → `/cmd`); Slack's escapes → plain text."""
        mentioned = False
        if self.bot_user_id:
            pattern = re.compile(rf"<@{re.escape(self.bot_user_id)}(?:\|[^>]*)?>[,:]?\s*")
            text, count = pattern.subn("", text)
            mentioned = count > 0
        text = unescape(text.strip())
        if not mentioned or text.startswith("/"):  # `@bot /chatid`: Slack's client eats a bare `/chatid`
            return text
        return f"@{self._assistant} {text}".rstrip()

    async def _display_name(self, user: str) -> str:
        future = self._names.get(user)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._names[user] = future
            try:
                info = await self._client.users_info(user=user)
                data = info.get("user") or {}
                profile = data.get("profile") or {}
                name = (
                    profile.get("display_name")
                    or profile.get("real_name")
                    or data.get("real_name")
                    or data.get("name")
                    or user
                )
                future.set_result(str(name))
            except Exception as exc:
                log.warning("slack: users.info failed for %s: %s", user, exc)
                del self._names[user]  # try again next time
                future.set_result(user)
        return await future

    # -- outbound

    def _target(self, chat_id: str) -> tuple[str, str | None]:
        if not self.owns_chat(chat_id):
            raise ValueError(f"{chat_id!r} is not a Slack chat")
        channel, _, thread = chat_id[len(PREFIX) :].partition(":")
        if not channel:
            raise ValueError(f"{chat_id!r} has no channel id")
        return channel, thread or self._threads.get(channel)

    async def send(self, chat_id: str, text: str) -> None:
        channel, thread = self._target(chat_id)
        for index, chunk in enumerate(split_message(to_mrkdwn(text))):
            await handed_off()  # no local limiter in front of the client: this is the write
            try:
                await self._poster.chat_postMessage(
                    channel=channel, text=chunk, thread_ts=thread, mrkdwn=True, unfurl_links=False
                )
            except Exception as exc:
                refused = not_accepted(exc)
                if refused is None or index > 0:  # unknown, or earlier chunks are already posted
                    raise
                raise refused from exc

    # -- approvals

    def _prompt_blocks(self, prompt: ApprovalPrompt) -> list[dict[str, Any]]:
        """The title and details come (in part) from the requesting agent, so they are shown as
        `plain_text`: no links, mentions, `<!channel>`, bold or `:emoji:` of its choosing can
        dress up a request or fake an outcome line; only our own lines are mrkdwn."""
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": "*Approval needed*"}},
            _plain_section(prompt.title),
        ]
        if prompt.details.strip():
            blocks.append(_plain_section(prompt.details))
        return [
            *blocks,
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"requested by {escape(prompt.requester_group)} · id `{escape(prompt.id)}`"
                        f" · expires {_when(prompt.expires_at)}",
                    }
                ],
            },
        ]

    async def send_approval(self, chat_id: str, prompt: ApprovalPrompt) -> str:
        channel, thread = self._target(chat_id)
        blocks = self._prompt_blocks(prompt)
        blocks.append(
            {
                "type": "actions",
                "block_id": f"clawgate_approval_{prompt.id}",
                "elements": [
                    {
                        "type": "button",
                        "action_id": APPROVE,
                        "text": {"type": "plain_text", "text": "Approve"},
                        "style": "primary",
                        "value": prompt.id,
                    },
                    {
                        "type": "button",
                        "action_id": DENY,
                        "text": {"type": "plain_text", "text": "Deny"},
                        "style": "danger",
                        "value": prompt.id,
                    },
                ]
                + (
                    [
                        {
                            "type": "button",
                            "action_id": ALLOW_FOR,
                            "text": {"type": "plain_text", "text": prompt.allow_label[:75]},
                            "value": prompt.id,
                        }
                    ]
                    if prompt.allow_label
                    else []
                ),
            }
        )
        response = await self._client.chat_postMessage(
            channel=channel,
            thread_ts=thread,
            text=escape(f"Approval needed: {prompt.title} (/approve {prompt.id} or /deny {prompt.id})"),
            blocks=blocks,
        )
        return f"{response.get('channel') or channel}:{response['ts']}"

    async def finish_approval(
        self, chat_id: str, ref: str, prompt: ApprovalPrompt, outcome: ApprovalOutcome
    ) -> None:
        channel, _, ts = ref.partition(":")
        if not channel or not ts:
            raise ValueError(f"bad Slack approval reference {ref!r}")
        label = {"approved": "✅ Approved", "denied": "❌ Denied", "expired": "⌛ Expired (denied)"}
        line = label[outcome.state]
        if outcome.decided_by:
            who = outcome.decided_by
            line += f" by <@{who[len(PREFIX) :]}>" if who.startswith(PREFIX) else f" by {escape(who)}"
        line += f" · {_when(outcome.decided_at)}"
        if outcome.note:
            line += f" ({escape(outcome.note)})"
        blocks = self._prompt_blocks(prompt)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line}})
        await self._client.chat_update(
            channel=channel, ts=ts, text=escape(f"{prompt.title}: {outcome.state}"), blocks=blocks
        )

    async def _handle_action(self, ack: AsyncAck, body: dict[str, Any], action: dict[str, Any]) -> None:
        await ack()  # first, always: Slack shows an error if this takes more than 3 s
        on_button = self._on_button
        user = body.get("user") or {}
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id")
        if on_button is None or not user.get("id") or not channel:
            return
        press = ButtonPress(
            approval_id=str(action.get("value") or ""),
            decision=_DECISIONS.get(str(action.get("action_id")), "deny"),
            user_id=f"{PREFIX}{user['id']}",
            user_name=str(user.get("name") or user.get("username") or user["id"]),
            chat_id=f"{PREFIX}{channel}",
        )
        thread = (body.get("container") or {}).get("thread_ts")
        # Never awaited here: the decision may be awaited by the very agent turn that waits on it.
        self._spawn(self._answer_click(on_button(press), channel, str(user["id"]), thread))

    async def _answer_click(
        self, decision: Awaitable[str], channel: str, user: str, thread: str | None
    ) -> None:
        try:
            text = await decision
            if text:
                await self._client.chat_postEphemeral(
                    channel=channel, user=user, text=escape(text), thread_ts=thread
                )
        except Exception:
            log.exception("slack: handling an approval click failed")

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


__all__ = ["SlackChannel", "escape", "split_message", "to_mrkdwn"]
