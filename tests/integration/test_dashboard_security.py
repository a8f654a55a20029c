"""The dashboard's security, against a real gateway (Docker sandbox, vault process, SQLite).

A real aiohttp client talks HTTP to the dashboard the gateway serves on loopback: no page
without a session, a login link that works once, the cookie's attributes, forged cross-site
POSTs refused (the approval they aim at stays pending), the security headers on every
response, the live feed over server-sent events, and — scanned in every response body — no
model key, login token or session id.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yarl
from markupsafe import escape

from dashboard.auth import COOKIE, mint_login
from dashboard.server import HEADERS
from gateway.app import Gateway, StartupError
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.integration.test_gateway_docker import REAL_KEY, config_for, containers

DASHBOARD = "[dashboard]\nenabled = true\nport = 0\n"


class Recorder:
    """Every response body the client saw, for the leak scan at the end of each test."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, int, bytes, dict[str, str]]] = []

    async def get(self, client: aiohttp.ClientSession, path: str, **kw: object) -> tuple[int, str]:
        async with client.get(path, allow_redirects=False, **kw) as r:  # type: ignore[arg-type]
            body = await r.read()
            self.bodies.append((path, r.status, body, dict(r.headers)))
            return r.status, body.decode()

    async def post(self, client: aiohttp.ClientSession, path: str, **kw: object) -> tuple[int, str]:
        async with client.post(path, allow_redirects=False, **kw) as r:  # type: ignore[arg-type]
            body = await r.read()
            self.bodies.append((path, r.status, body, dict(r.headers)))
            return r.status, body.decode()

    def assert_clean(self, *secrets: str) -> None:
        assert self.bodies
        for path, status, body, headers in self.bodies:
            for secret in secrets:
                assert secret.encode() not in body, f"{path} ({status}) shows a secret"
            for name, value in HEADERS.items():
                assert headers.get(name) == value, f"{path} ({status}) lacks {name}"


@pytest.fixture
async def gateway(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image, extra=DASHBOARD), config_dir, data_dir)
    await gw.start([channel])
    gw.test_channel = channel  # type: ignore[attr-defined]
    yield gw
    await gw.stop(grace_s=5)
    assert containers(docker_client, gw) == []


def client_for(gw: Gateway) -> aiohttp.ClientSession:
    # unsafe=True: aiohttp's jar otherwise ignores cookies set by an IP-address host
    return aiohttp.ClientSession(base_url=base(gw), cookie_jar=aiohttp.CookieJar(unsafe=True))


def base(gw: Gateway) -> str:
    assert gw.endpoints.dashboard_server is not None and gw.endpoints.dashboard_server.port
    return f"http://127.0.0.1:{gw.endpoints.dashboard_server.port}"


async def login(rec: Recorder, client: aiohttp.ClientSession, data_dir: Path) -> str:
    token = mint_login(data_dir, "console:owner")
    status, _ = await rec.get(client, f"/login?t={token}")
    assert status == 303
    return token


async def test_no_page_without_a_session_and_the_link_works_once(gateway: Gateway) -> None:
    rec = Recorder()
    async with client_for(gateway) as client:
        for path in ("/", "/approvals", "/events"):
            status, body = await rec.get(client, path)
            assert status == 401 and "clawgate dashboard url" in body
        status, _ = await rec.post(client, "/approvals/x", data={"decision": "approve"})
        assert status == 401
        status, _ = await rec.get(client, "/login?t=guessed")
        assert status == 403
        status, _ = await rec.get(client, "/static/style.css")
        assert status == 200  # static files are public: they hold nothing

        token = mint_login(gateway.data_dir, "console:owner")
        # A HEAD (link checkers, prefetchers) neither logs in nor uses the link up.
        async with client.head(f"/login?t={token}", allow_redirects=False) as r:
            assert r.status == 405 and "Set-Cookie" not in r.headers
        async with client.get(f"/login?t={token}", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
            set_cookie = r.headers["Set-Cookie"]
            rec.bodies.append(("/login", r.status, await r.read(), dict(r.headers)))
        assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie
        session_id = client.cookie_jar.filter_cookies(yarl.URL(base(gateway)))[COOKIE].value
        status, body = await rec.get(client, "/")
        assert status == 200 and "Overview" in body and "capture" in body  # the channel is listed
        status, body = await rec.get(client, "/approvals")
        assert status == 200 and "Nothing waits for a decision." in body

    async with client_for(gateway) as other:  # another browser, same link
        status, _ = await rec.get(other, f"/login?t={token}")
        assert status == 403
        assert COOKIE not in {c.key for c in other.cookie_jar}
        status, _ = await rec.get(other, "/")
        assert status == 401
    rec.assert_clean(REAL_KEY, token, session_id)


async def test_a_forged_cross_site_post_is_refused_and_decides_nothing(gateway: Gateway) -> None:
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
    asking = asyncio.create_task(gateway.approvals.request_approval("Pay 5 NEAR", "to bob", "main"))
    await channel.wait_until(lambda: len(channel.prompts) == 1)
    approval_id = channel.prompts[0][1].id
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        _, page = await rec.get(client, "/approvals")
        assert "Pay 5 NEAR" in page and f"/approvals/{approval_id}" in page
        session = gateway.endpoints.dashboard_server.sessions  # type: ignore[union-attr]
        [csrf] = [s.csrf for s in session._by_id.values()]
        own, evil = base(gateway), "https://evil.example"
        forged = [
            # another site's form: the browser says so in both headers (and has no token)
            ({"Origin": evil, "Sec-Fetch-Site": "cross-site"}, {"decision": "approve"}),
            # even with the right token, a cross-site request is refused
            (
                {"Origin": evil, "Sec-Fetch-Site": "cross-site"},
                {"decision": "approve", "csrf": csrf},
            ),
            ({"Origin": evil}, {"decision": "approve", "csrf": csrf}),
            ({"Sec-Fetch-Site": "same-site", "Origin": own}, {"decision": "approve", "csrf": csrf}),
            ({}, {"decision": "approve", "csrf": csrf}),  # neither header: no browser posts like that
            # same origin, but no token or a wrong one (e.g. a script that guessed the origin)
            ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {"decision": "approve"}),
            ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {"decision": "approve", "csrf": "x" * 43}),
        ]
        for headers, form in forged:
            status, body = await rec.post(client, f"/approvals/{approval_id}", headers=headers, data=form)
            assert status == 403 and "Refused" in body, (headers, form)
        record = await gateway.store.approval(approval_id)
        assert record is not None and record.state == "pending"
        assert channel.outcomes == [] and not asking.done()

        # The dashboard's own form: decided once, as the session's admin, prompt edited.
        headers = {"Origin": own, "Sec-Fetch-Site": "same-origin"}
        form = {"decision": "deny", "csrf": csrf}
        status, _ = await rec.post(client, f"/approvals/{approval_id}", headers=headers, data=form)
        assert status == 303
        assert await asyncio.wait_for(asking, 10) == "denied"
        _, page = await rec.get(client, "/approvals")
        assert "Denied: Pay 5 NEAR" in page  # what the clicker is told
        assert "console:owner" in page and "denied" in page  # the history
        await channel.wait_until(lambda: len(channel.outcomes) == 1)
        assert (
            channel.outcomes[0][3].state == "denied" and channel.outcomes[0][3].decided_by == "console:owner"
        )
        # A second attempt, from the dashboard and from the chat button, changes nothing.
        status, _ = await rec.post(
            client, f"/approvals/{approval_id}", headers=headers, data={**form, "decision": "approve"}
        )
        assert status == 303
        _, page = await rec.get(client, "/approvals")
        assert "already decided: denied by console:owner" in page
        assert (await channel.press(approval_id)).startswith("already decided: denied")
        record = await gateway.store.approval(approval_id)
        assert record is not None and record.state == "denied" and len(channel.outcomes) == 1

        # Logging out ends the session server-side: the old cookie opens nothing.
        status, _ = await rec.post(client, "/logout", headers=headers, data={"csrf": csrf})
        assert status == 200
        assert len(session) == 0
    rec.assert_clean(REAL_KEY, token)


async def test_a_group_message_reaches_the_live_feed(gateway: Gateway) -> None:
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        async with client.get("/events") as events:
            assert events.status == 200 and events.headers["Content-Type"] == "text/event-stream"
            for name, value in HEADERS.items():
                assert events.headers[name] == value
            assert (await events.content.readline()) == b": connected\n"
            await events.content.readline()
            await gateway.ingest(channel.message("<b>hello</b> dashboard", sender_name="Bob"))
            lines = [await asyncio.wait_for(events.content.readline(), 10) for _ in range(2)]
        assert lines[0] == b"event: message\n"
        item = json.loads(lines[1].removeprefix(b"data: "))
        assert (
            item["group"] == "main" and item["sender"] == "Bob" and item["text"] == "<b>hello</b> dashboard"
        )
        _, page = await rec.get(client, "/")
        assert "&lt;b&gt;hello&lt;/b&gt; dashboard" in page and "<b>hello</b>" not in page  # escaped
        await channel.wait_for(1)
        await gateway.drain()
    rec.assert_clean(REAL_KEY, token)


async def test_a_taken_port_stops_the_start(dirs, model_server, sandbox_image, docker_client) -> None:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        extra = f"[dashboard]\nenabled = true\nport = {port}\n"
        gw = Gateway(config_for(model_server, sandbox_image, extra=extra), config_dir, data_dir)
        with pytest.raises(StartupError, match=rf"dashboard: cannot listen on 127.0.0.1:{port}"):
            await gw.start([CaptureChannel()])
    assert containers(docker_client, gw) == []


async def test_a_dead_letter_is_retried_from_the_dashboard_and_answered(gateway: Gateway) -> None:
    """Retry is the chat's /retry: the messages go back to the queue and the real agent answers."""
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
    main = gateway.registry.main
    assert main is not None
    # A message that failed for good: stored, then dead-lettered before any turn took it.
    await gateway.store.ingest(channel.message("@Andy please answer after the retry"), "pending")
    letter = await gateway.store.dead_letter_pending(main, "test: the model was down")
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        status, page = await rec.get(client, "/")
        assert status == 200 and 'href="/dead-letters">1<' in page
        status, page = await rec.get(client, "/dead-letters")
        assert status == 200 and f'id="letter-{letter}"' in page and "test: the model was down" in page
        session = gateway.endpoints.dashboard_server.sessions  # type: ignore[union-attr]
        [csrf] = [s.csrf for s in session._by_id.values()]
        headers = {"Origin": base(gateway), "Sec-Fetch-Site": "same-origin"}

        status, _ = await rec.post(
            client,
            f"/dead-letters/{letter}",
            headers={**headers, "Sec-Fetch-Site": "cross-site"},
            data={"action": "retry", "csrf": csrf},
        )
        assert status == 403 and await gateway.store.dead_letter(letter) is not None

        status, _ = await rec.post(
            client, f"/dead-letters/{letter}", headers=headers, data={"action": "retry", "csrf": csrf}
        )
        assert status == 303
        [(chat, reply)] = await channel.wait_for(1, timeout=120)
        assert chat == "console:main" and "please answer after the retry" in reply  # the echo model
        status, page = await rec.get(client, "/dead-letters")
        assert f"dead letter #{letter} queued again" in page and "No dead letter." in page
        status, _ = await rec.post(
            client, f"/dead-letters/{letter}", headers=headers, data={"action": "drop", "csrf": csrf}
        )
        _, page = await rec.get(client, "/dead-letters")
        assert f"no dead letter #{letter}" in page
        await gateway.drain()
    rec.assert_clean(REAL_KEY, token)


async def test_a_session_of_an_admin_who_was_removed_decides_nothing(gateway: Gateway) -> None:
    """The dashboard adds no privilege: its identity is judged at each decision, like a click."""
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
    gateway.approvals.set_admins(["tg:42"])
    asking = asyncio.create_task(gateway.approvals.request_approval("Pay 1 NEAR", "to bob", "main"))
    await channel.wait_until(lambda: len(channel.prompts) == 1)
    approval_id = channel.prompts[0][1].id
    rec = Recorder()
    async with client_for(gateway) as client:
        token = mint_login(gateway.data_dir, "tg:42")
        status, _ = await rec.get(client, f"/login?t={token}")
        assert status == 303
        gateway.approvals.set_admins([])  # a reload took tg:42 out of [admin] users
        [csrf] = [s.csrf for s in gateway.endpoints.dashboard_server.sessions._by_id.values()]  # type: ignore[union-attr]
        headers = {"Origin": base(gateway), "Sec-Fetch-Site": "same-origin"}
        form = {"decision": "approve", "csrf": csrf}
        status, _ = await rec.post(client, f"/approvals/{approval_id}", headers=headers, data=form)
        assert status == 303
        _, page = await rec.get(client, "/approvals")
        assert "only an admin can approve or deny this" in page
        record = await gateway.store.approval(approval_id)
        assert record is not None and record.state == "pending" and not asking.done()

        gateway.approvals.set_admins(["tg:42"])  # back in the list: the same session decides
        status, _ = await rec.post(client, f"/approvals/{approval_id}", headers=headers, data=form)
        assert await asyncio.wait_for(asking, 10) == "approved"
        record = await gateway.store.approval(approval_id)
        assert record is not None and record.decided_by == "tg:42"
    rec.assert_clean(REAL_KEY, token)


async def test_tasks_are_paused_resumed_and_cancelled_through_the_scheduler(gateway: Gateway) -> None:
    task = await gateway.scheduler.schedule("main", "say <hi>", every_s=3600, created_by="console:owner")
    task_id = int(task["id"])
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        _, page = await rec.get(client, "/tasks")
        assert f'id="task-{task_id}"' in page and "say &lt;hi&gt;" in page and ">Pause<" in page
        [csrf] = [s.csrf for s in gateway.endpoints.dashboard_server.sessions._by_id.values()]  # type: ignore[union-attr]
        headers = {"Origin": base(gateway), "Sec-Fetch-Site": "same-origin"}
        for action, state in (("pause", "paused"), ("resume", "active"), ("cancel", "cancelled")):
            status, _ = await rec.post(
                client, f"/tasks/{task_id}", headers=headers, data={"action": action, "csrf": csrf}
            )
            assert status == 303
            stored = await gateway.store.task(task_id)
            assert stored is not None and stored.status == state, action
            _, page = await rec.get(client, "/tasks")
            assert f"task {task_id}: {state}" in page
        assert ">Pause<" not in page and ">Cancel<" not in page  # a cancelled task has no buttons
        status, _ = await rec.post(
            client, f"/tasks/{task_id}", headers=headers, data={"action": "x", "csrf": csrf}
        )
        assert status == 400
        status, _ = await rec.post(
            client, "/tasks/999", headers=headers, data={"action": "pause", "csrf": csrf}
        )
        _, page = await rec.get(client, "/tasks")
        assert "no task" in page
    rec.assert_clean(REAL_KEY, token)


async def test_spend_shows_metered_calls_and_how_close_each_budget_is_in_the_chats_words(  # type: ignore[no-untyped-def]
    dirs, model_server, sandbox_image, docker_client
) -> None:
    from gateway.store.metered import MeteredRow

    config_dir, data_dir = dirs
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    extra = DASHBOARD + "[budget.global]\ndaily_usd = 2\n[budget.groups.main]\ndaily_tokens = 1000\n"
    gw = Gateway(config_for(model_server, sandbox_image, extra=extra), config_dir, data_dir)
    await gw.start([CaptureChannel()])
    try:
        now = time.time()
        evil = '<img src=x onerror="document.title=1">team'  # a name no registration accepts
        rows = [
            MeteredRow("call-1", "main", None, "anthropic", "claude-x", 600, 300, 0, 0, 1_500_000, True, now),
            MeteredRow("call-2", evil, None, "anthropic", "claude-x", 5, 5, 0, 0, 100_000, True, now),
        ]
        assert await gw.store.add_metered_usage(rows) == 2
        rec = Recorder()
        async with client_for(gw) as client:
            token = await login(rec, client, gw.data_dir)
            status, page = await rec.get(client, "/spend")
            assert status == 200
            assert "claude-x" in page and "$1.50" in page and "900" in page
            # In /budget's words; the shared limit counts every group's calls, the evil one's too.
            assert '<td>global <span class="muted">(shared by all groups)</span></td>' in page
            assert "daily $2.00 (used $1.60, 80%)" in page
            assert "daily-tokens 1,000 tokens (used 900 tokens, 90%)" in page
            assert "daily_usd" not in page and "daily_tokens" not in page
            assert f"<td>{escape(evil)}</td>" in page and "<img" not in page
        rec.assert_clean(REAL_KEY, token)
    finally:
        await gw.stop(grace_s=5)
