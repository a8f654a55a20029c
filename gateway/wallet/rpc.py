"""A small async NEAR JSON-RPC client (httpx) with the error taxonomy the wallet needs.

Why our own client: the wallet must decide, per failure, whether it is safe to try again.  The
three answers map to three exception types:

* :class:`TransientRpcError` — the node was unreachable, slow, overloaded (HTTP 5xx/408/429) or
  answered NEAR ``TIMEOUT_ERROR``.  These are retried here with exponential backoff and jitter.
  Retrying ``send_tx`` is safe because a signed transaction is identified by its hash: NEAR
  answers a resubmission with the existing outcome instead of applying it twice.
* :class:`InvalidTransaction` — the chain rejected the transaction (nonce, signature, balance,
  expired block hash, access key).  Never retried: resending the same bytes cannot succeed.
* :class:`UnknownAccount` — the account or access key does not exist.

The exception types and the readable text for NEAR's error objects live in
:mod:`gateway.wallet.rpc_errors`; the typed views of results (:class:`AccessKeyView`,
:class:`TxOutcome`, ...) and their defensive parsing in :mod:`gateway.wallet.rpc_results`.  This
module is the transport: one HTTP request per attempt, the retry loop, and the checks that an
answer is JSON-RPC for *our* request before anything else reads it.

Errors carry human-readable messages (they end up in owner-facing chat) and never embed request
bodies: a signed transaction is not secret, but dumping it makes errors unreadable.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import itertools
import json
import logging
import random
import time
from typing import Any

import httpx

from core.json_nesting import nesting_exceeds
from gateway.wallet.keys import PublicKey
from gateway.wallet.rpc_errors import (
    InvalidTransaction,
    RpcError,
    TransientRpcError,
    UnknownAccount,
    classify,
    snip,
)
from gateway.wallet.rpc_results import (
    AccessKeyView,
    AccountView,
    TxOutcome,
    decode_block_hash,
    expect_dict,
    tx_outcome,
    u128_amount,
)
from gateway.wallet.transactions import SignedTransaction

log = logging.getLogger(__name__)
MAX_RESPONSE_BYTES = 16 << 20  # a NEAR answer is small; view-call results are gas-bounded
MAX_RESPONSE_DEPTH = 64  # NEAR results nest a handful of levels

WAIT_UNTIL = ("NONE", "INCLUDED", "EXECUTED_OPTIMISTIC", "INCLUDED_FINAL", "EXECUTED", "FINAL")
RETRYABLE_HTTP = frozenset({408, 429})
# JSON-RPC params: NEAR methods take an object, a few (gas_price) a positional array.
_Params = dict[str, Any] | list[Any]


class NearRpc:
    """Async NEAR JSON-RPC client; one instance per endpoint, close with :meth:`aclose`."""

    MAX_RETRY_AFTER_S = 10.0  # a server asking us to wait longer than this is treated as down
    MAX_BACKOFF_S = 8.0

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10.0,
        retries: int = 3,
        backoff_s: float = 0.25,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.url = url
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._ids = itertools.count(1)
        self._client = httpx.AsyncClient(
            timeout=timeout_s, transport=transport, headers={"user-agent": "clawgate-wallet"}
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> NearRpc:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- public calls ----------------------------------------------------------------------

    async def access_key(self, account_id: str, public_key: PublicKey) -> AccessKeyView:
        """The access key's nonce plus a recent final block hash — everything needed to sign."""
        params = {
            "request_type": "view_access_key",
            "finality": "final",
            "account_id": account_id,
            "public_key": str(public_key),
        }
        try:
            result = await self._call("query", params)
        except UnknownAccount as exc:
            if exc.cause == "UNKNOWN_ACCESS_KEY":
                raise UnknownAccount(
                    f"access key {public_key} does not exist on account {account_id}",
                    name=exc.name,
                    cause=exc.cause,
                    data=exc.data,
                    info=exc.info,
                ) from None
            raise
        res = expect_dict(result, "query view_access_key")
        if isinstance(res.get("error"), str):
            # Older nodes answer an unknown key with a *result* carrying an error string.
            err = res["error"]
            if "does not exist" in err:
                raise UnknownAccount(
                    f"access key {public_key} does not exist on account {account_id}",
                    cause="UNKNOWN_ACCESS_KEY",
                    data=err,
                )
            raise RpcError(f"NEAR RPC view_access_key failed: {snip(err)}", data=err)
        try:
            return AccessKeyView(
                nonce=int(res["nonce"]),
                block_hash=decode_block_hash(res["block_hash"]),
                block_height=int(res["block_height"]),
                permission=res.get("permission"),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise RpcError(f"NEAR RPC view_access_key returned an unexpected result ({exc!r})") from None

    async def latest_block_hash(self) -> bytes:
        """The hash of the latest final block (32 bytes), to anchor a new transaction."""
        result = expect_dict(await self._call("block", {"finality": "final"}), "block")
        try:
            return decode_block_hash(result["header"]["hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RpcError(f"NEAR RPC block returned an unexpected result ({exc!r})") from None

    async def gas_price(self) -> int:
        """The current gas price in yoctoNEAR per gas (NEAR method ``gas_price`` at the latest block)."""
        result = expect_dict(await self._call("gas_price", [None]), "gas_price")
        price = result.get("gas_price")
        if not isinstance(price, str | int) or isinstance(price, bool) or not str(price).isdigit():
            raise RpcError(f"NEAR RPC gas_price returned an unexpected result ({snip(str(price))!r})")
        return int(price)

    async def account(self, account_id: str) -> AccountView:
        params = {"request_type": "view_account", "finality": "final", "account_id": account_id}
        res = expect_dict(await self._call("query", params), "query view_account")
        if isinstance(res.get("error"), str):
            err = res["error"]
            cls = UnknownAccount if "does not exist" in err else RpcError
            raise cls(f"account {account_id}: {snip(err)}", data=err)
        try:
            return AccountView(
                amount=u128_amount(res["amount"]),
                locked=u128_amount(res.get("locked", 0)),
                storage_usage=int(res.get("storage_usage", 0)),
                code_hash=str(res.get("code_hash", ""))[:64],
                block_height=int(res["block_height"]),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:  # int(inf) is an OverflowError
            raise RpcError(f"NEAR RPC view_account returned an unexpected result ({exc!r})") from None

    async def view_call(
        self, contract_id: str, method: str, args: dict[str, Any] | bytes | None = None
    ) -> object:
        """Call a view method.  The result is JSON-decoded when it is JSON, else a ``str`` if it is
        UTF-8, else raw ``bytes``; an empty result is ``None``.  ``None`` args send ``{}`` like
        near-api-js, because most contracts deserialise their arguments as a JSON object."""
        if args is None:
            raw_args = b"{}"
        elif isinstance(args, bytes):
            raw_args = args
        else:
            raw_args = json.dumps(args, separators=(",", ":")).encode()
        params = {
            "request_type": "call_function",
            "finality": "final",
            "account_id": contract_id,
            "method_name": method,
            "args_base64": base64.b64encode(raw_args).decode("ascii"),
        }
        res = expect_dict(await self._call("query", params), "query call_function")
        if isinstance(res.get("error"), str):
            err = res["error"]
            raise RpcError(f"view call {contract_id}.{method} failed: {snip(err)}", data=err)
        data = res.get("result")
        if not isinstance(data, list) or not all(isinstance(b, int) and 0 <= b < 256 for b in data):
            raise RpcError(f"view call {contract_id}.{method}: result is not a byte array")
        out = bytes(data)
        if not out:
            return None
        try:
            text = out.decode("utf-8")
        except UnicodeDecodeError:
            return out
        try:
            return json.loads(text)
        except ValueError:
            return text

    async def send_tx(self, signed: SignedTransaction, wait_until: str = "EXECUTED_OPTIMISTIC") -> TxOutcome:
        """Submit a signed transaction; retried on transient failures (resubmission is idempotent).

        If retries run out the transaction may or may not be on chain — the error names the hash
        so the caller can check with :meth:`tx_status` instead of signing a second transaction.
        """
        _check_wait_until(wait_until)
        tx_hash = signed.hash
        sender = signed.transaction.signer_id
        params = {"signed_tx_base64": signed.to_base64(), "wait_until": wait_until}
        try:
            result = await self._call("send_tx", params)
        except TransientRpcError as exc:
            wrapped = TransientRpcError(
                f"could not confirm transaction {tx_hash} after {exc.attempts} attempt(s): {exc.message}. "
                f"It may still be executed; check with tx_status({tx_hash!r}, {sender!r}) "
                "before signing a new transaction",
                name=exc.name,
                cause=exc.cause,
                data=exc.data,
                retry_after=exc.retry_after,
                info=exc.info,
            )
            wrapped.attempts = exc.attempts
            raise wrapped from exc
        except InvalidTransaction as exc:
            # An earlier attempt may have landed before its response was lost; a node that does
            # not deduplicate then reports our own nonce as used.  Look the hash up before failing.
            if exc.reason == "InvalidNonce" and exc.attempts > 1:
                try:
                    return await self.tx_status(tx_hash, sender, wait_until)
                except RpcError:
                    pass
            raise
        return tx_outcome(expect_dict(result, "send_tx"), tx_hash)

    async def tx_status(
        self, tx_hash: str, sender_id: str, wait_until: str = "EXECUTED_OPTIMISTIC"
    ) -> TxOutcome:
        """Look up a transaction by hash (NEAR method ``tx``)."""
        _check_wait_until(wait_until)
        params = {"tx_hash": tx_hash, "sender_account_id": sender_id, "wait_until": wait_until}
        result = await self._call("tx", params)
        return tx_outcome(expect_dict(result, "tx"), tx_hash)

    # -- transport -------------------------------------------------------------------------

    async def _call(self, method: str, params: _Params) -> object:
        """One JSON-RPC call with retries for transient failures; sets ``attempts`` on errors."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._once(method, params)
            except TransientRpcError as exc:
                exc.attempts = attempt
                if attempt > self._retries:
                    raise
                delay = self._delay(attempt, exc.retry_after)
                log.info(
                    "NEAR RPC %s attempt %d/%d failed (%s); retrying in %.2fs",
                    method,
                    attempt,
                    self._retries + 1,
                    exc.message,
                    delay,
                )
                await asyncio.sleep(delay)
            except RpcError as exc:
                exc.attempts = attempt
                raise

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter, or the server's Retry-After (capped) if it gave one."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.MAX_RETRY_AFTER_S)
        base: float = min(self._backoff_s * 2 ** (attempt - 1), self.MAX_BACKOFF_S)
        return base * random.uniform(0.5, 1.0)

    async def _once(self, method: str, params: _Params) -> object:
        req_id = next(self._ids)
        body = {"jsonrpc": "2.0", "id": req_id, "method": method, "params": params}
        try:
            async with self._client.stream("POST", self.url, json=body) as resp:
                raw = await _read_capped(resp, method)
        except httpx.TimeoutException:
            raise TransientRpcError(f"NEAR RPC {method} timed out after {self._timeout_s:g}s") from None
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise TransientRpcError(f"NEAR RPC {method}: network error ({problem})") from None

        status = resp.status_code
        retryable_http = status >= 500 or status in RETRYABLE_HTTP
        retry_after = _retry_after(resp.headers.get("retry-after"))
        payload = _json(raw)
        if not isinstance(payload, dict) or ("result" not in payload and "error" not in payload):
            what = f"HTTP {status}, {resp.headers.get('content-type', 'no content type')}"
            snippet = snip(raw.decode("utf-8", "replace"))
            if retryable_http:
                raise TransientRpcError(
                    f"NEAR RPC {method}: node unavailable ({what}): {snippet!r}", retry_after=retry_after
                )
            raise RpcError(f"NEAR RPC {method}: response is not JSON-RPC ({what}): {snippet!r}")
        if payload.get("id") != req_id:
            raise RpcError(
                f"NEAR RPC {method}: response id {payload.get('id')!r} does not match request id {req_id}"
            )
        if "error" in payload and payload["error"] is not None:
            err = classify(method, payload["error"])
            if type(err) is RpcError and (retryable_http or err.name == "INTERNAL_ERROR"):
                raise TransientRpcError(
                    err.message,
                    name=err.name,
                    cause=err.cause,
                    data=err.data,
                    info=err.info,
                    retry_after=retry_after,
                )
            if isinstance(err, TransientRpcError):
                err.retry_after = retry_after
            raise err
        if retryable_http:
            raise TransientRpcError(f"NEAR RPC {method}: HTTP {status}", retry_after=retry_after)
        if status >= 400:
            raise RpcError(f"NEAR RPC {method}: HTTP {status}")
        return payload["result"]


# -- helpers -------------------------------------------------------------------------------


def _check_wait_until(wait_until: str) -> None:
    if wait_until not in WAIT_UNTIL:
        raise ValueError(f"wait_until must be one of {', '.join(WAIT_UNTIL)}; got {wait_until!r}")


def _retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number, or an HTTP date."""
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


async def _read_capped(resp: httpx.Response, method: str) -> bytes:
    """The body, refused past MAX_RESPONSE_BYTES: a node (or what answers at its URL) decides
    how much it sends, and the whole answer is held in memory to be parsed."""
    declared = resp.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_RESPONSE_BYTES:
        raise RpcError(
            f"NEAR RPC {method}: response of {int(declared)} bytes refused (limit {MAX_RESPONSE_BYTES})"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.aiter_bytes():
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise RpcError(f"NEAR RPC {method}: response larger than {MAX_RESPONSE_BYTES} bytes refused")
        chunks.append(chunk)
    return b"".join(chunks)


def _json(raw: bytes) -> object:
    """The parsed answer, or None when it is not JSON or nests deeper than any NEAR result."""
    if nesting_exceeds(raw, MAX_RESPONSE_DEPTH):
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None
