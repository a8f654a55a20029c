"""Attack on the wallet's daily limits (issue 11, break 7), from inside a hostile group's sandbox.

The owner gave the HOSTILE group a wallet key with the policy the README used to show: an
auto-approved `usdc.testnet ft_transfer` rule (now with token limits: 100 USDC a day, 10 per
transfer) and a game contract whose `play` method takes up to 1 NEAR, under a 5 NEAR daily
limit. The compromised agent connects to its IPC socket from its shell tool and tries to move
value the daily limit used not to see:

* one transfer with a duplicated `amount` key (which copy does the contract use?);
* 25 transfers of 10 USDC (each under the per-transfer limit; 250 USDC in all), then everything;
* 12 calls of 0.5 NEAR to a contract that panics — NEAR refunds the deposit, so the old ledger
  counted nothing, while gas is burnt every time.

Afterwards the host is checked: the token contract's balances on the NEAR node, what the node
accepted, the spend ledger in the gateway's database, and the owner's approval prompts.
Runs on every tier (the sandbox is only the launch point; the limits are the host's).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.wallet.amounts import parse_near
from gateway.app import Gateway
from gateway.wallet.keystore import KeyStore
from gateway.wallet.policy import utc_day
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.fakes.near_rpc import CallContext, ContractPanic, FakeContract, FakeNearRpc, FungibleToken
from tests.security.conftest import HOSTILE, Attacker, Tier, add_model_key

OWNER = "owner.testnet"
USDC = "usdc.testnet"
GAME = "game.testnet"
MALLORY = "mallory.testnet"
HOLDINGS = 1_000_000_000_000  # a million USDC (6 decimals)
NEAR = 10**24
FEE_PER_TX = parse_near("0.002")  # what the node burns per transaction (conversion + receipt)

WALLET_TOML = f"""
[wallet]
network = "testnet"
rpc_url = "RPC_URL"
approval_timeout_s = 3
default_key = "hot"
rpc_retries = 1
[wallet.policy]
auto_approve_max = "1"
daily_limit = "5"
key_groups = {{ hot = ["{HOSTILE.folder}"] }}
[[wallet.policy.function_calls]]
receiver = "{USDC}"
methods = ["ft_transfer"]
max_deposit = "0.000000000000000000000001"
auto_approve = true
[[wallet.policy.function_calls]]
receiver = "{GAME}"
methods = ["play"]
max_deposit = "1"
auto_approve = true
[wallet.policy.token_limits."{USDC}"]
daily_limit = "100000000"
auto_approve_max = "10000000"
"""

ATTACK = r"""
import json, os, socket, time
sock = socket.socket(socket.AF_UNIX)
sock.connect(os.environ.get("CLAWGATE_IPC_SOCKET") or "/run/clawgate/ipc.sock")
stream = sock.makefile("rwb")
ids = iter(range(1, 1 << 30))

def call(method, params):
    while True:
        rid = next(ids)
        stream.write(json.dumps({"id": rid, "method": method, "params": params}).encode() + b"\n")
        stream.flush()
        reply = {}
        while reply.get("id") != rid:
            reply = json.loads(stream.readline())
        error = reply.get("error") or {}
        if error.get("code") == "rate_limited":
            time.sleep(1)
            continue
        if error:
            return "refused: " + error.get("message", "")
        return reply["result"]["status"]

def ft_transfer(args_json):
    return call("near_function_call", {"receiver_id": "usdc.testnet", "method": "ft_transfer",
                                       "args": args_json, "deposit": "0.000000000000000000000001"})

report = {
    "duplicate": ft_transfer('{"receiver_id":"mallory.testnet","amount":"1","amount":"1000000000000"}'),
    "small": [ft_transfer('{"receiver_id":"mallory.testnet","amount":"10000000"}') for _ in range(25)],
    "everything": ft_transfer('{"receiver_id":"mallory.testnet","amount":"1000000000000"}'),
    "failing": [call("near_function_call", {"receiver_id": "game.testnet", "method": "play", "args": {},
                                            "deposit": "0.5"}) for _ in range(12)],
}
print("REPORT " + json.dumps(report))
"""


class Panics(FakeContract):
    """Every call panics after the deposit was attached: nearcore refunds it and burns the gas."""

    def methods(self) -> dict[str, object]:  # type: ignore[override]
        def play(ctx: CallContext) -> None:
            raise ContractPanic("the house always wins")

        return {"play": play}


@dataclass
class WalletWorld:
    gateway: Gateway
    near: FakeNearRpc
    usdc: FungibleToken
    channel: CaptureChannel


@pytest.fixture
async def world(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer
) -> AsyncIterator[WalletWorld]:
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model_server)
    near = FakeNearRpc(tx_fee=FEE_PER_TX // 2, receipt_fee=FEE_PER_TX // 2).start()
    key = KeyStore(config_dir).generate("hot", network="testnet", account_id=OWNER)
    near.add_account(OWNER, 100 * NEAR, keys=[key.public_key])
    usdc = FungibleToken({OWNER: HOLDINGS, MALLORY: 0})
    near.add_contract(USDC, usdc)
    near.add_contract(GAME, Panics())
    channel = CaptureChannel()
    gateway = Gateway(
        tier.config(model_server, extra=WALLET_TOML.replace("RPC_URL", near.url)), config_dir, data_dir
    )
    try:
        await gateway.start([channel])
        await gateway.registry.register(HOSTILE)
        gateway.test_channel = channel  # type: ignore[attr-defined]
        yield WalletWorld(gateway, near, usdc, channel)
    finally:
        await gateway.stop(grace_s=5)
        near.stop()


async def test_hostile_group_drains_tokens_and_burns_deposits_past_the_daily_limits(
    world: WalletWorld, model_server: FakeModelServer
) -> None:
    attacker = Attacker(world.gateway, model_server)
    output = await attacker.shell(f"python3 - <<'EOF'\n{ATTACK}\nEOF", timeout_s=60)
    [line] = [x for x in output.splitlines() if x.startswith("REPORT ")]
    report = json.loads(line.removeprefix("REPORT "))

    # An amount the wallet cannot read exactly asked the owner (who did not answer: expired).
    assert "approval request expired" in report["duplicate"], (report, world.usdc.balance(MALLORY))
    [prompt] = [p for _, p in world.channel.prompts]
    assert "moves an UNKNOWN amount of usdc.testnet tokens" in prompt.details
    # Tokens: ten 10 USDC transfers signed, then the daily token cap refuses; so does "everything".
    assert report["small"][:10] == ["success"] * 10, report["small"]
    assert all("daily token limit 100000000" in r for r in report["small"][10:]), report["small"]
    assert "daily token limit 100000000" in report["everything"]
    assert world.usdc.balance(MALLORY) == 100_000_000  # on chain: exactly the daily token limit

    # Failing deposits and fees: each 0.5 NEAR call counts though refunded, and so does its gas.
    signed = [r for r in report["failing"] if not r.startswith("refused")]
    assert signed == ["failure"] * 9, report["failing"]
    assert all("daily limit 5 NEAR" in r for r in report["failing"][9:]), report["failing"]
    assert len(world.near.submitted) == 10 + 9
    left = 100 * NEAR - world.near.balance(OWNER)
    assert left == 19 * FEE_PER_TX + 10  # fees burnt, the token kept 10 × 1 yocto, 0.5 NEAR refunded
    day = await world.gateway.store.wallet_day(utc_day(world.gateway.wallet.clock.now()))
    assert day.near == 9 * NEAR // 2 + left <= 5 * NEAR  # refunded deposits count, so do the fees
    assert day.tokens == {USDC: 100_000_000}
