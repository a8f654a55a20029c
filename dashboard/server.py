"""The dashboard's HTTP server: aiohttp on the gateway's own event loop, pages rendered by Jinja2.

Every response, errors included, carries the security headers (`_headers`): a CSP that allows
scripts, styles and connections only from this origin (no inline script at all), no framing, no
referrer (a login link never leaks through one), no caching. Every path but `/login` and
`/static/` needs a session; every POST needs a same-origin request (`Origin`/`Sec-Fetch-Site`)
AND the session's synchroniser token — a forged cross-site form has neither.

What a page may change goes through `Backend` (dashboard/backend.py), which takes the same path
as the chat (approvals: the buttons' exactly-once `Approvals.on_button`), never around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import jinja2
from aiohttp import web

from core.config import DashboardConfig, is_loopback
from dashboard import groups_page, wallet_page
from dashboard.activity import spend_charts, turn_charts
from dashboard.auth import COOKIE, SESSION_TTL_S, Session, Sessions, consume_login, csrf_ok, same_origin
from dashboard.backend import AuditQuery, Backend, FeedItem, SecretForm

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
KEEPALIVE_S = 15.0
MAX_FORM_BYTES = 4096

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
SESSION_KEY = web.RequestKey("session", Session)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class DashboardUnavailable(Exception):
    """The address cannot be bound; the message names it and the fix."""


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s"


def _usd(value: float) -> str:
    return f"${value:,.4f}" if 0 < value < 0.01 else f"${value:,.2f}"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value is escaped unless a template says otherwise (none does)
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = _when
    env.filters["duration"] = _duration
    env.filters["usd"] = _usd
    return env


class DashboardServer:
    def __init__(self, settings: DashboardConfig, data_dir: Path, backend: Backend) -> None:
        self.settings = settings
        self._data_dir = data_dir
        self._backend = backend
        self.sessions = Sessions()
        self._env = _environment()
        self._runner: web.AppRunner | None = None
        self._streams: set[asyncio.Task[Any]] = set()
        self.port: int | None = None  # the bound port (settings.port may be 0)

    # -- life cycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind, or raise DashboardUnavailable (a start-up error: a configured dashboard must exist)."""
        app = web.Application(client_max_size=MAX_FORM_BYTES, middlewares=[self._auth])
        app.on_response_prepare.append(_headers)
        # No HEAD: a link checker or prefetcher probing the link must not use up the one login.
        app.router.add_get("/login", self._login, allow_head=False)
        app.router.add_get("/", self._overview)
        app.router.add_get("/approvals", self._approvals)
        app.router.add_post("/approvals/{id}", self._decide)
        app.router.add_get("/dead-letters", self._dead_letters)
        app.router.add_post("/dead-letters/{id}", self._dead_letter_action)
        app.router.add_get("/tasks", self._tasks)
        app.router.add_get("/spend", self._spend)
        app.router.add_post("/tasks/{id}", self._task_action)
        app.router.add_get("/vault", self._vault)
        app.router.add_post("/vault/secrets", self._vault_add)
        app.router.add_post("/vault/secrets/{name}", self._vault_change)
        groups_page.add_routes(app, self._backend, self._session_page, lambda r: r[SESSION_KEY])
        wallet_page.add_routes(app, self._backend, self._session_page)
        app.router.add_post("/logout", self._logout)
        app.router.add_get("/events", self._events)
        app.router.add_static("/static/", STATIC, follow_symlinks=False, show_index=False)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.bind, self.settings.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise DashboardUnavailable(
                f"dashboard: cannot listen on {self.settings.bind}:{self.settings.port} "
                f"({exc.strerror or exc}); change [dashboard] port or stop what uses it"
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        log.info("dashboard: serving on %s (log in with `clawgate dashboard url`)", self.base_url)
        if not is_loopback(self.settings.bind):
            log.warning(
                "dashboard: listening on %s, reachable from other machines (allow_remote = true); "
                "its cookies and login links cross the network in clear text unless TLS is in front",
                self.settings.bind,
            )

    @property
    def base_url(self) -> str:
        return base_url(self.settings, self.port)

    async def close(self) -> None:
        for task in list(self._streams):  # live event streams never end on their own
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- middleware ----------------------------------------------------------------------------

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path == "/login" or request.path.startswith("/static/"):
            if request.method not in ("GET", "HEAD"):
                raise web.HTTPMethodNotAllowed(request.method, ["GET"])
            return await handler(request)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return self._page("signed_out.html", status=401)
        if request.method not in ("GET", "HEAD"):
            own = f"{request.scheme}://{request.host}"
            if not same_origin(request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), own):
                log.warning("dashboard: refused a cross-site %s %s", request.method, request.path)
                return self._page("refused.html", status=403, reason="cross-site request")
            form = await request.post()
            token = form.get("csrf")
            if not csrf_ok(session, token if isinstance(token, str) else None):
                log.warning("dashboard: refused a %s %s without its form token", request.method, request.path)
                return self._page("refused.html", status=403, reason="missing or wrong form token")
        request[SESSION_KEY] = session
        return await handler(request)

    def _page(self, template: str, status: int = 200, **context: Any) -> web.Response:
        text = self._env.get_template(template).render(**context)
        return web.Response(status=status, text=text, content_type="text/html", charset="utf-8")

    def _session_page(self, request: web.Request, template: str, **context: Any) -> web.Response:
        session = request[SESSION_KEY]
        flash, session.flash = session.flash, []
        return self._page(
            template, user=session.user, csrf=session.csrf, flash=flash, page=template, **context
        )

    # -- handlers -----------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.StreamResponse:
        user = consume_login(self._data_dir, request.query.get("t", ""))
        if user is None:
            log.warning("dashboard: a login link was refused (unknown, used or expired)")
            reason = "this login link is unknown, used or expired"
            return self._page("refused.html", status=403, reason=reason)
        session = self.sessions.create(user)
        log.info("dashboard: %s logged in", user)
        response = web.Response(status=303, headers={"Location": "/"})
        response.set_cookie(
            COOKIE, session.id, httponly=True, samesite="Strict", path="/", max_age=int(SESSION_TTL_S)
        )
        return response

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        overview = await self._backend.overview()
        feed = list(reversed(self._backend.feed.recent))
        charts = [chart for a in await self._backend.turn_activity() for chart in turn_charts(a)]
        context = {"o": overview, "feed": feed, "now": time.time(), "charts": charts}
        return self._session_page(request, "overview.html", **context)

    async def _approvals(self, request: web.Request) -> web.StreamResponse:
        pending, history = await self._backend.approvals()
        context = {"pending": pending, "history": history, "now": time.time()}
        return self._session_page(request, "approvals.html", **context)

    async def _decide(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION_KEY]
        form = await request.post()
        decision = form.get("decision")
        if decision not in ("approve", "deny"):
            return self._page("refused.html", status=400, reason="decision must be approve or deny")
        choice: Literal["approve", "deny"] = "approve" if decision == "approve" else "deny"
        answer = await self._backend.decide(request.match_info["id"], choice, session.user)
        session.flash.append(answer)
        raise web.HTTPSeeOther("/approvals")

    async def _dead_letters(self, request: web.Request) -> web.StreamResponse:
        letters = await self._backend.dead_letters()
        return self._session_page(request, "dead_letters.html", letters=letters)

    async def _dead_letter_action(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION_KEY]
        form = await request.post()
        action = form.get("action")
        try:
            letter_id = int(request.match_info["id"])
        except ValueError:
            letter_id = -1
        if action not in ("retry", "drop") or letter_id < 0:
            return self._page("refused.html", status=400, reason="a dead letter id and retry or drop")
        choice: Literal["retry", "drop"] = "retry" if action == "retry" else "drop"
        session.flash.append(await self._backend.dead_letter_action(letter_id, choice, session.user))
        raise web.HTTPSeeOther("/dead-letters")

    async def _spend(self, request: web.Request) -> web.StreamResponse:
        charts = spend_charts(await self._backend.spend_history())
        return self._session_page(request, "spend.html", s=await self._backend.spend(), charts=charts)

    async def _tasks(self, request: web.Request) -> web.StreamResponse:
        return self._session_page(request, "tasks.html", tasks=await self._backend.tasks())

    async def _task_action(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION_KEY]
        form = await request.post()
        action = form.get("action")
        try:
            task_id = int(request.match_info["id"])
        except ValueError:
            task_id = -1
        if action not in ("pause", "resume", "cancel") or task_id < 0:
            return self._page("refused.html", status=400, reason="a task id and pause, resume or cancel")
        choice: Literal["pause", "resume", "cancel"] = (
            "pause" if action == "pause" else "resume" if action == "resume" else "cancel"
        )
        session.flash.append(await self._backend.task_action(task_id, choice, session.user))
        raise web.HTTPSeeOther("/tasks")

    async def _vault(self, request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            offset = max(0, int(q.get("offset", "0")))
        except ValueError:
            offset = 0
        query = AuditQuery(
            group=q.get("group", ""),
            host=q.get("host", ""),
            status=q.get("status", ""),
            kind=q.get("kind", ""),
            offset=offset,
        )
        vault, audit = await self._backend.vault(), await self._backend.audit(query)
        shown = {
            k: v
            for k, v in (
                ("group", query.group),
                ("host", query.host),
                ("status", query.status),
                ("kind", query.kind),
            )
            if v
        }
        return self._session_page(request, "vault.html", v=vault, a=audit, q=query, filters=shown)

    async def _vault_add(self, request: web.Request) -> web.StreamResponse:
        """`clawgate vault add` from the page. The value goes to the backend and nowhere else:
        the answer is a redirect, and the page it leads to names the secret only."""
        session = request[SESSION_KEY]
        form = await request.post()

        def text(key: str) -> str:
            value = form.get(key)
            return value if isinstance(value, str) else ""

        secret = SecretForm(
            name=text("name"),
            host=text("host"),
            path=text("path"),
            methods=tuple(m for m in text("methods").replace(" ", ",").split(",") if m),
            action=text("action"),
            header=text("header"),
            fmt=text("format"),
            query_param=text("query_param"),
            preset=text("preset"),
            groups=text("groups"),
            replace=text("replace") == "on",
            approve=text("approve") == "on",
        )
        session.flash.append(await self._backend.vault_add(secret, text("value"), session.user))
        raise web.HTTPSeeOther("/vault")

    async def _vault_change(self, request: web.Request) -> web.StreamResponse:
        session = request[SESSION_KEY]
        form = await request.post()
        name = request.match_info["name"]
        action, value, groups = form.get("action"), form.get("value"), form.get("groups")
        if action == "rotate" and isinstance(value, str):
            answer = await self._backend.vault_rotate(name, value, session.user)
        elif action == "scope" and isinstance(groups, str):
            answer = await self._backend.vault_scope(name, groups, session.user)
        elif action == "remove":
            answer = await self._backend.vault_remove(name, session.user)
        else:
            return self._page("refused.html", status=400, reason="rotate (with a value), scope or remove")
        session.flash.append(answer)
        raise web.HTTPSeeOther("/vault")

    async def _logout(self, request: web.Request) -> web.StreamResponse:
        self.sessions.end(request[SESSION_KEY].id)
        response = self._page("signed_out.html", logged_out=True)
        response.del_cookie(COOKIE, path="/")
        return response

    async def _events(self, request: web.Request) -> web.StreamResponse:
        """Server-sent events: each new group message as `event: message` with a JSON body."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        queue = self._backend.feed.subscribe()
        task = asyncio.current_task()
        if task is not None:
            self._streams.add(task)
        try:
            await response.write(b": connected\n\n")
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    await response.write(b": keepalive\n\n")
                    continue
                await response.write(_event(item))
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._backend.feed.unsubscribe(queue)
            if task is not None:
                self._streams.discard(task)
        with contextlib.suppress(Exception):
            await response.write_eof()
        return response


def _event(item: FeedItem) -> bytes:
    data = json.dumps({"group": item.group, "sender": item.sender, "text": item.text, "at": _when(item.at)})
    return f"event: message\ndata: {data}\n\n".encode()  # json.dumps leaves no raw newline


async def _headers(request: web.Request, response: web.StreamResponse) -> None:
    for name, value in HEADERS.items():
        response.headers[name] = value


def base_url(settings: DashboardConfig, port: int | None = None) -> str:
    """Where a browser on this machine reaches the dashboard (an unspecified bind: via loopback)."""
    host = settings.bind
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{settings.port if port is None else port}"
