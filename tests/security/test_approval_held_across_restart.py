"""Attack on the restart order (issue 11, break 8): an Approve click held while the gateway is down.

A group's agent asks for a NEAR transfer; the owner's prompt waits in the main chat; the
gateway stops (the agent turn that waited dies with it). While it is down the owner presses
Approve, and Telegram holds that click until the next `getUpdates`. On restart the click must
not decide anything: nobody waits for that request any more, so approving it would sign
nothing while the owner is told "Approved". The gateway must have settled the previous run's
requests before it asks Telegram for the first update, answer the held click "expired", edit
the prompt to "Expired", and send nothing to the NEAR node.

Real parts: the Gateway (Docker sandbox with the real agent runtime, vault, SQLite), the real
TelegramChannel on the fake Bot API (which, like Telegram, hands the held click out in the
first getUpdates of the new run), the wallet and a NEAR JSON-RPC node on loopback.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator

import pytest

from core.paths import DATABASE
from gateway.app import Gateway
from tests.integration.wallet_support import ADMIN, MAIN, RECEIVER, WalletEnv, plain, wallet_gateway

AGENT_TIMEOUT = 180  # the first turn includes a cold container start


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[WalletEnv]:  # type: ignore[no-untyped-def]
    async with wallet_gateway(dirs, model_server, sandbox_image) as wallet_env:
        yield wallet_env


async def test_approve_click_held_while_the_gateway_was_down_answers_expired_and_signs_nothing(
    env: WalletEnv,
) -> None:
    env.say_in_team(f"@Andy send 25 NEAR to {RECEIVER}")
    prompt, approval_id, _ = await env.prompt(0, AGENT_TIMEOUT)
    config = env.gw.config
    await env.stop()  # the gateway goes down with the request waiting for the owner

    # What the database says each time the restarted gateway asks Telegram for updates.
    seen: list[tuple[str, str]] = []

    def record_states() -> None:
        db = sqlite3.connect(f"file:{env.data_dir / DATABASE}?mode=ro", uri=True, timeout=10)
        try:
            [(approval,)] = db.execute("SELECT state FROM approvals WHERE id = ?", (approval_id,))
            [(request,)] = db.execute(
                "SELECT state FROM wallet_requests WHERE approval_id = ?", (approval_id,)
            )
        finally:
            db.close()
        seen.append((approval, request))

    env.api.on_get_updates = record_states
    # The owner presses Approve while the gateway is down; Telegram keeps the click for later.
    held = dict(env.api.messages[(MAIN, prompt["message_id"])])
    held["reply_markup"] = prompt["reply_markup"]
    query_id = env.api.push_callback(held, f"ap:{approval_id}:a", user=ADMIN)

    gw = Gateway(config, env.config_dir, env.data_dir)
    await gw.start()
    try:
        # Settled before the first update was fetched: the held click can find nothing to approve.
        # (Checked first: this ordering, not the luck of the race, is what keeps "Approved" away.)
        await env.api_wait(lambda: seen)
        assert seen[0] == ("expired", "rejected"), seen
        [answer] = await env.api_wait(
            lambda: [a for a in env.api.answers if a["callback_query_id"] == query_id]
        )
        toast = str(answer.get("text", ""))
        assert "expired" in toast.lower() and "approved" not in toast.lower(), toast
        edited = await env.edited(prompt)
        assert "Expired" in edited and "Approved" not in edited, edited

        record = await gw.store.approval(approval_id)
        assert record is not None and record.state == "expired"
        [request] = await gw.store.wallet_requests()
        assert request.state == "rejected" and "restarted" in (request.error or "")
        await asyncio.sleep(1)  # give a wrongly approved request the chance to reach the node
        assert env.near.received == [] and env.near.submitted == []
        assert not [t for t in env.texts_in(MAIN) if "Approved" in t], env.texts_in(MAIN)
        assert "Approved" not in plain(env.api.messages[(MAIN, prompt["message_id"])])
    finally:
        await gw.stop(grace_s=5)


async def test_an_approval_committed_just_before_the_crash_is_reported_unsigned_after_restart(
    env: WalletEnv,
) -> None:
    """The owner's Approve was recorded (and the prompt says "Approved") but the gateway died
    before signing: after the restart the owner must be told plainly that nothing was signed."""
    env.say_in_team(f"@Andy send 25 NEAR to {RECEIVER}")
    prompt, approval_id, _ = await env.prompt(0, AGENT_TIMEOUT)
    config = env.gw.config
    await env.stop()
    db = sqlite3.connect(env.data_dir / DATABASE, timeout=10)  # the decision committed, then the crash
    with db:
        db.execute(
            "UPDATE approvals SET state = 'approved', decided_by = 'tg:4242', decided_at = 1 WHERE id = ?",
            (approval_id,),
        )
    db.close()

    gw = Gateway(config, env.config_dir, env.data_dir)
    await gw.start()
    try:
        told = await env.text_in(MAIN, "NOT signed", 30)
        [request] = await gw.store.wallet_requests()
        assert told.startswith(f"NEAR request #{request.id} was approved but NOT signed")
        assert request.state == "rejected"
        assert env.near.received == [] and env.near.submitted == []
    finally:
        await gw.stop(grace_s=5)
