"""The dashboard's Wallet page against a real gateway (Docker sandbox, vault, SQLite, Telegram fake)
and a NEAR node on loopback (`FakeNearRpc`), set up like tests/integration/test_wallet_telegram.py.

A transfer the team's agent asked for and the admin approved with the chat button is listed with
the hash the node received; a request the admin denied and one the policy refused are listed as
such; the key's public data and the node's balance are shown and no spelling of the private key
is in any response; today's spend is `/wallet`'s own lines. Hostile request texts (a NEP-413
recipient and message are any printable text a sandbox sends) render escaped and clipped; the
requests are paged newest first and filtered by group and state; a node that never answers, or
answers an impossible balance, gives the page with "unavailable" instead of a hang or a 500; a
gateway without a wallet key says the wallet is not configured; no session, no page.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from core.models import WalletDraft
from core.wallet.amounts import format_near
from gateway.app import Gateway
from gateway.dashboard_wallet import BALANCE_TIMEOUT_S, PAGE
from gateway.ipc_protocol import Caller, IpcError
from gateway.wallet.decision import Decision, Outcome
from gateway.wallet.keystore import KeyStore
from gateway.wallet.policy import utc_day
from tests.integration.test_dashboard_security import Recorder, base, client_for, gateway, login
from tests.integration.test_dashboard_vault import csrf_of
from tests.integration.test_wallet_telegram import approve_transfer
from tests.integration.wallet_support import (
    ADMIN,
    KEY_NAME,
    OWNER_ACCOUNT,
    RECEIVER,
    TEAM,
    SecretForms,
    WalletEnv,
    wallet_gateway,
)

__all__ = ["gateway"]  # the security tests' gateway (no wallet key), for the "not configured" page

DASHBOARD = "[dashboard]\nenabled = true\nport = 0\n"
TEAM_CALLER = Caller("team", False, f"tg:{TEAM}")
COLUMNS = [
    "id",
    "created",
    "group",
    "receiver",
    "kind",
    "summary",
    "value",
    "outcome",
    "state",
    "reasons",
    "approval",
    "tx",
    "error",
]
_ROW = re.compile(r'<tr class="request-row[^"]*" id="request-(\d+)">(.*?)</tr>', re.S)
_CELL = re.compile(r"<td[^>]*>(.*?)</td>", re.S)


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[WalletEnv]:  # type: ignore[no-untyped-def]
    async with wallet_gateway(dirs, model_server, sandbox_image, extra_toml=DASHBOARD) as wallet_env:
        yield wallet_env


def request_rows(page: str) -> list[dict[str, str]]:
    """The requests table's rows in page order, each cell's text (tags removed, entities kept)."""
    rows = []
    for _, inner in _ROW.findall(page):
        cells = [re.sub(r"<[^>]+>", "", c).strip() for c in _CELL.findall(inner)]
        assert len(cells) == len(COLUMNS), cells
        rows.append(dict(zip(COLUMNS, cells, strict=True)))
    return rows


def key_row(page: str) -> str:
    match = re.search(rf'<tr id="key-{KEY_NAME}">(.*?)</tr>', page, re.S)
    assert match is not None, page
    return match.group(1)


async def owner_decides(env: WalletEnv, params: dict[str, Any], method: str, button: str) -> str:
    """A team request through the wallet's IPC entry point; the admin presses `button` on its prompt."""
    before = len(env.main_prompts())
    asking = asyncio.create_task(env.gw.wallet.handle(TEAM_CALLER, method, params))
    prompt, approval_id, _ = await env.prompt(before, 60)
    toast = await env.click(prompt, f"ap:{approval_id}:{button}", ADMIN)
    with pytest.raises(IpcError) as refused:
        await asyncio.wait_for(asking, 60)
    assert "the owner denied it" in str(refused.value), refused.value
    return toast


async def test_requests_keys_balances_and_spend_as_the_chat_shows_them(env: WalletEnv) -> None:
    rec = Recorder()
    async with client_for(env.gw) as client:
        status, page = await rec.get(client, "/wallet")
        assert status == 401 and "clawgate dashboard url" in page and 'id="requests"' not in page
        token = await login(rec, client, env.data_dir)

        # Approved with the chat button: the agent's 25 NEAR reach bob; the node has exactly one hash.
        tx_hash, approval_id = await approve_transfer(env)
        assert [r["hash"] for r in env.near.received] == [tx_hash]
        # Denied with the chat button, and refused by the policy (over the daily limit).
        toast = await owner_decides(env, {"receiver_id": RECEIVER, "amount": "30"}, "near_transfer", "d")
        assert toast.startswith("Denied: NEAR request #")
        with pytest.raises(IpcError, match="would exceed the daily limit 100 NEAR"):
            await env.gw.wallet.handle(
                TEAM_CALLER, "near_transfer", {"receiver_id": RECEIVER, "amount": "500"}
            )
        approved, denied_by_owner, refused = sorted(r.id for r in await env.gw.store.wallet_requests())

        status, page = await rec.get(client, "/wallet")
        assert status == 200
        rows = request_rows(page)
        assert [int(r["id"]) for r in rows] == [refused, denied_by_owner, approved]  # newest first
        top, middle, bottom = rows
        assert (
            bottom["tx"] == tx_hash and bottom["state"] == "submitted" and bottom["approval"] == approval_id
        )
        assert bottom["group"] == "team" and bottom["receiver"] == RECEIVER and bottom["value"] == "25 NEAR"
        assert (
            bottom["outcome"] == "needs_approval"
            and "exceeds the auto-approve limit 1 NEAR" in bottom["reasons"]
        )
        assert f"Transfer 25 NEAR to {RECEIVER}" in bottom["summary"] and bottom["error"] == ""
        assert (
            middle["state"] == "rejected" and middle["error"] == "the owner denied it" and middle["tx"] == ""
        )
        assert middle["approval"] != "" and middle["value"] == "30 NEAR"
        assert top["state"] == "denied" and top["outcome"] == "deny" and top["approval"] == ""
        assert "would exceed the daily limit 100 NEAR" in html.unescape(top["reasons"])

        # The key: public data, the node's balance, the groups the policy lets use it.
        row = key_row(page)
        balance = env.near.balance(OWNER_ACCOUNT)
        assert balance is not None and format_near(balance) == "975"
        assert str(env.key.public_key) in row and OWNER_ACCOUNT in row and "full access" in row
        assert "975 NEAR" in row and "main, team" in row and 'class="balance ok"' in row
        # Today's spend: the very lines `/wallet` prints in the chat.
        chat = await env.gw.wallet.status_text()
        spend = [line for line in chat.splitlines() if line.startswith("Today's")]
        assert spend and spend[0].startswith(
            f"Today's spend ({utc_day(env.gw.wallet.clock.now())} UTC): 25 of 100"
        )
        for line in spend:
            assert line in html.unescape(page), line
        assert "auto_approve_max: 1" in page and "daily_limit: 100" in page  # `/policy`'s lines

        # A filter that matches nothing, and one that keeps only the owner's denial.
        _, page = await rec.get(client, "/wallet?group=main")
        assert request_rows(page) == [] and 'id="no-requests"' in page
        _, page = await rec.get(client, "/wallet?group=team&state=rejected")
        assert [int(r["id"]) for r in request_rows(page)] == [denied_by_owner]

    # No response carried the private key in any spelling (base58, `ed25519:`, hex, base64 …),
    # the login token, or lacked the security headers.
    with KeyStore(env.config_dir).signer(KEY_NAME) as pair:
        forms = SecretForms.of(pair.export_secret())
    for path, status, body, _ in rec.bodies:
        assert forms.find(body) == [], (path, status, forms.find(body))
    rec.assert_clean(token)


async def insert_request(
    env: WalletEnv, *, group: str, summary: str, receiver: str = RECEIVER, outcome: Outcome = "deny"
) -> int:
    """A wallet request recorded the way the service records one (the store's own write)."""
    draft = WalletDraft(group, KEY_NAME, OWNER_ACCOUNT, receiver, "transaction", summary, 10**24)
    now = env.gw.wallet.clock.now()

    def decide(_spent: object) -> Decision:
        return Decision(outcome, ("a reason",))

    request_id, _, _ = await env.gw.store.wallet_decide(draft, decide, utc_day(now), now)
    return request_id


async def test_hostile_texts_are_escaped_and_the_requests_paged_and_filtered(env: WalletEnv) -> None:
    # A sandbox chooses a NEP-413 recipient and message: any printable text, up to 256 characters.
    script = "<script>alert('wallet')</script>"
    recipient = '"><img src=x onerror=alert(1)>' + "&amp;" + "r" * 300
    await owner_decides(env, {"message": script, "recipient": recipient[:256]}, "near_sign_message", "d")
    long_summary = "<b>bold</b>\n" + "x" * 5000
    long_id = await insert_request(env, group="team", summary=long_summary)
    rec = Recorder()
    async with client_for(env.gw) as client:
        await login(rec, client, env.data_dir)
        _, page = await rec.get(client, "/wallet")
        assert "<script>alert" not in page and "<img" not in page and "<b>bold" not in page
        assert "&lt;script&gt;alert(&#39;wallet&#39;)&lt;/script&gt;" in page
        assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;&amp;amp;" in page
        rows = {int(r["id"]): r for r in request_rows(page)}
        assert len(html.unescape(rows[long_id]["summary"])) == 400  # clipped, on one line
        assert html.unescape(rows[long_id]["summary"]).endswith("…")
        [message] = [r for r in rows.values() if r["kind"] == "message"]
        assert message["state"] == "rejected" and len(html.unescape(message["receiver"])) <= 80

        # 2 requests so far; 30 more from another group, half of them pending.
        others = [
            await insert_request(
                env, group="other", summary=f"other {i}", outcome="needs_approval" if i % 2 else "deny"
            )
            for i in range(30)
        ]
        everything = sorted([*others, *rows], reverse=True)
        _, first = await rec.get(client, "/wallet")
        assert [int(r["id"]) for r in request_rows(first)] == everything[:PAGE]
        assert 'id="newer"' not in first and f'href="/wallet?&amp;offset={PAGE}#requests-section"' in first
        _, second = await rec.get(client, f"/wallet?offset={PAGE}")
        assert [int(r["id"]) for r in request_rows(second)] == everything[PAGE:]
        assert 'id="older"' not in second and 'href="/wallet?&amp;offset=0#requests-section"' in second

        # Filters by group and state, kept by the pager; a bad state or offset is refused, not a 500.
        _, page = await rec.get(client, "/wallet?group=other&state=pending")
        pending = [i for n, i in enumerate(others) if n % 2]
        assert [int(r["id"]) for r in request_rows(page)] == sorted(pending, reverse=True)
        assert {r["state"] for r in request_rows(page)} == {"pending"} and 'id="older"' not in page
        _, page = await rec.get(client, "/wallet?group=other")
        assert {r["group"] for r in request_rows(page)} == {"other"}
        assert f'href="/wallet?group=other&amp;offset={PAGE}#requests-section"' in page
        _, page = await rec.get(client, "/wallet?group=team")
        assert sorted(int(r["id"]) for r in request_rows(page)) == sorted([long_id, message_id(rows)])
        status, page = await rec.get(client, "/wallet?state=<script>x</script>&offset=-4")
        assert status == 200 and "state: expected one of pending, signing" in page and "<script>x" not in page
        assert [int(r["id"]) for r in request_rows(page)] == everything[:PAGE]
        status, page = await rec.get(client, "/wallet?offset=abc")
        assert status == 200 and [int(r["id"]) for r in request_rows(page)] == everything[:PAGE]
        status, page = await rec.get(client, f"/wallet?offset={10**30}")  # past SQLite's integers
        assert status == 200 and request_rows(page) == [] and 'id="newer"' in page
        # The page changes nothing: even a same-origin POST with the session's token has no handler.
        own = {"Origin": base(env.gw), "Sec-Fetch-Site": "same-origin"}
        status, _ = await rec.post(client, "/wallet", headers=own, data={"csrf": csrf_of(env.gw)})
        assert status == 405


def message_id(rows: dict[int, dict[str, str]]) -> int:
    [found] = [i for i, r in rows.items() if r["kind"] == "message"]
    return found


@contextlib.asynccontextmanager
async def hostile_node(
    answer: Callable[[dict[str, Any]], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """A JSON-RPC 'node' on loopback whose answers the test writes; yields its URL."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return await answer(json.loads(await request.read()))

    app = web.Application()
    app.router.add_post("/", handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.shutdown()
        await runner.cleanup()


async def test_a_node_that_hangs_or_lies_gives_the_page_with_unavailable(env: WalletEnv) -> None:
    await insert_request(env, group="team", summary="still listed")
    never = asyncio.Event()

    async def hang(_body: dict[str, Any]) -> web.StreamResponse:
        await asyncio.wait_for(never.wait(), 60)  # accepts, reads and answers only once released
        return web.Response(status=503)

    async def lie(body: dict[str, Any]) -> web.StreamResponse:
        result = '{"amount": 1e400, "block_height": 1}'  # infinity, to `json`
        text = f'{{"jsonrpc": "2.0", "id": {json.dumps(body.get("id"))}, "result": {result}}}'
        return web.Response(text=text, content_type="application/json")

    rpc = env.gw.wallet._rpc
    rec = Recorder()
    async with client_for(env.gw) as client:
        await login(rec, client, env.data_dir)
        for answer, why in ((hang, f"no answer within {BALANCE_TIMEOUT_S:g}s"), (lie, "unexpected result")):
            async with hostile_node(answer) as url:
                rpc.url = url
                # The client's own bound would be 2 attempts x 10 s plus backoff; the page's is shorter.
                status, page = await asyncio.wait_for(rec.get(client, "/wallet"), 15)
                never.set()  # so the node's shutdown has no request left to wait for
            assert status == 200
            row = key_row(page)
            assert 'class="balance bad"' in row and "balance unavailable (" in row and why in row, row
            assert str(env.key.public_key) in row and "still listed" in page
            assert "Today's spend (" in html.unescape(page)


async def test_without_a_key_the_page_says_the_wallet_is_not_configured(gateway: Gateway) -> None:
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        status, page = await rec.get(client, "/wallet")
    assert status == 200 and 'id="not-configured"' in page and "clawgate wallet generate" in page
    assert 'id="keys"' not in page and 'id="no-requests"' in page
    assert "Today's spend (" in html.unescape(page)  # the limits still show
    rec.assert_clean(token)
