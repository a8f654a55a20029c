"""The dashboard's Groups page against a real gateway (Docker sandbox, vault process, SQLite).

A real aiohttp client, logged in with a link from `clawgate dashboard url`'s code, registers a
group from the page and finds it in the database and in the chat's `/groups`; every bad
registration gets exactly the answer the chat's `/register` gives for the same arguments and
changes nothing. Sender policy, allow/block, runtime and budget change through the chat's (or the
CLI's) code; Unregister needs its confirmation box; forged cross-site POSTs change nothing; HTML in
a trigger or chat id is shown escaped; a mount the allowlist refuses is listed with the reason the
sandbox start would log. Budgets read as the chat's `/budget` and `/usage` read them (the words
`/budget set` takes, never the config key), and each card also lists the `[budget.global]` limits
that stop its group too, with what a call metered by the real vault used of each and, after
calls from two groups, each group's part of it. With the main chat on Telegram (the fake Bot
API), five strangers held in an `approval` group under a cap of two prompts are listed on its
card as `/senders` lists them (names escaped and clipped); Allow from the card answers one held
message once and brings the next prompt; a forged Allow changes nothing. Every response is
scanned for the model key, the login token and the session id.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import aiohttp
import pytest
import yarl
from markupsafe import escape

from channels.console import OWNER_ID
from core.models import Group, InboundMessage
from dashboard.auth import COOKIE, mint_login
from gateway.app import Gateway
from gateway.commands import Command
from gateway.dashboard_groups import REFUSED
from groups.mounts import ALLOWLIST_FILE, plan_mounts
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.fakes.telegram_api import FakeBotApi
from tests.integration.test_dashboard_charts import one_turn
from tests.integration.test_dashboard_security import (
    DASHBOARD,
    Recorder,
    base,
    client_for,
    gateway,
    login,
)
from tests.integration.test_dashboard_vault import csrf_of
from tests.integration.test_gateway_docker import REAL_KEY, config_for, containers
from tests.integration.test_sender_flood_telegram import about
from tests.integration.test_senders_telegram import ADMIN, MAIN, TEAM, Env, until
from tests.integration.test_telegram_approvals import telegram_main_chat_toml

__all__ = ["gateway"]  # the fixture, shared with the security tests

TEAM_CHAT = "tg:-1001234"


def own(gw: Gateway) -> dict[str, str]:
    return {"Origin": base(gw), "Sec-Fetch-Site": "same-origin"}


async def chat(gw: Gateway, name: str, *args: str) -> str:
    """The answer the main chat's `/name args…` gets from the console owner (the chat's own code)."""
    main = gw.registry.main
    assert main is not None
    message = InboundMessage(
        main.chat_id, f"t-{time.time_ns()}", OWNER_ID, "owner", f"/{name}", time.time(), "console"
    )
    reply = await gw.commands.execute(Command(name, list(args)), message, main)
    assert reply is not None
    return reply


async def registered(gw: Gateway) -> list[tuple[str, str, str, bool, str | None, str]]:
    """What the database holds, not what the registry remembers."""
    return sorted(
        (g.folder, g.chat_id, g.trigger, g.requires_trigger, g.runtime, g.senders)
        for g in await gw.store.groups()
    )


async def flash_after(
    rec: Recorder, client: aiohttp.ClientSession, gw: Gateway, path: str, form: dict[str, str]
) -> str:
    """Post a form as the page does; the page it redirects to, with the answer as its flash."""
    status, _ = await rec.post(client, path, headers=own(gw), data={"csrf": csrf_of(gw), **form})
    assert status == 303
    status, page = await rec.get(client, "/groups")
    assert status == 200
    return page


def session_id(client: aiohttp.ClientSession, gw: Gateway) -> str:
    return client.cookie_jar.filter_cookies(yarl.URL(base(gw)))[COOKIE].value


def card(page: str, folder: str) -> str:
    """One group's card on the Groups page."""
    start = page.index(f'id="group-{folder}"')
    end = page.find("<article", start)
    return page[start : end if end > 0 else len(page)]


# Every token of the fake model costs $0.10, so one call (1 in, 1 out) is $0.20 and 2 tokens.
BUDGETED = (
    DASHBOARD
    + "[prices.fake]\ninput = 100000\noutput = 100000\n"
    + "[budget.groups.main]\ndaily_usd = 2\n"
    + "[budget.global]\nmonthly_tokens = 100\n"
)


@pytest.fixture
async def budgeted(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[Gateway]:  # type: ignore[no-untyped-def]
    """A gateway whose main group has its own daily USD limit under a global monthly token limit."""
    config_dir, data_dir = dirs
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image, extra=BUDGETED), config_dir, data_dir)
    await gw.start([channel])
    gw.test_channel = channel  # type: ignore[attr-defined]
    yield gw
    await gw.stop(grace_s=5)
    assert containers(docker_client, gw) == []


async def stored_spend(gw: Gateway, folder: str, timeout_s: float = 20) -> tuple[int, int]:
    """(tokens, cost_micros) of `folder` once the vault's report of its calls is stored."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        if found := (await gw.store.spend_since(0)).get(folder):
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"no metered call of {folder} was stored within {timeout_s:g}s")


async def test_register_from_the_page_and_bad_registrations_get_the_chats_answer(gateway: Gateway) -> None:
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        status, page = await rec.get(client, "/groups")
        assert status == 200 and 'id="group-main"' in page and 'id="register-group"' in page
        assert 'aria-current="page">Groups' in page

        form = {
            "chat_id": TEAM_CHAT,
            "name": "team",
            "trigger": "@Bob",
            "senders": "members",
            "members": "tg:11,tg:12",
            "runtime": "builtin",
        }
        page = await flash_after(rec, client, gateway, "/groups", form)
        said = (
            f"registered team for {TEAM_CHAT} (trigger @Bob, runtime builtin, senders members: tg:11, tg:12)"
        )
        assert f'<p class="flash" role="status">{said}</p>' in page
        assert (
            "team",
            TEAM_CHAT,
            "@Bob",
            True,
            "builtin",
            "members",
        ) in await registered(gateway)
        assert (
            "team: tg:-1001234, @Bob, never active, runtime builtin, senders members (2 allowed, 0 blocked)"
            in (await chat(gateway, "groups"))
        )
        assert 'id="group-team"' in page and "<code>tg:11</code> allowed" in page
        assert "senders members (2 allowed, 0 blocked)" in page

        # Each bad registration: the page's flash is the chat's own answer, and nothing changes.
        before = await registered(gateway)
        bad = [
            ({"chat_id": "tg:-1 2", "name": "spaced"}, "invalid chat id"),
            ({"chat_id": "", "name": "blank"}, "invalid chat id"),
            ({"chat_id": "tg:-1005", "name": "team"}, "already registered"),
            ({"chat_id": TEAM_CHAT, "name": "again"}, "already registered"),
            ({"chat_id": "tg:-1006", "name": "rt", "runtime": "codex"}, "unknown runtime"),
            ({"chat_id": "tg:-1007", "name": "../x"}, "invalid group folder"),
            ({"chat_id": "tg:-1008", "name": "<script>alert(1)</script>"}, "invalid group folder"),
            ({"chat_id": "tg:-1009", "name": "trig", "trigger": "Bob"}, "unexpected argument"),
            ({"chat_id": "tg:-1010", "name": "trig", "trigger": "@a b"}, "unexpected argument"),
            (
                {"chat_id": "tg:-1011", "name": "mem", "members": "<img src=x onerror=alert(1)>"},
                "invalid sender",
            ),
            ({"chat_id": "tg:-1012", "name": "pol", "senders": "everyone"}, "unknown sender policy"),
        ]
        for form, reason in bad:
            args = [form["chat_id"], form["name"]]
            for key in ("trigger", "runtime", "senders", "members"):
                if key in form:
                    args += [f"--{key}", form[key]]
            expected = await chat(gateway, "register", *args)
            assert expected.startswith("usage: /register") and reason in expected, (form, expected)
            page = await flash_after(rec, client, gateway, "/groups", form)
            assert f'<p class="flash" role="status">{escape(expected)}</p>' in page, form
            assert await registered(gateway) == before, form
            assert "<script>alert(1)" not in page and "<img src=x" not in page
        assert {g.folder for g in gateway.registry.all()} == {"main", "team"}
    rec.assert_clean(REAL_KEY, token, session_id(client, gateway))


async def test_edit_senders_runtime_budget_and_unregister_with_its_confirmation(gateway: Gateway) -> None:
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        sid = session_id(client, gateway)
        await flash_after(rec, client, gateway, "/groups", {"chat_id": TEAM_CHAT, "name": "team"})
        assert gateway.registry.by_folder("team") is not None
        path = "/groups/team"

        # Sender policy: /senders team approval.
        page = await flash_after(rec, client, gateway, path, {"action": "senders", "policy": "approval"})
        assert "team: senders approval (0 allowed, 0 blocked)" in page
        assert ("team", TEAM_CHAT, "@Andy", True, None, "approval") in await registered(gateway)
        expected = await chat(gateway, "senders", "team", "everyone")
        page = await flash_after(rec, client, gateway, path, {"action": "senders", "policy": "everyone"})
        assert str(escape(expected)) in page and "unknown sender policy" in expected
        assert ("team", TEAM_CHAT, "@Andy", True, None, "approval") in await registered(gateway)

        # Allow and block a sender: /allow, /block (stored, and the gate knows at once).
        page = await flash_after(rec, client, gateway, path, {"action": "allow", "sender": "tg:42"})
        assert "team: tg:42 may trigger the assistant" in page
        page = await flash_after(rec, client, gateway, path, {"action": "block", "sender": "tg:43"})
        assert "team: tg:43 is blocked (their messages are context only)" in page
        listed = {"tg:42": "allowed", "tg:43": "blocked"}
        assert gateway.senders.senders("team") == listed
        assert (await gateway.store.group_senders())["team"] == listed
        assert "<code>tg:42</code> allowed" in page and "<code>tg:43</code> blocked" in page
        hostile = '"><script>alert(1)</script>'
        expected = await chat(gateway, "allow", "team", hostile)
        page = await flash_after(rec, client, gateway, path, {"action": "allow", "sender": hostile})
        assert "invalid sender id" in expected and str(escape(expected)) in page
        assert "<script>alert(1)" not in page
        assert (await gateway.store.group_senders())["team"] == listed

        # Runtime: `clawgate groups set team --runtime …` (the CLI's code and answer).
        page = await flash_after(rec, client, gateway, path, {"action": "runtime", "runtime": "claude"})
        assert "team: runtime claude" in page
        assert ("team", TEAM_CHAT, "@Andy", True, "claude", "approval") in await registered(gateway)
        page = await flash_after(rec, client, gateway, path, {"action": "runtime", "runtime": "codex"})
        assert "unknown runtime &#39;codex&#39;: use one of builtin, claude, default" in page
        assert gateway.registry.by_folder("team").runtime == "claude"  # type: ignore[union-attr]
        await flash_after(rec, client, gateway, path, {"action": "runtime", "runtime": "default"})
        assert ("team", TEAM_CHAT, "@Andy", True, None, "approval") in await registered(gateway)

        # Budget: /budget set team daily 5; a bad amount gets /budget's answer and changes nothing.
        page = await flash_after(
            rec, client, gateway, path, {"action": "budget", "limit": "daily", "amount": "5"}
        )
        assert "budget set: team daily: $5.00" in page
        assert (await gateway.store.budget_overrides())[("team", "daily_usd")] == 5_000_000
        assert "daily $5.00 (used $0.00, 0%)" in card(page, "team") and "daily_usd" not in page
        expected = await chat(gateway, "budget", "set", "team", "daily", "-3")
        page = await flash_after(
            rec, client, gateway, path, {"action": "budget", "limit": "daily", "amount": "-3"}
        )
        assert expected.startswith("usage: /budget") and str(escape(expected)) in page
        assert (await gateway.store.budget_overrides())[("team", "daily_usd")] == 5_000_000

        # The main group: its own answers (no sender policy, never unregistered).
        expected = await chat(gateway, "unregister", "main")
        page = await flash_after(
            rec, client, gateway, "/groups/main", {"action": "unregister", "confirm": "yes"}
        )
        assert "the main group cannot be unregistered" in expected and str(escape(expected)) in page
        assert gateway.registry.main is not None

        # Unregister: without the box ticked nothing happens; with it, /unregister.
        page = await flash_after(rec, client, gateway, path, {"action": "unregister"})
        assert "team was not unregistered: tick the box to confirm" in page
        assert "team" in {g[0] for g in await registered(gateway)}
        page = await flash_after(rec, client, gateway, path, {"action": "unregister", "confirm": "yes"})
        assert "unregistered team (its folder is kept)" in page
        assert "team" not in {g[0] for g in await registered(gateway)}
        assert gateway.registry.by_folder("team") is None and 'id="group-team"' not in page
        page = await flash_after(rec, client, gateway, path, {"action": "unregister", "confirm": "yes"})
        assert "no registered group &#39;team&#39;" in page
        page = await flash_after(rec, client, gateway, path, {"action": "format-disk"})
        assert "unknown action" in page
    rec.assert_clean(REAL_KEY, token, sid)


async def test_forged_posts_to_the_groups_forms_change_nothing(gateway: Gateway) -> None:
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        await flash_after(rec, client, gateway, "/groups", {"chat_id": TEAM_CHAT, "name": "team"})
        before = await registered(gateway)
        csrf = csrf_of(gateway)
        own_site, evil = base(gateway), "https://evil.example"
        attempts = [
            ("/groups", {"chat_id": "tg:-666", "name": "planted", "no_trigger": "on"}),
            ("/groups/team", {"action": "unregister", "confirm": "yes"}),
            ("/groups/team", {"action": "senders", "policy": "open"}),
            ("/groups/team", {"action": "allow", "sender": "tg:666"}),
            ("/groups/team", {"action": "budget", "limit": "daily", "amount": "off"}),
            ("/groups/team", {"action": "runtime", "runtime": "claude"}),
        ]
        headers_and_tokens = [
            ({"Origin": evil, "Sec-Fetch-Site": "cross-site"}, {}),
            ({"Origin": evil, "Sec-Fetch-Site": "cross-site"}, {"csrf": csrf}),
            ({"Origin": evil}, {"csrf": csrf}),
            ({"Origin": own_site, "Sec-Fetch-Site": "same-origin"}, {}),
            ({"Origin": own_site, "Sec-Fetch-Site": "same-origin"}, {"csrf": "x" * 43}),
        ]
        for path, form in attempts:
            for headers, extra in headers_and_tokens:
                status, body = await rec.post(client, path, headers=headers, data={**form, **extra})
                assert status == 403 and "Refused" in body, (path, headers, extra)
        assert await registered(gateway) == before
        assert gateway.senders.senders("team") == {}
        assert await gateway.store.budget_overrides() == {}
    # A session whose admin has since left [admin] users: every form gets the refusal, no change.
    async with client_for(gateway) as former:
        status, _ = await rec.get(former, f"/login?t={mint_login(gateway.data_dir, 'tg:999')}")
        assert status == 303
        [csrf_former] = [
            s.csrf for s in gateway.endpoints.dashboard_server.sessions._by_id.values() if s.user == "tg:999"
        ]  # type: ignore[union-attr]
        for path, form in attempts:
            status, _ = await rec.post(former, path, headers=own(gateway), data={**form, "csrf": csrf_former})
            assert status == 303
            _, page = await rec.get(former, "/groups")
            assert REFUSED in page, (path, form)
        assert await registered(gateway) == before
        assert gateway.senders.senders("team") == {} and await gateway.store.budget_overrides() == {}
    async with client_for(gateway) as stranger:  # no session at all
        status, _ = await rec.post(stranger, "/groups", data={"chat_id": "tg:-667", "name": "planted"})
        assert status == 401
    assert await registered(gateway) == before
    rec.assert_clean(REAL_KEY, token)


@pytest.fixture
def mount_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """An allowed root with a granted and a blocked directory, and a directory outside it."""
    shared = tmp_path.resolve() / "shared"
    (shared / "docs").mkdir(parents=True)
    (shared / ".ssh").mkdir()
    outside = tmp_path.resolve() / "outside"
    outside.mkdir()
    return shared, outside


async def test_html_is_shown_escaped_and_a_refused_mount_says_why(
    gateway: Gateway, mount_dirs: tuple[Path, Path]
) -> None:
    shared, outside = mount_dirs
    allowlist = {"allowed_roots": [{"path": str(shared)}], "blocked_patterns": [], "non_main_read_only": True}
    (gateway.config_dir / ALLOWLIST_FILE).write_text(json.dumps(allowlist))
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        trigger, chat_id = "@<script>alert('t')</script>", "tg:<b>-42</b>"
        page = await flash_after(
            rec, client, gateway, "/groups", {"chat_id": chat_id, "name": "xss", "trigger": trigger}
        )
        assert gateway.registry.by_folder("xss") is not None  # the chat accepts both: one word each
        assert "<script>alert(" not in page and "<b>-42</b>" not in page
        assert (
            f"<code>{escape(trigger)}</code>" in page
            and f'<code class="chat">{escape(chat_id)}</code>' in page
        )

        mounts = [
            {"host_path": str(shared / "docs"), "read_write": True},
            {"host_path": str(shared / ".ssh")},
            {"host_path": str(outside)},
        ]
        await gateway.registry.set_mounts("xss", mounts)
        group = gateway.registry.by_folder("xss")
        assert isinstance(group, Group)
        plan = plan_mounts(
            group,
            gateway.config_dir / ALLOWLIST_FILE,
            gateway.config_dir,
            gateway.data_dir,
            gateway.config.mounts.project_root,
        )
        reasons = dict((r.host_path, reason) for r, reason in plan.refused)
        assert set(reasons) == {str(shared / ".ssh"), str(outside)}
        assert "not under an allowed root" in reasons[str(outside)]
        _, page = await rec.get(client, "/groups")
        card = page[page.index('id="group-xss"') :]
        granted = f"<code>{shared / 'docs'}</code> → <code>/workspace/extra/docs</code> (ro)"
        assert f'<span class="ok">granted</span> {granted}' in card  # read-only: not the main group
        for host, reason in reasons.items():
            assert f'<span class="bad">refused</span> <code>{host}</code>: {escape(reason)}' in card
        assert "read-only" in card  # the downgrade is noted

        # Without a valid allowlist nothing is granted, and the page says why.
        (gateway.config_dir / ALLOWLIST_FILE).write_text("{not json")
        _, page = await rec.get(client, "/groups")
        card = page[page.index('id="group-xss"') :]
        assert "granted</span>" not in card and card.count('<span class="bad">refused</span>') == 3
        assert "no extra mounts without a valid allowlist" in card and "allowlist: " in card
        # A group that asks for no extra mounts is not told about the allowlist at all.
        start = page.index('id="group-main"')
        end = page.find('id="group-', start + 1)
        main_card = page[start : end if end > 0 else len(page)]
        assert "allowlist: " not in main_card and "no extra mounts" in main_card
    rec.assert_clean(REAL_KEY, token)


async def test_budgets_read_as_in_chat_and_every_card_shows_the_shared_limits_after_a_metered_call(
    budgeted: Gateway, model_server: FakeModelServer
) -> None:
    gw = budgeted
    assert (await chat(gw, "register", TEAM_CHAT, "team")).startswith("registered team")
    rec = Recorder()
    async with client_for(gw) as client:
        token = await login(rec, client, gw.data_dir)
        _, page = await rec.get(client, "/groups")
        shared = "monthly-tokens 100 tokens (used 0 tokens, 0%)"
        assert "daily $2.00 (used $0.00, 0%)" in card(page, "main")
        assert shared in card(page, "main") and shared in card(page, "team")

        await one_turn(gw)  # main's model call goes through the real vault, which meters it
        tokens, micros = await stored_spend(gw, "main")
        calls = len([r for r in model_server.requests if r.path.startswith("/v1/messages")])
        assert calls >= 1 and (tokens, micros) == (2 * calls, 200_000 * calls)
        own = f"daily $2.00 (used ${0.2 * calls:.2f}, {10 * calls}%)"
        shared = f"monthly-tokens 100 tokens (used {2 * calls} tokens, {2 * calls}%)"

        # The chat's own lines: the same words, from the same function.
        listing = (await chat(gw, "budget")).splitlines()
        assert f"main: {own}" in listing and f"global: {shared}, shared by all groups" in listing
        usage = await chat(gw, "usage")
        assert f"  main: {own} for " in usage and f"  global: {shared} for " in usage

        _, page = await rec.get(client, "/groups")
        main, team = card(page, "main"), card(page, "team")
        [own_line] = [line for line in main.splitlines() if 'class="limit own' in line]
        assert own in own_line and "shared by all groups" not in own_line
        for one in (main, team):  # the global limit stops either group: it is on both cards
            [line] = [line for line in one.splitlines() if 'class="limit shared' in line]
            assert shared in line and "<em>shared by all groups</em>" in line and "(global)" in line
        assert "no limit of its own" in team and 'class="limit own' not in team
        assert "no limit of its own" not in main

        _, spend = await rec.get(client, "/spend")
        table = spend[spend.index('<table id="budgets">') :]
        rows = table[: table.index("</table>")].split("<tr>")[2:]  # after the header row
        assert len(rows) == 2, rows
        assert rows[0].startswith("<td>main</td>") and f">{own}</td>" in rows[0]
        assert rows[1].startswith('<td>global <span class="muted">(shared by all groups)</span></td>')
        assert f">{shared}</td>" in rows[1]
        for shown in (page, spend, "\n".join(listing), usage):  # the config's keys are not the owner's words
            assert not any(
                key in shown for key in ("daily_usd", "monthly_usd", "daily_tokens", "monthly_tokens")
            )

        # No budget line can carry markup (scopes are folders), but a name that is markup is
        # refused by /budget set with its own words, shown escaped, and nothing is stored.
        hostile = "<img src=x onerror=alert(1)>"
        expected = await chat(gw, "budget", "set", hostile, "daily", "1")
        assert "no registered group" in expected
        path = "/groups/" + quote(hostile, safe="")
        page = await flash_after(rec, client, gw, path, {"action": "budget", "limit": "daily", "amount": "1"})
        assert str(escape(expected)) in page and hostile not in page
        assert await gw.store.budget_overrides() == {}
    rec.assert_clean(REAL_KEY, token, session_id(client, gw))


# -- unknown senders waiting in an `approval` group, and each group's part of a shared limit -------

HOSTILE_NAME = "<img src=x onerror=alert(1)>" + "Z" * 200  # chosen by a stranger: markup, and long
STRANGERS = [{"id": 7100 + n, "is_bot": False, "first_name": f"Stranger{n}"} for n in range(5)]
STRANGERS[3]["first_name"] = HOSTILE_NAME
# The fake model's tokens cost $0.10 each: one call (1 in, 1 out) is $0.20.
WAITING = (
    DASHBOARD
    + "[groups]\nmax_open_sender_prompts = 2\n"
    + "[prices.fake]\ninput = 100000\noutput = 100000\n"
    + "[budget.global]\ndaily_usd = 100\n"
)


@pytest.fixture
async def tg(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[Env]:  # type: ignore[no-untyped-def]
    """A gateway whose main chat is on Telegram (the fake Bot API), with the dashboard, a cap of
    two open sender prompts per group and a global daily USD budget."""
    config_dir, _ = dirs
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    api = FakeBotApi().start()
    extra = telegram_main_chat_toml(config_dir, api) + WAITING
    config = config_for(model_server, sandbox_image, extra=extra, top=f'main_chat = "tg:{MAIN}"')
    environment = Env(config, dirs, api, model_server)
    gw = await environment.start()
    try:
        yield environment
    finally:
        await environment.stop()
        api.stop()
    assert containers(docker_client, gw) == []


async def tg_login(rec: Recorder, client: aiohttp.ClientSession, gw: Gateway) -> str:
    token = mint_login(gw.data_dir, f"tg:{ADMIN['id']}")  # the Telegram admin
    status, _ = await rec.get(client, f"/login?t={token}")
    assert status == 303
    return token


def waiting_rows(team: str) -> dict[str, str]:
    """Sender id → its row in the card's list of waiting senders."""
    rows = team.split('<li class="held-sender"')[1:]
    found = {}
    for row in rows:
        match = re.search(r'data-sender="([^"]+)"', row)
        assert match is not None, row
        found[match.group(1)] = row[: row.index("</li>")]
    return found


@pytest.mark.timeout(600)
async def test_waiting_senders_are_listed_on_the_card_and_allowed_from_it_once(tg: Env) -> None:
    env = tg
    await env.command(f"/register tg:{TEAM} team --senders approval")
    for n, user in enumerate(STRANGERS):
        env.api.push_message(TEAM, f"@Andy hi from {n}", user=user, title="Team")
        await until(lambda n=n: env.status_of(f"@Andy hi from {n}"))  # each held in this order
    assert {await env.status_of(f"@Andy hi from {n}") for n in range(5)} == {"held"}
    await env.api_wait(lambda: len(env.prompts()) == 2)
    asked = sorted(about(p) for p in env.prompts())  # posted concurrently, in no set order
    assert asked == [7100, 7101]  # the oldest two; three wait past the cap
    gw = env.gw
    assert gw is not None

    rec = Recorder()
    async with client_for(gw) as client:
        token = await tg_login(rec, client, gw)
        _, page = await rec.get(client, "/groups")
        team = card(page, "team")
        assert (
            "5 unknown senders waiting:" in team and "2 asked now in the main chat, 3 not asked yet" in team
        )
        rows = waiting_rows(team)
        assert list(rows) == [f"tg:{u['id']}" for u in STRANGERS]  # oldest first
        for sender, row in rows.items():
            state = "asked now" if int(sender[3:]) in asked else "not asked yet"
            assert "1 held message ·" in row and state in row, row
            # Allow / Block for this sender: the typed-id form, with the id filled in.
            assert f'<input type="hidden" name="sender" value="{sender}">' in row
            assert 'value="allow"' in row and 'value="block"' in row
        # The same reading as the chat's /senders: counts and who is asked now.
        listing = await env.command("/senders team")
        for sender in rows:
            state = "asked now" if int(sender[3:]) in asked else "not asked yet"
            assert f"{sender}: 1 held message, {state}" in listing

        # The stranger's display name: escaped, and clipped like the prompt's.
        hostile = rows["tg:7103"]
        assert "<img src=x" not in page and str(escape("<img src=x onerror=alert(1)>")) in hostile
        assert "Z" * 52 in hostile and "Z" * 53 not in hostile  # 80 characters of it in all
        assert '<span class="name">Stranger0</span>' in rows["tg:7100"]

        # A forged Allow (another site, or no token) changes nothing.
        for headers, extra in (
            ({"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}, {"csrf": csrf_of(gw)}),
            (own(gw), {}),
        ):
            status, _ = await rec.post(
                client,
                "/groups/team",
                headers=headers,
                data={"action": "allow", "sender": "tg:7104", **extra},
            )
            assert status == 403
        assert gw.senders.senders("team") == {} and await env.status_of("@Andy hi from 4") == "held"

        # Allow from the card, for a sender whose prompt is open: /allow's answer, their held
        # message is answered once, their prompt closes, and the next in line is asked.
        page = await flash_after(rec, client, gw, "/groups/team", {"action": "allow", "sender": "tg:7100"})
        assert "team: tg:7100 may trigger the assistant" in page
        assert gw.senders.senders("team") == {"tg:7100": "allowed"}
        [reply] = await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)
        assert "hi from 0" in reply["text"]
        await env.api_wait(lambda: len(env.prompts()) == 3)
        assert about(env.prompts()[2]) == 7102
        # A second press (a double submit) finds nothing held: nothing is answered twice.
        page = await flash_after(rec, client, gw, "/groups/team", {"action": "allow", "sender": "tg:7100"})
        await gw.drain()

        async def answered() -> bool:
            return await env.status_of("@Andy hi from 0") == "done"

        await until(answered)
        assert len(env.model.requests) == 1 and len(env.sent_to(TEAM)) == 1

        team = card(page, "team")
        assert (
            "4 unknown senders waiting:" in team and "2 asked now in the main chat, 2 not asked yet" in team
        )
        assert "tg:7100" not in waiting_rows(team) and "asked now" in waiting_rows(team)["tg:7102"]
        assert "<code>tg:7100</code> allowed" in team
    rec.assert_clean(REAL_KEY, token, session_id(client, gw))


@pytest.mark.timeout(600)
async def test_each_card_shows_its_groups_part_of_a_shared_limit(tg: Env) -> None:
    env = tg
    await env.command(f"/register tg:{TEAM} team --senders open")
    gw = env.gw
    assert gw is not None
    # One turn in each group, each a metered call through the real vault.
    env.api.push_message(MAIN, "hello from the owner", user=ADMIN, title="Main")
    env.api.push_message(TEAM, "@Andy hello from the team", user=STRANGERS[0], title="Team")
    await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)
    await env.api_wait(
        lambda: [m for m in env.sent_to(MAIN) if "hello from the owner" in m["text"]], timeout=120
    )
    await gw.drain()
    main_spend, team_spend = await stored_spend(gw, "main"), await stored_spend(gw, "team")
    calls = len(env.model.requests)
    assert calls >= 2 and main_spend[1] + team_spend[1] == 200_000 * calls
    total = f"${0.2 * calls:.2f}"

    rec = Recorder()
    async with client_for(gw) as client:
        token = await tg_login(rec, client, gw)
        _, page = await rec.get(client, "/groups")
        for folder, (_, micros) in (("main", main_spend), ("team", team_spend)):
            [line] = [line for line in card(page, folder).splitlines() if 'class="limit shared' in line]
            assert f"daily $100.00 (used {total}, 0%)" in line
            assert f'<span class="mine">this group: ${micros / 1_000_000:.2f} of {total} used</span>' in line
    rec.assert_clean(REAL_KEY, token, session_id(client, gw))
