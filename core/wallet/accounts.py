"""NEAR account id validation, as nearcore's ``near-account-id`` crate specifies it.

* length 2..=64;
* ``^(([a-z\\d]+[-_])*[a-z\\d]+\\.)*([a-z\\d]+[-_])*[a-z\\d]+$`` — lowercase letters and digits,
  separated by single ``-``/``_`` within a part and by single ``.`` between parts;
* implicit accounts: 64 lowercase hex characters (NEAR-implicit, an ed25519 public key) or
  ``0x`` + 40 lowercase hex characters (ETH-implicit).  Both also match the pattern above;
  :func:`account_kind` tells them apart.
"""

from __future__ import annotations

import re

MIN_LEN = 2
MAX_LEN = 64
_PATTERN = re.compile(r"(([a-z\d]+[-_])*[a-z\d]+\.)*([a-z\d]+[-_])*[a-z\d]+")
_NEAR_IMPLICIT = re.compile(r"[0-9a-f]{64}")
_ETH_IMPLICIT = re.compile(r"0x[0-9a-f]{40}")


class InvalidAccountId(ValueError):
    pass


def is_valid_account_id(account_id: object) -> bool:
    return (
        isinstance(account_id, str)
        and MIN_LEN <= len(account_id) <= MAX_LEN
        and _PATTERN.fullmatch(account_id) is not None
    )


def validate_account_id(account_id: object) -> str:
    """Return ``account_id`` if valid, else raise :class:`InvalidAccountId`."""
    if not isinstance(account_id, str):
        raise InvalidAccountId("account id must be a string")
    if not MIN_LEN <= len(account_id) <= MAX_LEN:
        raise InvalidAccountId(f"account id must be {MIN_LEN}-{MAX_LEN} characters, got {len(account_id)}")
    if _PATTERN.fullmatch(account_id) is None:
        raise InvalidAccountId(f"invalid NEAR account id: {account_id!r}")
    return account_id


def is_near_implicit(account_id: str) -> bool:
    return _NEAR_IMPLICIT.fullmatch(account_id) is not None


def is_eth_implicit(account_id: str) -> bool:
    return _ETH_IMPLICIT.fullmatch(account_id) is not None


def account_kind(account_id: str) -> str:
    """``"near-implicit"``, ``"eth-implicit"``, ``"top-level"`` or ``"sub-account"``."""
    validate_account_id(account_id)
    if is_near_implicit(account_id):
        return "near-implicit"
    if is_eth_implicit(account_id):
        return "eth-implicit"
    return "sub-account" if "." in account_id else "top-level"


def implicit_account_id(public_key_bytes: bytes) -> str:
    """The NEAR-implicit account id of an ed25519 public key (its 32 bytes in lowercase hex)."""
    if len(public_key_bytes) != 32:
        raise ValueError("ed25519 public key must be 32 bytes")
    return public_key_bytes.hex()
