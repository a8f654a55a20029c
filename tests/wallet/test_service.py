"""The wallet service end to end in-process: real SQLite, real key store, real RPC client
talking HTTP to the NEAR JSON-RPC test server, real approvals with capture channels.

What is proven here: every signing path goes analyze → policy → (approval) → re-check →
sign → submit, the server independently verifies what reaches it, refusals and denials
sign nothing, and the daily limit holds under concurrency (invariant 5).
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.wallet.amounts import parse_near
from core.wallet.settings import WalletConfig
from gateway.ipc_protocol import Caller, IpcError
from gateway.wallet import nep413
from gateway.wallet.keyinfo import KeyInfo
from gateway.wallet.keystore import KeyStore
from gateway.wallet.policy import utc_day
from gateway.wallet.rpc import NearRpc
from gateway.wallet.service import WalletService
from gateway.wallet.transactions import FunctionCall, Transfer
from tests.fakes.clock import FakeClock
from tests.fakes.near_rpc import FakeNearRpc
from tests.unit.test_approvals import ADMIN, MAIN, T0, World, make_world

TEAM = Caller("team", False, "tg:-2")
MAIN_CALLER = Caller("main", True, MAIN)
OWNER = "owner.testnet"
NEAR = 10**24


@dataclass
class Env:
    world: World
    service: WalletService
    rpc: FakeNearRpc
    keys: KeyStore
    key: KeyInfo

    async def request(self, name: str, /, caller: Caller = TEAM, **params: Any) -> dict[str, Any]:
        return await self.service.handle(caller, name, params)

    def start(self, name: str, /, caller: Caller = TEAM, **params: Any) -> asyncio.Task[dict[str, Any]]:
        return asyncio.create_task(self.request(name, caller, **params))

    async def prompt(self, count: int = 1) -> Any:
        tg = self.world.tg
        await tg.wait_until(lambda: len(tg.prompts) >= count, 10)
        return tg.prompts[count - 1][1]

    async def state(self, request_id: int) -> str:
        record = await self.world.store.wallet_request(request_id)
        assert record is not None
        return record.state


def config(**policy: Any) -> WalletConfig:
    base: dict[str, Any] = {
        "auto_approve_max": "1",
        "daily_limit": "10",
        "key_groups": {"hot": ["main", "team"], "cold": ["main"]},
    }
    base.update(policy)
    return WalletConfig.model_validate({"rpc_url": "http://127.0.0.1:1", "policy": base})


async def make_env(tmp_path: Path, settings: WalletConfig, clock: FakeClock | None = None) -> Env:
    world = await make_world(tmp_path / "db.sqlite", clock or FakeClock(T0))
    keys = KeyStore(tmp_path / "config")
    key = keys.generate("hot", network="testnet", account_id=OWNER)
    keys.generate("cold", network="testnet", account_id="vault.testnet")
    server = FakeNearRpc()
    server.start()
    server.add_account(OWNER, 100 * NEAR, keys=[key.public_key])
    notes: list[str] = []

    async def notify_main(text: str) -> None:
        notes.append(text)
        await world.tg.send(MAIN, text)

    rpc = NearRpc(server.url, timeout_s=5, retries=1, backoff_s=0.01)
    service = WalletService(settings, world.store, keys, rpc, world.approvals, notify_main, world.clock)
    await service.start()
    return Env(world, service, server, keys, key)


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    e = await make_env(tmp_path, config())
    yield e
    await e.service.aclose()
    await e.world.approvals.stop()
    await e.world.store.close()
    e.rpc.stop()


def only_transfer(env: Env) -> tuple[str, int]:
    [signed] = env.rpc.submitted
    assert signed.verify()
    tx = signed.transaction
    [action] = tx.actions
    assert isinstance(action, Transfer) and tx.signer_id == OWNER
    return tx.receiver_id, action.deposit


async def test_a_small_transfer_is_signed_and_submitted_without_asking(env: Env) -> None:
    result = await env.request("near_transfer", receiver_id="bob.testnet", amount="0.25")
    assert only_transfer(env) == ("bob.testnet", parse_near("0.25"))
    assert result["transaction_hash"] == env.rpc.submitted[0].hash
    assert env.world.tg.prompts == []
    assert await env.state(result["request_id"]) == "submitted"
    assert await env.world.store.wallet_spent(utc_day(T0)) == parse_near("0.25")


async def test_a_large_transfer_waits_for_the_admin_then_is_signed_once(env: Env) -> None:
    task = env.start("near_transfer", receiver_id="bob.testnet", amount="2.5")
    prompt = await env.prompt()
    for text in (
        "team",
        "Transfer 2.5 NEAR to bob.testnet",
        "Total: 2.5 NEAR",
        "0 of 10 NEAR",
        "bob.testnet",
    ):
        assert text in prompt.details or text in prompt.title, text
    assert "auto-approve" in prompt.details.lower() or "exceeds" in prompt.details.lower()
    await asyncio.sleep(0.1)
    assert not task.done() and env.rpc.submitted == []

    assert (await env.world.tg.press(prompt.id, "approve", user_id=ADMIN, chat_id=MAIN)).startswith(
        "Approved"
    )
    result = await asyncio.wait_for(task, 10)
    assert only_transfer(env) == ("bob.testnet", parse_near("2.5"))
    assert result["transaction_hash"] == env.rpc.submitted[0].hash
    assert any(result["transaction_hash"] in text for chat, text in env.world.tg.sent if chat == MAIN)
    # A double click decides nothing and signs nothing.
    toast = await env.world.tg.press(prompt.id, "approve", user_id=ADMIN, chat_id=MAIN)
    assert toast.startswith("already decided")
    await asyncio.sleep(0.1)
    assert len(env.rpc.submitted) == 1


async def test_denied_and_expired_requests_sign_nothing_and_tell_the_agent(env: Env) -> None:
    task = env.start("near_transfer", receiver_id="bob.testnet", amount="3")
    prompt = await env.prompt()
    await env.world.tg.press(prompt.id, "deny", user_id=ADMIN, chat_id=MAIN)
    with pytest.raises(IpcError, match="the owner denied it"):
        await asyncio.wait_for(task, 10)

    task = env.start("near_transfer", receiver_id="bob.testnet", amount="3")
    prompt = await env.prompt(2)
    env.world.clock.set(prompt.expires_at)
    with pytest.raises(IpcError, match="expired"):
        await asyncio.wait_for(task, 10)
    assert env.rpc.submitted == []
    assert [r.state for r in await env.world.store.wallet_requests()] == ["rejected", "rejected"]
    assert await env.world.store.wallet_spent(utc_day(T0)) == 0


async def test_a_click_from_a_non_admin_does_not_sign(env: Env) -> None:
    task = env.start("near_transfer", receiver_id="bob.testnet", amount="3")
    prompt = await env.prompt()
    await env.world.tg.press(prompt.id, "approve", user_id="tg:2", chat_id=MAIN)
    await env.world.tg.press(prompt.id, "approve", user_id=ADMIN, chat_id="tg:-2")
    await asyncio.sleep(0.2)
    assert not task.done() and env.rpc.submitted == []
    task.cancel()


async def test_approval_is_rechecked_against_spend_that_grew_meanwhile(env: Env) -> None:
    task = env.start("near_transfer", receiver_id="bob.testnet", amount="6")  # needs approval
    prompt = await env.prompt()
    assert "0 of 10 NEAR" in prompt.details
    for _ in range(5):  # 5 auto-approved transfers of 1 NEAR while the prompt waits
        await env.request("near_transfer", receiver_id="carol.testnet", amount="1")
    await env.world.tg.press(prompt.id, "approve", user_id=ADMIN, chat_id=MAIN)
    with pytest.raises(IpcError, match="daily limit"):
        await asyncio.wait_for(task, 10)
    assert len(env.rpc.submitted) == 5
    assert all(s.transaction.receiver_id == "carol.testnet" for s in env.rpc.submitted)


async def test_concurrent_requests_cannot_pass_the_daily_limit_together(env: Env) -> None:
    results = await asyncio.gather(
        *(env.request("near_transfer", receiver_id="bob.testnet", amount="1") for _ in range(14)),
        return_exceptions=True,
    )
    signed = [r for r in results if isinstance(r, dict)]
    refused = [r for r in results if isinstance(r, IpcError)]
    # 10 NEAR of transfers would leave nothing for their fees: each reserves its worst-case fee.
    assert len(signed) == 9 and len(refused) == 5
    assert all(r.code == "denied" and "daily limit" in str(r) for r in refused)
    assert len(env.rpc.submitted) == 9  # every one accepted: nonces never collided
    assert len({s.transaction.nonce for s in env.rpc.submitted}) == 9
    # Settled: the node burnt nothing (tx_fee 0), so the day's spend is exactly the value.
    assert await env.world.store.wallet_spent(utc_day(T0)) == 9 * NEAR


async def test_a_group_cannot_use_a_key_it_is_not_given(env: Env) -> None:
    with pytest.raises(IpcError, match="may not use a wallet key named 'cold'") as refused:
        await env.request("near_transfer", key="cold", receiver_id="bob.testnet", amount="0.1")
    with pytest.raises(IpcError) as missing:
        await env.request("near_transfer", key="nope", receiver_id="bob.testnet", amount="0.1")
    assert str(missing.value).replace("nope", "cold") == str(refused.value)  # existence not revealed
    assert env.rpc.submitted == []


async def test_not_enough_balance_is_a_clear_refusal_and_releases_the_spend(tmp_path: Path) -> None:
    e = await make_env(tmp_path, config())
    try:
        e.rpc.add_account("poor.testnet", 0, keys=[])
        e.rpc.accounts[OWNER] = parse_near("0.1")
        with pytest.raises(IpcError) as err:
            await e.request("near_transfer", receiver_id="bob.testnet", amount="0.5")
        assert err.value.code == "near_rejected"
        [record] = await e.world.store.wallet_requests()
        assert record.state == "failed"
        assert await e.world.store.wallet_spent(utc_day(T0)) == 0
    finally:
        await e.service.aclose()
        await e.world.approvals.stop()
        await e.world.store.close()
        e.rpc.stop()


async def test_function_call_rules_and_forbidden_operations(tmp_path: Path) -> None:
    rules = [
        {
            "receiver": "usdc.testnet",
            "methods": ["ft_transfer"],
            "max_deposit": "0.000000000000000000000001",
            "auto_approve": True,
        }
    ]
    limits = {"usdc.testnet": {"daily_limit": "100"}}
    e = await make_env(tmp_path, config(function_calls=rules, token_limits=limits))
    try:
        result = await e.request(
            "near_function_call",
            receiver_id="usdc.testnet",
            method="ft_transfer",
            args={"receiver_id": "bob.testnet", "amount": "5"},
            deposit="0.000000000000000000000001",
        )
        [signed] = e.rpc.submitted
        [call] = signed.transaction.actions
        assert isinstance(call, FunctionCall) and call.method_name == "ft_transfer" and call.deposit == 1
        assert result["transaction_hash"] == signed.hash
        assert (await e.world.store.wallet_day(utc_day(T0))).tokens == {"usdc.testnet": 5}
        # Another method of the same contract is not covered by the rule: the owner is asked.
        task = e.start("near_function_call", receiver_id="usdc.testnet", method="ft_burn", args={})
        prompt = await e.prompt()
        assert "ft_burn" in prompt.details
        task.cancel()
    finally:
        await e.service.aclose()
        await e.world.approvals.stop()
        await e.world.store.close()
        e.rpc.stop()


async def test_nep413_signatures_verify_and_follow_the_sign_messages_setting(tmp_path: Path) -> None:
    e = await make_env(tmp_path, config(sign_messages="auto"))
    try:
        nonce = bytes(range(32))
        signed = await e.request(
            "near_sign_message",
            message="login",
            recipient="app.testnet",
            nonce=base64.b64encode(nonce).decode(),
        )
        assert signed["accountId"] == OWNER and signed["publicKey"] == str(e.key.public_key)
        assert nep413.verify_message(signed, "login", nonce, "app.testnet")
        await e.service.set_policy("sign_messages", "deny")
        with pytest.raises(IpcError, match="denied|refused"):
            await e.request("near_sign_message", message="login", recipient="app.testnet")
    finally:
        await e.service.aclose()
        await e.world.approvals.stop()
        await e.world.store.close()
        e.rpc.stop()


async def test_policy_overrides_are_validated_persisted_and_survive_a_restart(tmp_path: Path) -> None:
    e = await make_env(tmp_path, config())
    try:
        assert await e.service.set_policy("auto_approve_max", "5") == "auto_approve_max = 5"
        with pytest.raises(ValueError, match="decimals|invalid"):
            await e.service.set_policy("daily_limit", "1.0000000000000000000000001")
        with pytest.raises(ValueError, match="unknown or read-only"):
            await e.service.set_policy("key_groups", "x")
        await e.request("near_transfer", receiver_id="bob.testnet", amount="4")  # auto under the new max
        assert len(e.rpc.submitted) == 1 and e.world.tg.prompts == []
        again = WalletService(
            config(),
            e.world.store,
            e.keys,
            NearRpc(e.rpc.url),
            e.world.approvals,
            e.world.tg.send,
            e.world.clock,
        )  # type: ignore[arg-type]
        await again.start()
        assert again.engine.policy.auto_approve_max == 5 * NEAR
        assert "auto_approve_max: 5" in again.policy_text()
        await again.aclose()
    finally:
        await e.service.aclose()
        await e.world.approvals.stop()
        await e.world.store.close()
        e.rpc.stop()


async def test_balance_and_view_calls_need_no_signature(env: Env) -> None:
    balance = await env.request("near_balance")
    assert balance["account_id"] == OWNER and balance["balance_near"] == "100"
    env.rpc.add_view("ft.testnet", "ft_balance_of", lambda args: str(len(args.get("account_id", ""))))
    view = await env.request(
        "near_view", contract_id="ft.testnet", method="ft_balance_of", args={"account_id": "bob.testnet"}
    )
    assert view["result"] == "11"
    status = await env.service.status_text()
    assert "hot: owner.testnet" in status and "100 NEAR" in status and "0 of 10 NEAR" in status


async def test_wallet_and_policy_admin_commands(env: Env) -> None:
    """`/wallet` and `/policy` in the main chat, by an admin; silent for anyone else."""
    from types import SimpleNamespace

    from gateway.commands import AdminCommands, parse

    gw = SimpleNamespace(config=SimpleNamespace(admin=SimpleNamespace(users=[ADMIN])), wallet=env.service)
    commands = AdminCommands(gw)  # type: ignore[arg-type]
    main, team = env.world.registry.main, env.world.registry.by_folder("team")

    async def run(text: str, sender: str = ADMIN, group: Any = main) -> str | None:
        command = parse(text)
        assert command is not None
        chat = MAIN if group is main else "tg:-2"
        return await commands.execute(command, env.world.tg.message(text, chat, sender, "x"), group)

    await env.request("near_transfer", receiver_id="bob.testnet", amount="0.75")
    wallet = await run("/wallet")
    assert wallet is not None
    assert "hot: owner.testnet (testnet, full access)" in wallet and "99.25 NEAR" in wallet
    assert "Today's spend" in wallet and "0.75 of 10 NEAR" in wallet
    policy = await run("/policy")
    assert policy is not None and "auto_approve_max: 1" in policy and "daily_limit: 10" in policy
    assert await run("/policy set daily_limit 2.5") == "policy updated: daily_limit = 2.5"
    assert await run("/policy set transfer_whitelist bob.testnet, carol.testnet") == (
        "policy updated: transfer_whitelist = bob.testnet, carol.testnet"
    )
    bad = await run("/policy set daily_limit lots")
    assert bad is not None and bad.startswith("usage: /policy") and "invalid NEAR amount" in bad
    assert await run("/policy reset daily_limit") == "policy updated: daily_limit = 10"
    # Not an admin, or not the main chat: ignored without a word, nothing changed.
    assert await run("/policy set daily_limit 1000", sender="tg:2") is None
    assert await run("/policy set daily_limit 1000", group=team) is None
    assert await run("/wallet", group=team) is None
    assert env.service.engine.policy.daily_limit == 10 * NEAR


async def test_a_restart_voids_requests_left_waiting_and_their_prompts(env: Env) -> None:
    task = env.start("near_transfer", receiver_id="bob.testnet", amount="5")
    prompt = await env.prompt()
    task.cancel()  # the gateway died while the request waited for the owner
    [waiting] = await env.world.store.wallet_requests()
    assert waiting.state == "pending" and waiting.approval_id == prompt.id

    again = WalletService(
        config(),
        env.world.store,
        env.keys,
        NearRpc(env.rpc.url),
        env.world.approvals,
        env.world.tg.send,
        env.world.clock,  # type: ignore[arg-type]
    )
    await again.start()
    [voided] = await env.world.store.wallet_requests()
    assert voided.state == "rejected" and "restarted" in (voided.error or "")
    approval = await env.world.store.approval(prompt.id)
    assert approval is not None and (approval.state, approval.decided_by) == ("denied", "gateway")
    assert [o.state for _, _, _, o in env.world.tg.outcomes] == ["denied"]  # the prompt says so
    toast = await env.world.tg.press(prompt.id, "approve", user_id=ADMIN, chat_id=MAIN)
    assert toast.startswith("already decided")
    assert env.rpc.submitted == []
    await again.aclose()


async def test_an_approved_message_signature_is_rechecked_against_the_policy(env: Env) -> None:
    task = env.start("near_sign_message", message="login", recipient="app.testnet")
    prompt = await env.prompt()
    assert "app.testnet" in prompt.title and "login" in prompt.details
    await env.service.set_policy("sign_messages", "deny")  # changed while the prompt waits
    await env.world.tg.press(prompt.id, "approve", user_id=ADMIN, chat_id=MAIN)
    with pytest.raises(IpcError, match="refused on re-check"):
        await asyncio.wait_for(task, 10)
    [record] = await env.world.store.wallet_requests()
    assert record.state == "rejected"


async def test_a_key_for_another_network_is_never_used(env: Env) -> None:
    env.keys.generate("mainkey", network="mainnet", account_id="rich.near")
    await env.service.set_policy("sign_messages", "auto")
    env.service.engine = type(env.service.engine)(
        env.service.engine.policy.model_copy(update={"key_groups": {"mainkey": ["team"]}})
    )
    with pytest.raises(
        IpcError, match="'mainkey' is for mainnet, but this gateway's \\[wallet\\] network is testnet"
    ):
        await env.request("near_sign_message", key="mainkey", message="hi", recipient="app.near")
    assert await env.world.store.wallet_requests() == []
