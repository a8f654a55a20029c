"""The Groups page: every registered group, and its changes as the chat's own admin commands.

A form never decides anything here. It is turned into a `GroupCommand` — the argument list a
main-chat admin would type after `/register`, `/unregister`, `/senders`, `/allow`, `/block` or
`/budget set` (or `clawgate groups set NAME --runtime R`, the one setting only the CLI changes) —
and the backend runs that command's code as the session's admin. So the page validates nothing
itself: a bad field gets the command's own usage line and reason as the flash, and nothing is
written. The only step of its own is the confirmation box that Unregister needs (no script: a
ticked checkbox in the same form, checked here).

The server registers these routes with one call (`add_routes`), handing over its page renderer
and the request's session, so this module needs nothing from dashboard/server.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from dashboard.auth import Session
from dashboard.backend import Backend, GroupCommand

Render = Callable[..., web.Response]  # the server's page renderer: (request, template, **context)
SessionOf = Callable[[web.Request], Session]

TEMPLATE = "groups.html"
LIMIT_WORDS = ("daily", "monthly", "daily-tokens", "monthly-tokens")  # /budget set's words
RUNTIME_CHOICES = ("default", "builtin", "claude")  # clawgate groups set --runtime
POLICIES = ("open", "members", "approval")  # /senders
Form = Mapping[str, object]  # a posted form (its files, if any, are ignored)


def _text(form: Form, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def register_command(form: Form) -> GroupCommand:
    """`/register <chat-id> <name>` and its flags, each field one argument as if quoted in the chat."""
    args = [_text(form, "chat_id"), _text(form, "name")]
    if trigger := _text(form, "trigger"):
        args += ["--trigger", trigger]
    if _text(form, "no_trigger") == "on":
        args.append("--no-trigger")
    for flag in ("runtime", "senders", "members"):
        if value := _text(form, flag):
            args += [f"--{flag}", value]
    return GroupCommand("register", tuple(args))


def change_command(folder: str, form: Form) -> GroupCommand | str:
    """The command a group's form stands for, or what the page says when it stands for none."""
    action = _text(form, "action")
    if action == "senders":
        return GroupCommand("senders", (folder, _text(form, "policy")))
    if action in ("allow", "block"):
        return GroupCommand("allow" if action == "allow" else "block", (folder, _text(form, "sender")))
    if action == "runtime":
        return GroupCommand("set", (folder, "--runtime", _text(form, "runtime")))
    if action == "budget":
        return GroupCommand("budget", ("set", folder, _text(form, "limit"), _text(form, "amount")))
    if action == "unregister":
        if _text(form, "confirm") != "yes":
            return f"{folder} was not unregistered: tick the box to confirm, then press Unregister again"
        return GroupCommand("unregister", (folder,))
    return "unknown action: senders, allow, block, runtime, budget or unregister"


class GroupsPage:
    def __init__(self, backend: Backend, render: Render, session_of: SessionOf) -> None:
        self._backend = backend
        self._render = render
        self._session_of = session_of

    async def show(self, request: web.Request) -> web.StreamResponse:
        context = {"v": await self._backend.groups(), "limits": LIMIT_WORDS}
        return self._render(request, TEMPLATE, runtimes=RUNTIME_CHOICES, policies=POLICIES, **context)

    async def register(self, request: web.Request) -> web.StreamResponse:
        session = self._session_of(request)
        command = register_command(await request.post())
        session.flash.append(await self._backend.group_command(command, session.user))
        raise web.HTTPSeeOther("/groups")

    async def change(self, request: web.Request) -> web.StreamResponse:
        session = self._session_of(request)
        command = change_command(request.match_info["folder"], await request.post())
        if isinstance(command, str):
            session.flash.append(command)
        else:
            session.flash.append(await self._backend.group_command(command, session.user))
        raise web.HTTPSeeOther("/groups")


def add_routes(app: web.Application, backend: Backend, render: Render, session_of: SessionOf) -> None:
    page = GroupsPage(backend, render, session_of)
    app.router.add_get("/groups", page.show)
    app.router.add_post("/groups", page.register)
    app.router.add_post("/groups/{folder}", page.change)
