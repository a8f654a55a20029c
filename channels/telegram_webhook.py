"""The inbound end of Telegram's webhook mode: an HTTP server that only Telegram can feed.

Anyone who can reach the webhook URL can POST an update, and an update names its sender:
without a check, a stranger could send admin commands "from" the owner or press Approve.
Telegram proves a request is its own by echoing, in `X-Telegram-Bot-Api-Secret-Token`, the
secret given to `setWebhook`; so webhook mode always has one (`webhook_secret`) and this
server compares it in constant time (`hmac.compare_digest`) before the body is even read.
A request without the header gets 401, a wrong one 403; neither is parsed, stored or acted on.

We serve it ourselves (aiohttp, as the Slack channel does) rather than through
python-telegram-bot's webhook server, whose comparison is a plain `!=`. An accepted update is
stored before the 200 goes back (Telegram redelivers until it gets a 2xx), so a failure to
store it answers 500.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from core.private_files import read_or_create_token

log = logging.getLogger(__name__)

HEADER = "X-Telegram-Bot-Api-Secret-Token"
TOKEN_PATTERN = r"[A-Za-z0-9_-]{1,256}"  # what setWebhook accepts as secret_token
SECRET_FILE = "telegram-webhook.secret"
MAX_UPDATE_BYTES = 1024 * 1024  # an update is a few KB; files come by getFile, not in the body

_WHY = {401: "no", 403: "a wrong"}

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


def webhook_secret(config_dir: Path) -> str:
    """The secret kept in the config dir (0600), made on first use and reused across restarts,
    so the webhook registered with Telegram keeps matching after the gateway restarts."""
    return read_or_create_token(
        config_dir / SECRET_FILE,
        lambda: secrets.token_urlsafe(48),  # 64 characters of A-Za-z0-9_-
        TOKEN_PATTERN,
        "telegram webhook secret",
    )


def check_secret(secret: str) -> str:
    """Refuse a webhook without a usable secret: without one any caller could forge updates."""
    if not re.fullmatch(TOKEN_PATTERN, secret or ""):
        raise ValueError("telegram webhook mode needs a secret token of 1-256 characters A-Z a-z 0-9 _ -")
    return secret


def authorized(header: str | None, secret: str) -> bool:
    """Constant-time: the time taken says nothing about how much of a guess was right."""
    if header is None:
        return False
    return hmac.compare_digest(header.encode("utf-8", "surrogateescape"), secret.encode("ascii"))


class WebhookServer:
    def __init__(self, listen: str, port: int, path: str, secret: str, deliver: Deliver) -> None:
        self._listen, self._port, self._path = listen, port, path
        self._secret = check_secret(secret)
        self._deliver = deliver
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port (useful with port 0)

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_UPDATE_BYTES)
        app.router.add_post(self._path, self._handle)
        runner = web.AppRunner(app, access_log=None)  # the access log would record every probe
        await runner.setup()
        site = web.TCPSite(runner, self._listen, self._port)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        sockets = getattr(site._server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        header = request.headers.get(HEADER)
        if not authorized(header, self._secret):
            status = 401 if header is None else 403
            log.info("telegram webhook: refused a request (%d: %s secret token)", status, _WHY[status])
            return web.Response(status=status, text="missing or wrong secret token\n")
        try:
            update = json.loads(await request.read())
        except web.HTTPRequestEntityTooLarge:
            raise
        except (ValueError, RecursionError):
            return web.Response(status=400, text="the body is not JSON\n")
        if not isinstance(update, dict) or not isinstance(update.get("update_id"), int):
            return web.Response(status=400, text="the body is not a Telegram update\n")
        try:
            await self._deliver(update)
        except ValueError as exc:  # PTB could not make an Update of it
            log.warning("telegram webhook: unusable update: %s", type(exc).__name__)
            return web.Response(status=400, text="the body is not a Telegram update\n")
        return web.Response(status=200)
