"""The NEAR RPC error taxonomy, and the readable text for what a hostile or confused node answers.

:class:`~gateway.wallet.rpc.NearRpc` decides per failure whether trying again is safe; the answer
is the exception type (see :mod:`gateway.wallet.rpc`).  This module turns a JSON-RPC ``error``
object into that type (:func:`classify`), and a NEAR ``InvalidTxError`` or execution ``Failure``
into one line an owner can read in chat.  Everything here treats the node's JSON as untrusted:
any shape is accepted, nothing raises while describing it, and every piece of node-supplied text
is collapsed to one line and cut to :data:`SNIPPET` characters so an answer cannot flood a chat.
Errors never embed request bodies.
"""

from __future__ import annotations

import json
from typing import Any

from core.wallet.amounts import format_near

SNIPPET = 160


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


def snip(text: str) -> str:
    """One line of at most :data:`SNIPPET` characters: node text ends up in owner-facing chat."""
    text = " ".join(str(text).split())
    return text if len(text) <= SNIPPET else text[: SNIPPET - 1] + "…"


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
    return snip(json.dumps(obj, separators=(",", ":"), sort_keys=True, default=str))


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


def classify(method: str, err: object) -> RpcError:
    """Turn a JSON-RPC ``error`` object into the matching exception."""
    if not isinstance(err, dict):
        return RpcError(f"NEAR RPC {method} failed: {snip(str(err))}", data=err)
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
        return UnknownAccount(snip(data), **kw)

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
        return RpcError(f"NEAR RPC {method}: transaction not known to the node ({snip(detail)})", **kw)
    return RpcError(f"NEAR RPC {method} failed: {label}" + (f": {snip(detail)}" if detail else ""), **kw)


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
                    why = snip(fv) if isinstance(fv, str) else _compact(fv)
                    return f"{where} failed: FunctionCallError: {fk}: {why}"
                return f"{where} failed: {k}" + (f" ({_compact(v)})" if v else "")
            return f"{where} failed: {_compact(kind)}"
        if "InvalidTxError" in failure:
            return "transaction invalid: " + describe_invalid_tx(failure["InvalidTxError"])[1]
    return f"transaction failed: {_compact(failure)}"
