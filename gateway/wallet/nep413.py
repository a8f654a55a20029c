"""NEP-413 off-chain message signing (https://github.com/near/NEPs/blob/master/neps/nep-0413.md).

The signed bytes are sha256(borsh(u32 tag = 2^31 + 413) || borsh(Payload)) with
``Payload { message: String, nonce: [u8; 32], recipient: String, callback_url: Option<String> }``.
The output is ``{accountId, publicKey, signature}`` with the signature in base64.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from core.wallet.accounts import validate_account_id
from gateway.wallet.borsh import Writer
from gateway.wallet.keys import KeyPair, PublicKey, verify

TAG = 2**31 + 413
NONCE_LEN = 32


def payload_bytes(message: str, nonce: bytes, recipient: str, callback_url: str | None = None) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise ValueError("NEP-413 nonce must be exactly 32 bytes")
    w = Writer().u32(TAG).string(message).fixed(bytes(nonce), NONCE_LEN).string(recipient)
    if callback_url is None:
        w.u8(0)
    else:
        w.u8(1).string(callback_url)
    return w.getvalue()


def payload_hash(message: str, nonce: bytes, recipient: str, callback_url: str | None = None) -> bytes:
    return hashlib.sha256(payload_bytes(message, nonce, recipient, callback_url)).digest()


def sign_message(
    key: KeyPair,
    account_id: str,
    message: str,
    nonce: bytes,
    recipient: str,
    callback_url: str | None = None,
) -> dict[str, str]:
    validate_account_id(account_id)
    sig = key.sign(payload_hash(message, nonce, recipient, callback_url))
    return {
        "accountId": account_id,
        "publicKey": str(key.public_key),
        "signature": base64.b64encode(sig).decode("ascii"),
    }


def verify_message(
    signed: dict[str, str],
    message: str,
    nonce: bytes,
    recipient: str,
    callback_url: str | None = None,
) -> bool:
    """Check the signature in ``signed`` (does not check that the key belongs to the account)."""
    try:
        pk = PublicKey.from_string(signed["publicKey"])
        sig = base64.b64decode(signed["signature"], validate=True)
    except (KeyError, TypeError, ValueError, binascii.Error):
        return False
    return verify(pk, payload_hash(message, nonce, recipient, callback_url), sig)
