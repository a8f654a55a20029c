"""Typed views of NEAR RPC results, parsed defensively.

A node's ``result`` is untrusted JSON: these helpers check its shape before anything is read from
it, and raise :class:`~gateway.wallet.rpc_errors.RpcError` (never ``KeyError``/``TypeError``) for
an answer that does not look like NEAR's.  :func:`tx_outcome` reduces a ``send_tx``/``tx`` result
to the three states the wallet acts on: success, failure (with a readable reason) or pending.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from core.wallet.amounts import U128_MAX
from gateway.wallet.base58 import b58decode
from gateway.wallet.rpc_errors import RpcError, describe_failure


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


def expect_dict(result: object, what: str) -> dict[str, Any]:
    """``result`` as an object, or an :class:`RpcError` naming the call: every view reads keys."""
    if not isinstance(result, dict):
        raise RpcError(f"NEAR RPC {what} returned an unexpected result (not an object)")
    return result


_DECIMAL = re.compile(r"[0-9]{1,39}")  # u128's maximum has 39 digits


def u128_amount(value: object) -> int:
    """A yoctoNEAR amount as NEAR sends it (a decimal string; a JSON integer is accepted too).

    ``ValueError`` for anything else: a float (``1e400`` parses to infinity), a negative number,
    more than u128 holds — a hostile node's balance must not reach ``format_near`` or a page.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("amount is not a decimal string")
    text = str(value)
    if not _DECIMAL.fullmatch(text) or int(text) > U128_MAX:
        raise ValueError("amount is not a u128 decimal")
    return int(text)


def decode_block_hash(text: object) -> bytes:
    """A base58 block hash as its 32 bytes; ``ValueError`` otherwise (callers wrap it per call)."""
    if not isinstance(text, str):
        raise ValueError("block hash is not a string")
    raw = b58decode(text)
    if len(raw) != 32:
        raise ValueError("block hash is not 32 bytes")
    return raw


def tx_outcome(result: dict[str, Any], tx_hash: str) -> TxOutcome:
    """The :class:`TxOutcome` of a ``send_tx``/``tx`` result; the node's hash wins over ours."""
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
