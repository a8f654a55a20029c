"""What the wallet knows about a stored key apart from its secret, and the rules every field obeys.

:class:`KeyInfo` (name, label, account, network, public key, permission) is safe to print, log
and pass around; :class:`KeyPermission` is NEAR's access-key permission, validated on
construction so an impossible one cannot exist anywhere in the program.  The same validators
check a key being created, a record read back from ``wallet-keys.json`` and a record restored
from a backup, so all three refuse the same things with the same words.  :class:`WalletError` is
the wallet's user-facing error; its message never contains key material (invariant 5,
docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, get_args

from core.wallet.accounts import InvalidAccountId, implicit_account_id, validate_account_id
from core.wallet.amounts import U128_MAX, format_near
from gateway.wallet.keys import PublicKey

MAX_LABEL_LEN = 200
MAX_METHOD_NAME_LEN = 256  # nearcore's max_length_method_name
NETWORKS: tuple[str, ...] = ("mainnet", "testnet")

KeyKind = Literal["full_access", "function_call"]
KEY_KINDS: tuple[str, ...] = get_args(KeyKind)

_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


class WalletError(Exception):
    """A user-facing wallet problem. The message never contains key material."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- value types ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyPermission:
    """What the key may do on chain, as NEAR's AddKey access key permission describes it.

    Validated on construction so that an impossible permission (a function-call key without a
    receiver, a full-access key with an allowance) cannot exist anywhere in the program.
    """

    kind: KeyKind = "full_access"
    receiver_id: str | None = None
    method_names: tuple[str, ...] = ()
    allowance: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KEY_KINDS:
            raise WalletError(f"invalid key permission {self.kind!r}: use full_access or function_call")
        if not isinstance(self.method_names, tuple):
            raise WalletError("method names must be a tuple of strings")
        if self.kind == "full_access":
            if self.receiver_id is not None or self.method_names or self.allowance is not None:
                raise WalletError("a full-access key has no receiver, methods or allowance")
            return
        if self.receiver_id is None:
            raise WalletError("a function-call key needs a receiver account id")
        try:
            validate_account_id(self.receiver_id)
        except InvalidAccountId as e:
            raise WalletError(f"invalid receiver: {e}") from None
        for method in self.method_names:
            if (
                not isinstance(method, str)
                or not 0 < len(method) <= MAX_METHOD_NAME_LEN
                or not method.isprintable()
                or any(c.isspace() or c == "," for c in method)
            ):
                raise WalletError(f"invalid method name {method!r}")
        if len(set(self.method_names)) != len(self.method_names):
            raise WalletError("method names must not repeat")
        if self.allowance is not None and (
            isinstance(self.allowance, bool)
            or not isinstance(self.allowance, int)
            or not 0 < self.allowance <= U128_MAX
        ):
            raise WalletError("the allowance must be a positive yoctoNEAR amount (omit it for unlimited)")

    def describe(self) -> str:
        """One line for humans: ``full access`` or ``function call to x.near (a, b), allowance 1 NEAR``."""
        if self.kind == "full_access":
            return "full access"
        methods = ", ".join(self.method_names) if self.method_names else "any method"
        allowance = (
            "unlimited allowance"
            if self.allowance is None
            else f"allowance {format_near(self.allowance)} NEAR"
        )
        return f"function call to {self.receiver_id} ({methods}), {allowance}"

    def to_dict(self) -> dict[str, Any]:
        """JSON form; the allowance is a decimal string because u128 overflows JSON numbers elsewhere."""
        return {
            "kind": self.kind,
            "receiver_id": self.receiver_id,
            "method_names": list(self.method_names),
            "allowance": None if self.allowance is None else str(self.allowance),
        }

    @classmethod
    def from_dict(cls, data: object) -> KeyPermission:
        if not isinstance(data, dict):
            raise WalletError("permission must be an object")
        allowance = data.get("allowance")
        if allowance is not None:
            if not isinstance(allowance, str) or not allowance.isdigit():
                raise WalletError("permission allowance must be a decimal yoctoNEAR string")
            allowance = int(allowance)
        methods = data.get("method_names", [])
        if not isinstance(methods, list):
            raise WalletError("permission method_names must be a list")
        return cls(
            kind=data.get("kind", "full_access"),
            receiver_id=data.get("receiver_id"),
            method_names=tuple(methods),
            allowance=allowance,
        )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """Everything about a stored key except its secret (safe to print, log and pass around)."""

    name: str
    label: str
    account_id: str
    network: str
    public_key: PublicKey
    permission: KeyPermission
    created_at: str  # ISO-8601 UTC

    @property
    def implicit_account_id(self) -> str:
        """The NEAR-implicit account this public key controls (64 hex), whatever ``account_id`` is."""
        return implicit_account_id(self.public_key.data)


# --- validation -------------------------------------------------------------------------------


def validate_key_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise WalletError(f"invalid key name {name!r}: use 1-64 characters from A-Z a-z 0-9 _ . -")
    return name


def validate_label(label: object) -> str:
    if not isinstance(label, str) or len(label) > MAX_LABEL_LEN or not label.isprintable():
        raise WalletError(f"invalid label: at most {MAX_LABEL_LEN} printable characters")
    return label


def validate_network(network: object) -> str:
    if network not in NETWORKS:
        raise WalletError(f"invalid network {network!r}: use mainnet or testnet")
    return str(network)


def validate_account(account_id: object) -> str:
    """:func:`core.wallet.accounts.validate_account_id`, failing as a :class:`WalletError` like the rest."""
    try:
        return validate_account_id(account_id)
    except InvalidAccountId as e:
        raise WalletError(str(e)) from None
