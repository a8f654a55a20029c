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
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.wallet.amounts import format_near
from gateway.wallet.base58 import b58decode
from gateway.wallet.keys import PublicKey
from gateway.wallet.transactions import SignedTransaction

log = logging.getLogger(__name__)

WAIT_UNTIL = ("NONE", "INCLUDED", "EXECUTED_OPTIMISTIC", "INCLUDED_FINAL", "EXECUTED", "FINAL")
RETRYABLE_HTTP = frozenset({408, 429})
_SNIPPET = 160
# JSON-RPC params: NEAR methods take an object, a few (gas_price) a positional array.
_Params = dict[str, Any] | list[Any]


class RpcError(Exception):
    """A NEAR RPC call failed.  ``name``/``cause``/``data`` are NEAR's structured error fields.

    ``attempts`` is how many HTTP requests were made before giving up; the wallet uses it to
    know whether an earlier attempt may have reached the node.
    """

    def __init__(
        self,
        message: str,
        *,
        name: str | None = None,
        cause: str | None = None,
        data: object = None,
        info: object = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.cause = cause
        self.data = data
        self.info = info
        self.attempts = 1


class TransientRpcError(RpcError):
    """Network failure, timeout, HTTP 5xx/408/429 or NEAR ``TIMEOUT_ERROR`` — worth retrying."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class InvalidTransaction(RpcError):
    """The node rejected the transaction itself; ``reason`` is NEAR's variant, e.g. ``"InvalidNonce"``."""

    def __init__(self, message: str, *, reason: str | None = None, details: object = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.reason = reason
        self.details = details


class UnknownAccount(RpcError):
    """``UNKNOWN_ACCOUNT`` or ``UNKNOWN_ACCESS_KEY``: nothing to retry, the thing does not exist."""


@dataclass(frozen=True, slots=True)
class AccessKeyView:
    nonce: int
    block_hash: bytes
    block_height: int
    permission: object  # raw NEAR JSON: "FullAccess" or {"FunctionCall": {...}}


@dataclass(frozen=True, slots=True)
class AccountView:
    amount: int  # yoctoNEAR
    locked: int  # yoctoNEAR
    storage_usage: int
    code_hash: str
    block_height: int


@dataclass(frozen=True, slots=True)
class TxOutcome:
    """The outcome of ``send_tx``/``tx``.  ``status`` is "success", "failure" or "pending".

    "pending" means the node answered before execution finished (``wait_until`` NONE/INCLUDED, or
    the receipts are still running); ask :meth:`NearRpc.tx_status` later.  ``error`` is a readable
    description of a failure; the full NEAR JSON stays in ``raw``.
    """

    hash: str
    status: str
    final_execution_status: str | None
    raw: dict[str, Any] = field(repr=False)
    error: str | None = None

    @property
    def success_value(self) -> bytes | None:
        """The decoded ``SuccessValue`` bytes (a contract's return value), if any."""
        status = self.raw.get("status")
        if isinstance(status, dict) and isinstance(status.get("SuccessValue"), str):
            try:
                return base64.b64decode(status["SuccessValue"])
            except ValueError:
                return None
        return None


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
        res = _expect_dict(result, "query view_access_key")
        if isinstance(res.get("error"), str):
            # Older nodes answer an unknown key with a *result* carrying an error string.
            err = res["error"]
            if "does not exist" in err:
                raise UnknownAccount(
                    f"access key {public_key} does not exist on account {account_id}",
                    cause="UNKNOWN_ACCESS_KEY",
                    data=err,
                )
            raise RpcError(f"NEAR RPC view_access_key failed: {_snip(err)}", data=err)
        try:
            return AccessKeyView(
                nonce=int(res["nonce"]),
                block_hash=_block_hash(res["block_hash"]),
                block_height=int(res["block_height"]),
                permission=res.get("permission"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RpcError(f"NEAR RPC view_access_key returned an unexpected result ({exc!r})") from None

    async def latest_block_hash(self) -> bytes:
        """The hash of the latest final block (32 bytes), to anchor a new transaction."""
        result = _expect_dict(await self._call("block", {"finality": "final"}), "block")
        try:
            return _block_hash(result["header"]["hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise RpcError(f"NEAR RPC block returned an unexpected result ({exc!r})") from None

    async def gas_price(self) -> int:
        """The current gas price in yoctoNEAR per gas (NEAR method ``gas_price`` at the latest block)."""
        result = _expect_dict(await self._call("gas_price", [None]), "gas_price")
        price = result.get("gas_price")
        if not isinstance(price, str | int) or isinstance(price, bool) or not str(price).isdigit():
            raise RpcError(f"NEAR RPC gas_price returned an unexpected result ({_snip(str(price))!r})")
        return int(price)

    async def account(self, account_id: str) -> AccountView:
        params = {"request_type": "view_account", "finality": "final", "account_id": account_id}
        res = _expect_dict(await self._call("query", params), "query view_account")
        if isinstance(res.get("error"), str):
            err = res["error"]
            cls = UnknownAccount if "does not exist" in err else RpcError
            raise cls(f"account {account_id}: {_snip(err)}", data=err)
        try:
            return AccountView(
                amount=int(res["amount"]),
                locked=int(res.get("locked", 0)),
                storage_usage=int(res.get("storage_usage", 0)),
                code_hash=str(res.get("code_hash", "")),
                block_height=int(res["block_height"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
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
        res = _expect_dict(await self._call("query", params), "query call_function")
        if isinstance(res.get("error"), str):
            err = res["error"]
            raise RpcError(f"view call {contract_id}.{method} failed: {_snip(err)}", data=err)
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
        return _outcome(_expect_dict(result, "send_tx"), tx_hash)

    async def tx_status(
        self, tx_hash: str, sender_id: str, wait_until: str = "EXECUTED_OPTIMISTIC"
    ) -> TxOutcome:
        """Look up a transaction by hash (NEAR method ``tx``)."""
        _check_wait_until(wait_until)
        params = {"tx_hash": tx_hash, "sender_account_id": sender_id, "wait_until": wait_until}
        result = await self._call("tx", params)
        return _outcome(_expect_dict(result, "tx"), tx_hash)

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
            resp = await self._client.post(self.url, json=body)
        except httpx.TimeoutException:
            raise TransientRpcError(f"NEAR RPC {method} timed out after {self._timeout_s:g}s") from None
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            raise TransientRpcError(f"NEAR RPC {method}: network error ({problem})") from None

        status = resp.status_code
        retryable_http = status >= 500 or status in RETRYABLE_HTTP
        retry_after = _retry_after(resp.headers.get("retry-after"))
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        if not isinstance(payload, dict) or ("result" not in payload and "error" not in payload):
            what = f"HTTP {status}, {resp.headers.get('content-type', 'no content type')}"
            snippet = _snip(resp.text)
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
            err = _classify(method, payload["error"])
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


def _expect_dict(result: object, what: str) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise RpcError(f"NEAR RPC {what} returned an unexpected result (not an object)")
    return result


def _block_hash(text: object) -> bytes:
    if not isinstance(text, str):
        raise ValueError("block hash is not a string")
    raw = b58decode(text)
    if len(raw) != 32:
        raise ValueError("block hash is not 32 bytes")
    return raw


def _snip(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 1] + "…"


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


def _find(obj: object, key: str, depth: int = 0) -> object:
    """The value under ``key`` anywhere in nested JSON (NEAR nests InvalidTxError differently
    across versions: ``cause.info``, ``data``, ``TxExecutionError``...)."""
    if depth > 6:
        return None
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        for value in obj.values():
            found = _find(value, key, depth + 1)
            if found is not None:
                return found
    return None


def _near(amount: object) -> str:
    if isinstance(amount, int | str | float):  # a JSON value; anything else is shown as it is
        try:
            return f"{format_near(int(amount))} NEAR"
        except (TypeError, ValueError):
            pass
    return f"{amount} yoctoNEAR"


def _compact(obj: object) -> str:
    return _snip(json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str))


def describe_invalid_tx(err: object) -> tuple[str, str]:
    """(reason, readable text) for a NEAR ``InvalidTxError`` value."""
    details: object = None
    if isinstance(err, str):
        reason = err
    elif isinstance(err, dict) and len(err) == 1:
        reason, details = next(iter(err.items()))
    else:
        return "Unknown", f"invalid transaction ({_compact(err)})"
    d = details if isinstance(details, dict) else {}
    match reason:
        case "InvalidNonce":
            text = f"nonce {d.get('tx_nonce')} is not greater than the access key's nonce {d.get('ak_nonce')}"
        case "NonceTooLarge":
            text = f"nonce {d.get('tx_nonce')} is too large (upper bound {d.get('upper_bound')})"
        case "InvalidSignature":
            text = "the signature does not match the transaction and its public key"
        case "NotEnoughBalance":
            text = (
                f"{d.get('signer_id')} has {_near(d.get('balance'))} available but the transaction "
                f"costs {_near(d.get('cost'))}"
            )
        case "LackBalanceForState":
            needed = _near(d.get("amount"))
            text = f"{d.get('signer_id')} would not keep enough balance for storage ({needed})"
        case "Expired":
            text = "its block hash is too old or unknown; fetch a fresh block hash and sign again"
        case "SignerDoesNotExist":
            text = f"signer account {d.get('signer_id')} does not exist"
        case "InvalidSignerId":
            text = f"signer id {d.get('signer_id')!r} is not a valid account id"
        case "InvalidReceiverId":
            text = f"receiver id {d.get('receiver_id')!r} is not a valid account id"
        case "InvalidChain":
            text = "it was signed for a different chain (block hash from another network)"
        case "CostOverflow":
            text = "its cost overflows"
        case "InvalidAccessKeyError":
            text = _describe_access_key_error(details)
        case _:
            text = f"{reason}" + (f" ({_compact(details)})" if details is not None else "")
    return reason, text


def _describe_access_key_error(err: object) -> str:
    if isinstance(err, str):
        kind, d = err, {}
    elif isinstance(err, dict) and len(err) == 1:
        kind, raw = next(iter(err.items()))
        d = raw if isinstance(raw, dict) else {}
    else:
        return f"access key error ({_compact(err)})"
    match kind:
        case "AccessKeyNotFound":
            return f"access key {d.get('public_key')} does not exist on account {d.get('account_id')}"
        case "ReceiverMismatch":
            return (
                f"the function-call access key only allows receiver {d.get('ak_receiver')}, "
                f"not {d.get('tx_receiver')}"
            )
        case "MethodNameMismatch":
            return f"the function-call access key does not allow method {d.get('method_name')!r}"
        case "RequiresFullAccess":
            return "the actions require a full-access key"
        case "NotEnoughAllowance":
            return (
                f"the access key's allowance {_near(d.get('allowance'))} is less than the cost "
                f"{_near(d.get('cost'))}"
            )
        case "DepositWithFunctionCall":
            return "a function-call access key cannot attach a deposit"
        case _:
            return f"access key error {kind}" + (f" ({_compact(d)})" if d else "")


def _classify(method: str, err: object) -> RpcError:
    """Turn a JSON-RPC ``error`` object into the matching exception."""
    if not isinstance(err, dict):
        return RpcError(f"NEAR RPC {method} failed: {_snip(str(err))}", data=err)
    name = err.get("name") if isinstance(err.get("name"), str) else None
    cause_obj = err.get("cause")
    cause = cause_obj.get("name") if isinstance(cause_obj, dict) else None
    info = cause_obj.get("info") if isinstance(cause_obj, dict) else None
    data = err.get("data")
    kw: dict[str, Any] = {"name": name, "cause": cause, "data": data, "info": info}

    invalid = _find(info, "InvalidTxError")
    if invalid is None:
        invalid = _find(data, "InvalidTxError")
    if cause == "INVALID_TRANSACTION" or invalid is not None:
        reason, text = describe_invalid_tx(invalid) if invalid is not None else ("Unknown", "invalid")
        return InvalidTransaction(f"transaction rejected: {text}", reason=reason, details=invalid, **kw)

    i = info if isinstance(info, dict) else {}
    if cause == "UNKNOWN_ACCOUNT":
        return UnknownAccount(f"account {i.get('requested_account_id', '?')} does not exist", **kw)
    if cause == "UNKNOWN_ACCESS_KEY":
        return UnknownAccount(f"access key {i.get('public_key', '?')} does not exist", **kw)
    if cause == "TIMEOUT_ERROR":
        return TransientRpcError(f"NEAR RPC {method}: the node timed out waiting for the result", **kw)
    if isinstance(data, str) and "does not exist while viewing" in data:  # pre-structured-errors nodes
        return UnknownAccount(_snip(data), **kw)

    detail = ""
    if isinstance(info, dict) and info:
        if isinstance(info.get("vm_error"), str):
            detail = info["vm_error"]
        elif isinstance(info.get("error_message"), str):
            detail = info["error_message"]
        else:
            detail = _compact(info)
    elif isinstance(data, str):
        detail = data
    elif data is not None:
        detail = _compact(data)
    elif isinstance(err.get("message"), str):
        detail = err["message"]
    label = cause or name or "error"
    if cause == "UNKNOWN_TRANSACTION":
        return RpcError(f"NEAR RPC {method}: transaction not known to the node ({_snip(detail)})", **kw)
    return RpcError(f"NEAR RPC {method} failed: {label}" + (f": {_snip(detail)}" if detail else ""), **kw)


def describe_failure(failure: object) -> str:
    """Readable text for a ``Failure`` execution status (``ActionError`` or ``InvalidTxError``)."""
    if isinstance(failure, dict):
        if "ActionError" in failure and isinstance(failure["ActionError"], dict):
            ae = failure["ActionError"]
            kind = ae.get("kind")
            where = f"action {ae['index']}" if ae.get("index") is not None else "an action"
            if isinstance(kind, dict) and len(kind) == 1:
                k, v = next(iter(kind.items()))
                if k == "FunctionCallError" and isinstance(v, dict) and len(v) == 1:
                    fk, fv = next(iter(v.items()))
                    why = _snip(fv) if isinstance(fv, str) else _compact(fv)
                    return f"{where} failed: FunctionCallError: {fk}: {why}"
                return f"{where} failed: {k}" + (f" ({_compact(v)})" if v else "")
            return f"{where} failed: {_compact(kind)}"
        if "InvalidTxError" in failure:
            return "transaction invalid: " + describe_invalid_tx(failure["InvalidTxError"])[1]
    return f"transaction failed: {_compact(failure)}"


def _outcome(result: dict[str, Any], tx_hash: str) -> TxOutcome:
    fes = result.get("final_execution_status")
    status_obj = result.get("status")
    error = None
    if isinstance(status_obj, dict) and "SuccessValue" in status_obj:
        status = "success"
    elif isinstance(status_obj, dict) and "Failure" in status_obj:
        status = "failure"
        error = describe_failure(status_obj["Failure"])
    else:  # NotStarted / Started / absent (wait_until NONE or INCLUDED)
        status = "pending"
    tx = result.get("transaction")
    seen = tx.get("hash") if isinstance(tx, dict) else None
    h = seen if isinstance(seen, str) else tx_hash
    return TxOutcome(h, status, fes if isinstance(fes, str) else None, result, error)
