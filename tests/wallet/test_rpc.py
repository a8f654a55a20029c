"""NearRpc against FakeNearRpc over real loopback HTTP: happy path, rejections, retries, idempotency."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.wallet.keys import KeyPair
from gateway.wallet.rpc import NearRpc
from gateway.wallet.rpc_errors import (
    InvalidTransaction,
    RpcError,
    TransientRpcError,
    UnknownAccount,
)
from gateway.wallet.transactions import FunctionCall, SignedTransaction, Transaction, Transfer
from tests.fakes.near_rpc import FakeNearRpc
from tests.wallet.known_keys import KEY, NEAR, OTHER

ALICE = "alice.test.near"
BOB = "bob.test.near"


@pytest.fixture
def near() -> Iterator[FakeNearRpc]:
    with FakeNearRpc() as server:
        server.add_account(ALICE, 10 * NEAR, [KEY.public_key], nonce=7)
        server.add_account(BOB, 1 * NEAR)
        yield server


@pytest.fixture
async def rpc(near: FakeNearRpc) -> AsyncIterator[NearRpc]:
    client = NearRpc(near.url, timeout_s=5.0, retries=3, backoff_s=0.01)
    yield client
    await client.aclose()


async def signed_transfer(
    rpc: NearRpc, amount: int, *, nonce: int | None = None, key: KeyPair = KEY, to: str = BOB
) -> SignedTransaction:
    ak = await rpc.access_key(ALICE, key.public_key)
    tx = Transaction(
        ALICE,
        key.public_key,
        ak.nonce + 1 if nonce is None else nonce,
        to,
        ak.block_hash,
        (Transfer(amount),),
    )
    return tx.sign(key)


async def test_access_key_and_block_hash(near: FakeNearRpc, rpc: NearRpc) -> None:
    ak = await rpc.access_key(ALICE, KEY.public_key)
    assert ak.nonce == 7
    assert ak.permission == "FullAccess"
    assert len(ak.block_hash) == 32 and ak.block_height >= 1
    head = await rpc.latest_block_hash()
    assert len(head) == 32
    assert head == near.head_hash  # the block call itself produced the newest block


async def test_account_view(rpc: NearRpc) -> None:
    view = await rpc.account(ALICE)
    assert view.amount == 10 * NEAR and view.locked == 0 and view.block_height >= 1


async def test_transfer_accepted_once_and_balances_move(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, 2 * NEAR)
    outcome = await rpc.send_tx(signed)
    assert outcome.status == "success" and outcome.error is None
    assert outcome.hash == signed.hash
    assert outcome.final_execution_status == "EXECUTED_OPTIMISTIC"
    assert outcome.raw["transaction"]["nonce"] == 8
    assert near.balance(ALICE) == 8 * NEAR and near.balance(BOB) == 3 * NEAR
    assert near.nonce(ALICE, KEY.public_key) == 8
    assert [s.hash for s in near.submitted] == [signed.hash]
    assert near.wait_for_submissions(1, timeout=1)
    assert (await rpc.account(BOB)).amount == 3 * NEAR


async def test_transfer_creates_missing_receiver(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, NEAR, to="carol.test.near")
    assert (await rpc.send_tx(signed)).status == "success"
    assert near.balance("carol.test.near") == NEAR


async def test_server_verifies_signature_independently(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, NEAR)
    tampered = SignedTransaction(signed.transaction, bytes([signed.signature[0] ^ 1]) + signed.signature[1:])
    with pytest.raises(InvalidTransaction) as info:
        await rpc.send_tx(tampered)
    assert info.value.reason == "InvalidSignature"
    assert "signature" in str(info.value)
    # Signed by a different key than the one the transaction names: also rejected.
    forged = SignedTransaction(signed.transaction, OTHER.sign(signed.transaction.digest()))
    with pytest.raises(InvalidTransaction):
        await rpc.send_tx(forged)
    assert near.submitted == [] and near.balance(ALICE) == 10 * NEAR
    assert near.nonce(ALICE, KEY.public_key) == 7
    assert [r["accepted"] for r in near.received] == [False, False]


async def test_invalid_nonce_message_names_both_nonces(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, NEAR, nonce=5)
    with pytest.raises(InvalidTransaction) as info:
        await rpc.send_tx(signed)
    assert info.value.reason == "InvalidNonce"
    assert str(info.value) == "transaction rejected: nonce 5 is not greater than the access key's nonce 7"
    assert info.value.attempts == 1  # not retried
    assert len(near.received) == 1 and near.balance(ALICE) == 10 * NEAR


async def test_expired_block_hash(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, NEAR)
    near.expire_blocks()
    with pytest.raises(InvalidTransaction) as info:
        await rpc.send_tx(signed)
    assert info.value.reason == "Expired"
    assert "block hash" in str(info.value)
    # Re-signing over a fresh block hash works.
    assert (await rpc.send_tx(await signed_transfer(rpc, NEAR))).status == "success"


async def test_not_enough_balance(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, 11 * NEAR)
    with pytest.raises(InvalidTransaction) as info:
        await rpc.send_tx(signed)
    assert info.value.reason == "NotEnoughBalance"
    assert "10 NEAR" in str(info.value) and "11 NEAR" in str(info.value)
    assert near.balance(ALICE) == 10 * NEAR and near.submitted == []


async def test_unknown_access_key_on_send(near: FakeNearRpc, rpc: NearRpc) -> None:
    ak = await rpc.access_key(ALICE, KEY.public_key)
    tx = Transaction(ALICE, OTHER.public_key, 1, BOB, ak.block_hash, (Transfer(1),)).sign(OTHER)
    with pytest.raises(InvalidTransaction) as info:
        await rpc.send_tx(tx)
    assert info.value.reason == "InvalidAccessKeyError"
    assert str(OTHER.public_key) in str(info.value)


@pytest.mark.parametrize("kind", ["http500", "timeout_error", "disconnect", "http429"])
async def test_transient_failures_are_retried(near: FakeNearRpc, rpc: NearRpc, kind: str) -> None:
    signed = await signed_transfer(rpc, NEAR)
    near.fail_next(2, kind, method="send_tx")
    outcome = await rpc.send_tx(signed)
    assert outcome.status == "success"
    assert [r["accepted"] for r in near.received] == [False, False, True]
    assert near.balance(BOB) == 2 * NEAR


async def test_reads_are_retried_too(near: FakeNearRpc, rpc: NearRpc) -> None:
    near.fail_next(1, "disconnect")
    near.fail_next(1, "http500")
    assert (await rpc.access_key(ALICE, KEY.public_key)).nonce == 7


async def test_retry_after_is_honoured(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, NEAR)
    near.fail_next(1, "http429", method="send_tx", retry_after=0.3)
    await rpc.send_tx(signed)
    first, second = near.received
    assert second["t"] - first["t"] >= 0.28


async def test_retries_exhausted_names_hash(near: FakeNearRpc) -> None:
    async with NearRpc(near.url, retries=2, backoff_s=0.01) as rpc:
        signed = await signed_transfer(rpc, NEAR)
        near.fail_next(3, "timeout_error", method="send_tx")
        with pytest.raises(TransientRpcError) as info:
            await rpc.send_tx(signed)
    message = str(info.value)
    assert signed.hash in message and "tx_status" in message
    assert info.value.attempts == 3
    assert len(near.received) == 3 and near.submitted == []


async def test_lost_response_resubmission_does_not_double_apply(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, 3 * NEAR)
    near.fail_next(1, "drop_response", method="send_tx")  # applied on the node, response lost
    outcome = await rpc.send_tx(signed)
    assert outcome.status == "success" and outcome.hash == signed.hash
    assert len(near.received) == 2 and all(r["hash"] == signed.hash for r in near.received)
    assert near.submitted == [signed]
    assert near.balance(ALICE) == 7 * NEAR and near.balance(BOB) == 4 * NEAR
    # An explicit resubmission is also idempotent.
    assert (await rpc.send_tx(signed)).hash == signed.hash
    assert near.balance(ALICE) == 7 * NEAR


async def test_lost_response_on_non_deduplicating_node_is_found_by_hash(
    near: FakeNearRpc, rpc: NearRpc
) -> None:
    near.idempotent = False  # the retry is rejected as InvalidNonce; the client looks the hash up
    signed = await signed_transfer(rpc, NEAR)
    near.fail_next(1, "drop_response", method="send_tx")
    outcome = await rpc.send_tx(signed)
    assert outcome.status == "success" and outcome.hash == signed.hash
    assert [r["accepted"] for r in near.received] == [True, False]
    assert near.balance(BOB) == 2 * NEAR
    assert near.methods[-1] == "tx"


async def test_unknown_account_and_key(near: FakeNearRpc, rpc: NearRpc) -> None:
    with pytest.raises(UnknownAccount) as info:
        await rpc.account("nobody.test.near")
    assert "nobody.test.near" in str(info.value) and info.value.cause == "UNKNOWN_ACCOUNT"
    with pytest.raises(UnknownAccount) as info:
        await rpc.access_key(ALICE, OTHER.public_key)
    assert str(OTHER.public_key) in str(info.value) and info.value.cause == "UNKNOWN_ACCESS_KEY"
    near.legacy_unknown_key_result = True  # older nodes: a result carrying an error string
    with pytest.raises(UnknownAccount) as info:
        await rpc.access_key(ALICE, OTHER.public_key)
    assert str(OTHER.public_key) in str(info.value)


async def test_view_call_decoding(near: FakeNearRpc, rpc: NearRpc) -> None:
    seen: list[object] = []

    def ft_balance_of(args: object) -> object:
        seen.append(args)
        return str(5 * NEAR)

    near.add_view("token.test.near", "ft_balance_of", ft_balance_of)
    near.add_view("token.test.near", "ft_metadata", lambda args: {"symbol": "TOK", "decimals": 18})
    near.add_view("token.test.near", "raw", lambda args: b"\xff\x00")
    near.add_view("token.test.near", "text", lambda args: b"hello")
    near.add_view("token.test.near", "nothing", lambda args: b"")
    assert await rpc.view_call("token.test.near", "ft_balance_of", {"account_id": ALICE}) == str(5 * NEAR)
    assert seen == [{"account_id": ALICE}]
    assert await rpc.view_call("token.test.near", "ft_metadata") == {"symbol": "TOK", "decimals": 18}
    assert seen[-1] == {"account_id": ALICE}  # None args are sent as {}
    assert await rpc.view_call("token.test.near", "raw", b"x") == b"\xff\x00"
    assert await rpc.view_call("token.test.near", "text") == "hello"
    assert await rpc.view_call("token.test.near", "nothing") is None
    with pytest.raises(RpcError, match="MethodNotFound"):
        await rpc.view_call("token.test.near", "missing")
    with pytest.raises(UnknownAccount):
        await rpc.view_call("ghost.test.near", "x")


async def test_tx_status(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, NEAR)
    sent = await rpc.send_tx(signed, wait_until="NONE")
    assert sent.status == "pending" and sent.hash == signed.hash and sent.final_execution_status == "NONE"
    status = await rpc.tx_status(signed.hash, ALICE, wait_until="FINAL")
    assert status.status == "success" and status.final_execution_status == "FINAL"
    assert status.raw["transaction"]["hash"] == signed.hash
    with pytest.raises(RpcError, match="not known") as info:
        await rpc.tx_status("11111111111111111111111111111111", ALICE)
    assert info.value.cause == "UNKNOWN_TRANSACTION"


async def test_failed_execution_is_an_outcome_not_an_exception(near: FakeNearRpc, rpc: NearRpc) -> None:
    ak = await rpc.access_key(ALICE, KEY.public_key)
    call = FunctionCall("ft_transfer", json.dumps({"a": 1}).encode(), 30 * 10**12, 1)
    tx = Transaction(ALICE, KEY.public_key, ak.nonce + 1, "ghost.test.near", ak.block_hash, (call,))
    outcome = await rpc.send_tx(tx.sign(KEY))
    assert outcome.status == "failure"
    assert (
        outcome.error is not None
        and "AccountDoesNotExist" in outcome.error
        and "ghost.test.near" in outcome.error
    )
    assert "Failure" in outcome.raw["status"]
    assert near.balance(ALICE) == 10 * NEAR  # deposit not moved
    assert near.nonce(ALICE, KEY.public_key) == 8  # but the nonce is used


@pytest.mark.parametrize("kind", ["html", "wrong_id"])
async def test_non_json_rpc_response(near: FakeNearRpc, rpc: NearRpc, kind: str) -> None:
    near.fail_next(1, kind)
    with pytest.raises(RpcError) as info:
        await rpc.latest_block_hash()
    assert not isinstance(info.value, TransientRpcError)
    assert ("not JSON-RPC" if kind == "html" else "does not match") in str(info.value)
    assert near.methods == ["block"]  # not retried


async def test_invalid_wait_until_rejected_locally(near: FakeNearRpc, rpc: NearRpc) -> None:
    signed = await signed_transfer(rpc, NEAR)
    calls = len(near.methods)
    with pytest.raises(ValueError, match="wait_until"):
        await rpc.send_tx(signed, wait_until="SOON")
    with pytest.raises(ValueError, match="wait_until"):
        await rpc.tx_status(signed.hash, ALICE, wait_until="final")
    assert len(near.methods) == calls and near.received == []


async def test_network_error_when_server_is_down() -> None:
    server = FakeNearRpc().start()
    url = server.url
    server.stop()
    async with NearRpc(url, retries=1, backoff_s=0.01) as rpc:
        with pytest.raises(TransientRpcError, match="network error"):
            await rpc.latest_block_hash()


def test_fake_is_usable_from_sync_code() -> None:
    import httpx

    with FakeNearRpc() as server:
        body = {"jsonrpc": "2.0", "id": "x", "method": "block", "params": {"finality": "final"}}
        reply = httpx.post(server.url, json=body).json()
        assert reply["id"] == "x" and reply["result"]["header"]["height"] >= 1
        bad = httpx.post(server.url, json={**body, "method": "send_tx", "params": {"signed_tx_base64": "!!"}})
        assert bad.status_code == 400 and bad.json()["error"]["name"] == "REQUEST_VALIDATION_ERROR"
        assert server.received[-1]["accepted"] is False
