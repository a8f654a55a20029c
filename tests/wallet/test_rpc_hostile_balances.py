"""A node's `view_account` answer is untrusted: impossible balances are refused, never shown.

`/wallet` and the dashboard's Wallet page print balances through `owner_views.balance_of`, which
must turn every bad answer — and a node that never answers — into "balance unavailable" instead
of an exception (a float like `1e400` is infinity to `json`, and `int(inf)` is an OverflowError,
not a ValueError; a number past u128 made `format_near` raise).
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from core.wallet.amounts import U128_MAX
from gateway.wallet.owner_views import balance_of
from gateway.wallet.rpc import NearRpc
from gateway.wallet.rpc_errors import RpcError

NEAR = 10**24


def node(result_json: str) -> httpx.MockTransport:
    """A node answering every request with `result_json` (raw text, so it can hold what JSON allows)."""

    def answer(request: httpx.Request) -> httpx.Response:
        req_id = json.loads(request.content)["id"]
        body = f'{{"jsonrpc": "2.0", "id": {req_id}, "result": {result_json}}}'
        return httpx.Response(200, content=body.encode(), headers={"content-type": "application/json"})

    return httpx.MockTransport(answer)


@pytest.mark.parametrize(
    "result",
    [
        '{"amount": 1e400, "block_height": 1}',  # infinity
        '{"amount": "1", "block_height": 1e400}',
        '{"amount": 1.5, "block_height": 1}',
        '{"amount": "-5", "block_height": 1}',
        f'{{"amount": "{U128_MAX + 1}", "block_height": 1}}',
        f'{{"amount": "{"9" * 5000}", "block_height": 1}}',  # past Python's int-parsing limit too
        '{"amount": "\u0661\u0662", "block_height": 1}',  # digits, but not ASCII ones
        '{"amount": true, "block_height": 1}',
        '{"amount": "5", "locked": "-1", "block_height": 1}',
        '["not", "an", "object"]',
    ],
)
async def test_an_impossible_balance_is_an_rpc_error_and_shown_unavailable(result: str) -> None:
    async with NearRpc("http://node.invalid", transport=node(result), retries=0) as rpc:
        with pytest.raises(RpcError):
            await rpc.account("alice.testnet")
        text, ok = await balance_of(rpc, "alice.testnet")
    assert not ok and text.startswith("balance unavailable (") and len(text) < 300


async def test_a_valid_balance_at_the_u128_edge_is_shown() -> None:
    answer = f'{{"amount": "{U128_MAX}", "locked": 0, "block_height": 7}}'
    async with NearRpc("http://node.invalid", transport=node(answer), retries=0) as rpc:
        assert (await rpc.account("alice.testnet")).amount == U128_MAX
    async with NearRpc(
        "http://node.invalid", transport=node('{"amount": "2500000000000000000000000", "block_height": 7}')
    ) as rpc:
        assert await balance_of(rpc, "alice.testnet") == ("2.5 NEAR", True)


async def test_a_node_that_never_answers_is_unavailable_after_the_bound() -> None:
    never = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        await never.wait()
        raise AssertionError("unreachable")

    # The client's own timeout (and retries) would take minutes; the caller's bound decides.
    async with NearRpc(
        "http://node.invalid", transport=httpx.MockTransport(hang), timeout_s=300, retries=3
    ) as rpc:
        text, ok = await asyncio.wait_for(balance_of(rpc, "alice.testnet", timeout_s=0.2), 30)
    assert not ok and text == "balance unavailable (no answer within 0.2s)"


class _Dribble(httpx.AsyncByteStream):
    """A body of `size` bytes in 1 MiB chunks, with no Content-Length announced."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.sent = 0

    async def __aiter__(self):  # type: ignore[no-untyped-def]
        while self.sent < self.size:
            chunk = b" " * min(1 << 20, self.size - self.sent)
            self.sent += len(chunk)
            yield chunk


async def test_an_answer_too_large_to_hold_is_refused_announced_or_not() -> None:
    from gateway.wallet.rpc import MAX_RESPONSE_BYTES

    big = MAX_RESPONSE_BYTES + 1
    announced = httpx.MockTransport(lambda r: httpx.Response(200, content=b" " * big))
    async with NearRpc("http://node.invalid", transport=announced, retries=0) as rpc:
        with pytest.raises(RpcError, match="refused"):
            await rpc.account("alice.testnet")
    dribble = _Dribble(64 * MAX_RESPONSE_BYTES)
    unannounced = httpx.MockTransport(lambda r: httpx.Response(200, stream=dribble))
    async with NearRpc("http://node.invalid", transport=unannounced, retries=0) as rpc:
        with pytest.raises(RpcError, match="larger than"):
            await rpc.account("alice.testnet")
    assert dribble.sent <= MAX_RESPONSE_BYTES + (1 << 20)  # it stopped reading, not just parsing


async def test_an_answer_nested_past_any_near_result_is_not_json_rpc() -> None:
    async with NearRpc(
        "http://node.invalid", transport=node("[" * 100_000 + "]" * 100_000), retries=0
    ) as rpc:
        with pytest.raises(RpcError, match="not JSON-RPC"):
            await rpc.account("alice.testnet")
