"""A Slack Web API + Socket Mode server on loopback, speaking the real wire formats.

Web API methods are answered at `/api/<method>` (form, query or JSON arguments, like
slack.com); `apps.connections.open` hands out `ws://127.0.0.1:<port>/socket`, where the
test pushes Socket Mode envelopes and reads the client's acks. `rate_limit_once` makes
the next call of a method answer 429 with `Retry-After`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

BOT_USER_ID = "UBOT"
BOT_ID = "BBOT"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    at: float = field(default_factory=time.monotonic)


class FakeSlack:
    def __init__(self, bot_token: str | None = None, app_token: str | None = None) -> None:
        self.bot_token, self.app_token = bot_token, app_token  # None: any token is accepted
        self.refused: list[str] = []  # methods answered invalid_auth
        self.calls: list[Call] = []
        self.acks: list[dict[str, Any]] = []
        self.connections = 0
        self.rate_limited: list[str] = []
        self._rate_limit: dict[str, int] = {}
        self._drop_after_accept: set[str] = set()
        self._ts = itertools.count(1)
        self._socket: web.WebSocketResponse | None = None
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.users = {"U1": "alice", "U2": "bob"}
        self.on_ack: Any = None  # called with each Socket Mode ack before it is recorded

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._api)
        app.router.add_get("/socket", self._ws)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._socket is not None:
            await self._socket.close()
        if self._runner is not None:
            await self._runner.cleanup()

    def rate_limit_once(self, method: str, retry_after: int = 1) -> None:
        self._rate_limit[method] = retry_after

    def drop_after_accept_once(self, method: str) -> None:
        """The next `method` call is carried out, then the connection is cut before the answer."""
        self._drop_after_accept.add(method)

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Any, timeout: float = 10) -> None:
        async def check() -> None:
            async with self._changed:
                await self._changed.wait_for(predicate)

        await asyncio.wait_for(check(), timeout)

    # -- Web API

    async def _api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.can_read_body:
            if request.content_type == "application/json":
                args.update(await request.json())
            else:
                args.update(dict(await request.post()))
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if expected is not None and request.headers.get("Authorization") != f"Bearer {expected}":
            self.refused.append(method)  # Slack answers HTTP 200 with ok=false
            return web.json_response({"ok": False, "error": "invalid_auth"})
        if method in self._rate_limit:
            retry_after = self._rate_limit.pop(method)
            self.rate_limited.append(method)
            return web.json_response(
                {"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": str(retry_after)}
            )
        self.calls.append(Call(method, args))
        await self._notify()
        answer = self._answer(method, args)
        if method in self._drop_after_accept:
            self._drop_after_accept.discard(method)
            assert request.transport is not None
            request.transport.close()  # the client sees a disconnect: outcome unknown
        return web.json_response(answer)

    def _answer(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        if method == "auth.test":
            return {
                "ok": True,
                "url": "https://clawgate-test.slack.com/",
                "team": "test",
                "user": "clawgate",
                "team_id": "T1",
                "user_id": BOT_USER_ID,
                "bot_id": BOT_ID,
            }
        if method == "apps.connections.open":
            return {"ok": True, "url": f"ws://127.0.0.1:{self.port}/socket"}
        if method == "users.info":
            user = str(args.get("user"))
            name = self.users.get(user, user)
            return {"ok": True, "user": {"id": user, "name": name, "profile": {"display_name": name.title()}}}
        if method in ("chat.postMessage", "chat.update"):
            ts = args.get("ts") or f"1700000000.{next(self._ts):06d}"
            return {
                "ok": True,
                "channel": args.get("channel"),
                "ts": ts,
                "message": {"text": args.get("text")},
            }
        if method == "chat.postEphemeral":
            return {"ok": True, "message_ts": f"1700000001.{next(self._ts):06d}"}
        return {"ok": False, "error": "unknown_method"}

    # -- Socket Mode

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        self._socket = ws
        self.connections += 1
        await ws.send_json({"type": "hello", "num_connections": 1, "connection_info": {"app_id": "A1"}})
        await self._notify()
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                ack = json.loads(message.data)
                if self.on_ack is not None:  # at the instant Slack would stop retrying
                    self.on_ack(ack)
                self.acks.append(ack)
                await self._notify()
        if self._socket is ws:
            self._socket = None
        return ws

    async def push(self, envelope: dict[str, Any]) -> None:
        await self.wait_until(lambda: self._socket is not None and not self._socket.closed)
        assert self._socket is not None
        await self._socket.send_json(envelope)

    async def drop(self) -> None:
        """Kill the current socket, as a network blip or a Slack-side refresh would."""
        assert self._socket is not None
        await self._socket.close()

    async def wait_ack(self, envelope_id: str, timeout: float = 10) -> dict[str, Any]:
        await self.wait_until(lambda: any(a.get("envelope_id") == envelope_id for a in self.acks), timeout)
        return next(a for a in self.acks if a.get("envelope_id") == envelope_id)


_envelopes = itertools.count(1)


def event_callback(event: dict[str, Any], event_id: str) -> dict[str, Any]:
    return {
        "token": "verification-token",
        "team_id": "T1",
        "api_app_id": "A1",
        "event": event,
        "type": "event_callback",
        "event_id": event_id,
        "event_time": int(time.time()),
        "authorizations": [{"team_id": "T1", "user_id": BOT_USER_ID, "is_bot": True}],
    }


def message_event(text: str, ts: str, channel: str = "C1", user: str = "U1", **extra: Any) -> dict[str, Any]:
    event = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts, "team": "T1"}
    event["channel_type"] = "channel"
    event.update(extra)
    return event


def events_envelope(event: dict[str, Any], event_id: str, retry_attempt: int = 0) -> dict[str, Any]:
    return {
        "envelope_id": f"env-{next(_envelopes)}",
        "type": "events_api",
        "accepts_response_payload": False,
        "retry_attempt": retry_attempt,
        "retry_reason": "timeout" if retry_attempt else "",
        "payload": event_callback(event, event_id),
    }


def button_payload(action_id: str, value: str, user: str = "U1", channel: str = "C1") -> dict[str, Any]:
    return {
        "type": "block_actions",
        "user": {"id": user, "username": "alice", "name": "alice", "team_id": "T1"},
        "api_app_id": "A1",
        "token": "verification-token",
        "container": {"type": "message", "message_ts": "1700000000.000001", "channel_id": channel},
        "trigger_id": "1.2.3",
        "team": {"id": "T1", "domain": "clawgate-test"},
        "channel": {"id": channel, "name": "main"},
        "message": {"type": "message", "ts": "1700000000.000001", "text": "approval"},
        "response_url": "http://127.0.0.1:9/unused",
        "actions": [
            {
                "action_id": action_id,
                "block_id": f"clawgate_approval_{value}",
                "value": value,
                "type": "button",
                "action_ts": str(time.time()),
            }
        ],
    }


def interactive_envelope(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "envelope_id": f"env-{next(_envelopes)}",
        "type": "interactive",
        "accepts_response_payload": False,
        "payload": payload,
    }
