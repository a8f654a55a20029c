"""The parameters of an agent's `near_*` request, parsed: agent input is hostile.

Every field an agent sends is checked here before anything is built, analysed or recorded, so
a bad request fails with one clear ``bad_params``/``too_large`` error and nothing half-done.
The IPC layer (`gateway.ipc_protocol`) has already checked which fields are present and their
JSON types; these checks are what NEAR itself would refuse (account ids, amounts, method names,
gas) plus our own size limits, each naming the field an agent got wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets

from core.wallet.accounts import InvalidAccountId, validate_account_id
from core.wallet.amounts import parse_near
from gateway.ipc_protocol import IpcError
from gateway.wallet import nep413

DEFAULT_GAS = 30 * 10**12  # 30 Tgas: enough for ordinary calls; agents may ask for up to 300
MAX_GAS = 300 * 10**12
MAX_ARGS_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 16 * 1024


def parse_account(value: object, field: str) -> str:
    try:
        return validate_account_id(value)
    except InvalidAccountId as exc:
        raise IpcError("bad_params", f"{field}: {exc}") from None


def parse_amount(value: object, field: str) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise IpcError("bad_params", f'{field} must be a NEAR amount as a string, e.g. "1.5"')
    try:
        return parse_near(value)
    except ValueError as exc:
        raise IpcError("bad_params", f"{field}: {exc}") from None


def parse_method(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable() or " " in value:
        raise IpcError("bad_params", "method must be a contract method name")
    return value


def parse_args(value: object) -> bytes:
    if value is None:
        return b"{}"
    if isinstance(value, dict):
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    elif isinstance(value, str):
        try:
            data = value.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\udcff" in the IPC JSON) is no UTF-8
            raise IpcError("bad_params", "args must be valid Unicode text") from None
    else:
        raise IpcError("bad_params", "args must be a JSON object (or a JSON string)")
    if len(data) > MAX_ARGS_BYTES:
        raise IpcError("too_large", f"args exceed {MAX_ARGS_BYTES} bytes")
    return data


def parse_gas(value: object) -> int:
    if value is None:
        return DEFAULT_GAS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_GAS:
        raise IpcError("bad_params", f"gas must be an integer between 1 and {MAX_GAS} (300 Tgas)")
    return value


def parse_nonce(value: object) -> bytes:
    if value is None:
        return secrets.token_bytes(nep413.NONCE_LEN)
    try:
        nonce = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise IpcError("bad_params", "nonce must be base64 of 32 bytes") from None
    if len(nonce) != nep413.NONCE_LEN:
        raise IpcError("bad_params", "nonce must be base64 of 32 bytes")
    return nonce


def excerpt(text: str, limit: int = 200) -> str:
    """``text`` on one printable line of at most ``limit`` characters, for a summary or a prompt."""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
