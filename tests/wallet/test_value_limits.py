"""A hostile group with a wallet key tries to move value the daily limit does not see.

Each test is one attack, run the way an agent would run it: `near_*` requests from the TEAM
group's IPC identity into the real wallet service (real SQLite ledger, real key store, real RPC
client over HTTP) and a NEAR node on loopback that runs a NEP-141 token contract, fails
panicking receipts the way nearcore does and burns fees. What is checked afterwards is the
host's and the chain's state: tokens and NEAR that actually left the account, the ledger, and
whether the owner was asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.wallet.amounts import parse_near
from gateway.ipc_protocol import IpcError
from gateway.wallet.policy import utc_day
from tests.fakes.near_rpc import CallContext, ContractPanic, FakeContract, FungibleToken
from tests.unit.test_approvals import ADMIN, MAIN, T0
from tests.wallet.test_service import NEAR, OWNER, Env, config, make_env

USDC = "usdc.testnet"
MALLORY = "mallory.testnet"
ONE_YOCTO = "0.000000000000000000000001"
FT_RULE = {"receiver": USDC, "methods": ["ft_transfer"], "max_deposit": ONE_YOCTO, "auto_approve": True}
# The README's example before issue 11: an auto-approved ft_transfer rule and nothing else.
OLD_README_POLICY: dict[str, Any] = {"function_calls": [FT_RULE]}
LIMITED_POLICY: dict[str, Any] = {
    "function_calls": [FT_RULE],
    "token_limits": {USDC: {"daily_limit": "100000000", "auto_approve_max": "10000000"}},  # 100 / 10 USDC
}
HOLDINGS = 1_000_000_000_000  # a million USDC at 6 decimals


async def open_env(tmp_path: Path, **policy: Any) -> tuple[Env, FungibleToken]:
    env = await make_env(tmp_path, config(**policy))
    usdc = FungibleToken({OWNER: HOLDINGS, MALLORY: 0})
    env.rpc.add_contract(USDC, usdc)
    return env, usdc


async def close_env(env: Env) -> None:
    await env.service.aclose()
    await env.world.approvals.stop()
    await env.world.store.close()
    env.rpc.stop()


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[tuple[Env, FungibleToken]]:
    env, usdc = await open_env(tmp_path, **LIMITED_POLICY)
    yield env, usdc
    await close_env(env)


def ft_transfer(amount: object, **extra: Any) -> dict[str, Any]:
    return {
        "receiver_id": USDC,
        "method": "ft_transfer",
        "args": {"receiver_id": MALLORY, "amount": amount, **extra},
        "deposit": ONE_YOCTO,
    }


async def drain(env: Env, attempts: int, **params: Any) -> tuple[list[dict[str, Any]], list[IpcError]]:
    """The attacker's loop: the same request again and again, as fast as the wallet answers."""
    signed: list[dict[str, Any]] = []
    refused: list[IpcError] = []
    for _ in range(attempts):
        try:
            signed.append(await asyncio.wait_for(env.request("near_function_call", **params), 10))
        except IpcError as exc:
            refused.append(exc)
    return signed, refused


async def test_many_small_ft_transfers_stop_at_the_token_daily_limit(
    limited: tuple[Env, FungibleToken],
) -> None:
    env, usdc = limited
    signed, refused = await drain(env, 25, **ft_transfer("10000000"))  # 25 × 10 USDC, each "small"
    assert len(signed) == 10 and len(refused) == 15
    assert all(r.code == "denied" and "daily token limit 100000000" in str(r) for r in refused)
    assert usdc.balance(MALLORY) == 100_000_000  # exactly the daily limit left the account, no more
    assert usdc.balance(OWNER) == HOLDINGS - 100_000_000
    assert env.world.tg.prompts == []  # within the limits nothing needed the owner
    day = await env.world.store.wallet_day(utc_day(T0))
    assert day.tokens == {USDC: 100_000_000}
    # The owner's `/wallet` and `/policy` show it.
    assert f"Today's {USDC} tokens: 100000000 of 100000000 base units" in await env.service.status_text()
    assert f"token_limits: {USDC} daily 100000000, auto up to 10000000" in env.service.policy_text()


async def test_a_huge_ft_transfer_is_never_auto_approved(limited: tuple[Env, FungibleToken]) -> None:
    env, usdc = limited
    # The whole balance in one call: over the daily token cap, refused outright.
    with pytest.raises(IpcError, match="would exceed the daily token limit 100000000") as refused:
        await env.request("near_function_call", **ft_transfer(str(HOLDINGS)))
    assert refused.value.code == "denied"
    # Over the per-transfer auto limit but within the cap: the owner decides, seeing the amount.
    task = env.start("near_function_call", **ft_transfer("50000000"))
    prompt = await env.prompt()
    assert f"moves 50000000 base units of {USDC} tokens to {MALLORY}" in prompt.details
    assert "exceed the token auto-approve limit 10000000" in prompt.details
    assert f"Today's {USDC} tokens: 0 of 100000000 base units" in prompt.details
    await asyncio.sleep(0.1)
    assert not task.done() and env.rpc.submitted == [] and usdc.balance(MALLORY) == 0
    await env.world.tg.press(prompt.id, "approve", user_id=ADMIN, chat_id=MAIN)
    assert (await asyncio.wait_for(task, 10))["status"] == "success"
    assert usdc.balance(MALLORY) == 50_000_000
    assert (await env.world.store.wallet_day(utc_day(T0))).tokens == {USDC: 50_000_000}


async def test_ft_transfer_under_an_auto_approve_rule_without_token_limits_always_asks(
    tmp_path: Path,
) -> None:
    env, usdc = await open_env(tmp_path, **OLD_README_POLICY)
    try:
        task = env.start("near_function_call", **ft_transfer("1"))
        prompt = await env.prompt()
        assert f"no token limit for {USDC} (token_limits)" in prompt.details
        await asyncio.sleep(0.1)
        assert not task.done() and env.rpc.submitted == [] and usdc.balance(MALLORY) == 0
        task.cancel()
    finally:
        await close_env(env)


@pytest.mark.parametrize(
    "args",
    [
        b'{"receiver_id":"mallory.testnet","amount":"1","amount":"999999999999"}',  # which copy wins?
        b'{"receiver_id":"mallory.testnet","amount":999999999999}',  # a number, not a U128 string
        b'{"receiver_id":"mallory.testnet","amount":"+999999999999"}',  # Rust parses '+'
        b'{"receiver_id":"mallory.testnet"}',
        b'[{"receiver_id":"mallory.testnet","amount":"1"}]',
        b"receiver_id=mallory.testnet&amount=1",
    ],
    ids=["duplicate-amount", "number", "plus-sign", "missing", "array", "not-json"],
)
async def test_an_ft_transfer_whose_amount_cannot_be_read_is_never_auto_approved(
    limited: tuple[Env, FungibleToken], args: bytes
) -> None:
    env, _ = limited
    params = {"receiver_id": USDC, "method": "ft_transfer", "args": args.decode(), "deposit": ONE_YOCTO}
    task = env.start("near_function_call", **params)
    prompt = await env.prompt()
    assert "moves an unknown amount of tokens" in prompt.details
    assert env.rpc.submitted == []
    task.cancel()


async def test_an_unknown_one_yocto_call_under_a_wildcard_rule_still_asks(tmp_path: Path) -> None:
    rule = {"receiver": USDC, "methods": ["*"], "max_deposit": ONE_YOCTO, "auto_approve": True}
    env, _ = await open_env(tmp_path, function_calls=[rule], token_limits=LIMITED_POLICY["token_limits"])
    try:
        for method, deposit in (
            ("withdraw_all", ONE_YOCTO),
            ("storage_unregister", ONE_YOCTO),
            ("burn", "0"),
        ):
            task = env.start(
                "near_function_call", receiver_id=USDC, method=method, args={"force": True}, deposit=deposit
            )
            prompt = await env.prompt(len(env.world.tg.prompts) + 1)
            assert "an unknown method that may move tokens" in prompt.details, method
            task.cancel()
        assert env.rpc.submitted == []
    finally:
        await close_env(env)


class Panics(FakeContract):
    """A contract whose every call panics after the deposit was attached: NEAR refunds it."""

    def methods(self) -> dict[str, Any]:
        def boom(ctx: CallContext) -> None:
            raise ContractPanic("not today")

        return {"play": boom}


async def test_repeated_failing_transactions_with_deposits_hit_the_daily_limit(tmp_path: Path) -> None:
    rule = {"receiver": "game.testnet", "methods": ["play"], "max_deposit": "1", "auto_approve": True}
    env, _ = await open_env(tmp_path, function_calls=[rule], daily_limit="5")
    try:
        env.rpc.add_contract("game.testnet", Panics())
        params = {"receiver_id": "game.testnet", "method": "play", "args": {}, "deposit": "0.5"}
        signed, refused = await drain(env, 15, **params)
        assert all(result["status"] == "failure" for result in signed)
        assert all("Smart contract panicked: not today" in result["error"] for result in signed)
        # 0.5 NEAR each, counted although the chain refunded it: 9 fit under 5 NEAR with their fees.
        assert len(signed) == 9 and len(refused) == 6
        assert all("daily limit 5 NEAR" in str(r) for r in refused)
        records = await env.world.store.wallet_requests(limit=100)
        assert sorted({r.state for r in records}) == ["denied", "failed"]
        assert await env.world.store.wallet_spent(utc_day(T0)) == 9 * NEAR // 2
        assert (
            env.rpc.balance(OWNER) == 100 * NEAR
        )  # refunded, no fees in this node: the cap was not about loss
    finally:
        await close_env(env)


async def test_fees_burnt_by_zero_value_calls_count_against_the_daily_limit(tmp_path: Path) -> None:
    rule = {"receiver": "game.testnet", "methods": ["play"], "auto_approve": True}
    env, _ = await open_env(tmp_path, function_calls=[rule], daily_limit="0.5")
    try:
        env.rpc.add_contract("game.testnet", Panics())
        # ~300 Tgas burnt at 1e8 yoctoNEAR/gas: 0.003 NEAR converting, 0.027 NEAR executing.
        env.rpc.tx_fee, env.rpc.receipt_fee = parse_near("0.003"), parse_near("0.027")
        params = {"receiver_id": "game.testnet", "method": "play", "args": {}, "gas": 300 * 10**12}
        signed, refused = await drain(env, 30, **params)
        # Each call reserves its worst case (311 Tgas at twice the gas price: 0.0622 NEAR) and
        # settles at the 0.03 NEAR burnt: 15 fit (0.42 + 0.0622 <= 0.5), the 16th would not.
        assert len(signed) == 15 and len(refused) == 15
        assert all("in fees would exceed the daily limit 0.5 NEAR" in str(r) for r in refused)
        burnt = 100 * NEAR - env.rpc.balance(OWNER)
        assert burnt == 15 * parse_near("0.03") <= parse_near("0.5")
        assert await env.world.store.wallet_spent(utc_day(T0)) == burnt  # settled to tokens_burnt exactly
    finally:
        await close_env(env)


async def test_a_rejected_transaction_gives_its_charge_back_but_an_executed_failure_does_not(
    limited: tuple[Env, FungibleToken],
) -> None:
    env, usdc = limited
    # More USDC than the account holds: the token contract panics on chain.
    usdc.state["balances"][OWNER] = 5
    result = await env.request("near_function_call", **ft_transfer("10000000"))
    assert result["status"] == "failure" and "enough balance" in result["error"]
    day = await env.world.store.wallet_day(utc_day(T0))
    assert day.tokens == {USDC: 10_000_000}  # executed: counted whatever the outcome
    # Not enough NEAR for the deposit: the node rejects it before running it, nothing is counted.
    env.rpc.accounts[OWNER] = 0
    with pytest.raises(IpcError) as rejected:
        await env.request("near_function_call", **ft_transfer("10000000"))
    assert rejected.value.code == "near_rejected"
    assert (await env.world.store.wallet_day(utc_day(T0))).tokens == {USDC: 10_000_000}
