"""The `[wallet]` config section: RPC endpoint, approval expiry, and the owner's signing policy.

Amounts are written in NEAR as strings (`"1.5"`, `"0.000000000000000000000001"`) or whole
integers and held as exact yoctoNEAR ints; a float (`1.5` without quotes) is refused,
because TOML floats cannot represent every yoctoNEAR amount. Token limits are written in the
token's own base units (`"100000000"` is 100 USDC at 6 decimals), as whole numbers: the wallet
never guesses a token's decimals. Every section forbids unknown keys, so a misspelled limit is
a startup error instead of a silently missing limit.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator

from core.config_base import Section
from core.wallet.accounts import validate_account_id
from core.wallet.amounts import U128_MAX, format_near, parse_near

Network = Literal["mainnet", "testnet"]

DEFAULT_RPC_URLS: dict[str, str] = {
    "mainnet": "https://rpc.mainnet.near.org",
    "testnet": "https://rpc.testnet.near.org",
}


def _near(value: object) -> int:
    if isinstance(value, float):
        raise ValueError('write NEAR amounts as strings, e.g. "1.5" (floats lose yoctoNEAR digits)')
    if not isinstance(value, str | int):
        raise ValueError('expected a NEAR amount such as "1.5"')
    try:
        return parse_near(value)
    except ValueError as exc:
        raise ValueError(str(exc)) from None


NearAmount = Annotated[int, BeforeValidator(_near), PlainSerializer(format_near, return_type=str)]
"""yoctoNEAR internally; NEAR (exact decimal string) in config files and on screen."""


def _base_units(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError('write token amounts as whole base units in a string, e.g. "100000000"')
    text = value.strip().replace("_", "") if isinstance(value, str) else str(value)
    if not text.isascii() or not text.isdigit():
        raise ValueError(
            f"invalid token amount {value!r}: a whole number of the token's base units "
            '(no decimal point; 100 USDC at 6 decimals is "100000000")'
        )
    amount = int(text)
    if amount > U128_MAX:
        raise ValueError(f"token amount {value!r} exceeds u128")
    return amount


TokenAmount = Annotated[int, BeforeValidator(_base_units), PlainSerializer(str, return_type=str)]
"""A token's base units (NEP-141 `amount`, NEP-245 `amount`, or a count of NFTs) as an exact int."""

STAKING_METHODS = frozenset({"deposit_and_stake", "stake", "stake_all"})


class FunctionCallRule(Section):
    """Calls to `receiver` with one of `methods` ("*" = any) and a deposit up to `max_deposit`."""

    receiver: str
    methods: list[str] = Field(default_factory=lambda: ["*"])
    max_deposit: NearAmount = 0
    auto_approve: bool = False

    @field_validator("receiver")
    @classmethod
    def _account(cls, value: str) -> str:
        return validate_account_id(value)

    @field_validator("methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        if not values:
            raise ValueError('list at least one method (or "*")')
        for method in values:
            if method != "*" and not (0 < len(method) <= 256 and method.isprintable() and " " not in method):
                raise ValueError(f"invalid method name {method!r}")
        return values

    def matches(self, receiver: str, method: str) -> bool:
        return receiver == self.receiver and ("*" in self.methods or method in self.methods)


class TokenLimit(Section):
    """Limits for one token contract, in its base units (an NFT contract: a number of NFTs).

    Without an entry for a contract, no transfer of its tokens is ever signed automatically.
    """

    daily_limit: TokenAmount = Field(
        description="hard cap on this token moved per UTC day (auto + owner-approved)"
    )
    auto_approve_max: TokenAmount | None = Field(
        None, description="one transfer up to this signs without asking (default: daily_limit)"
    )

    @property
    def auto_max(self) -> int:
        return self.daily_limit if self.auto_approve_max is None else self.auto_approve_max


class WalletPolicy(Section):
    """What an agent may sign without asking, what needs the owner's button, and what never happens."""

    auto_approve_max: NearAmount = Field(
        parse_near("0.1"), description="largest total value of one transaction signed without asking"
    )
    daily_limit: NearAmount = Field(
        parse_near("10"), description="hard cap on value signed per UTC day (auto + owner-approved)"
    )
    transfer_whitelist: list[str] = Field(default_factory=list)
    whitelist_max: NearAmount = Field(
        parse_near("1"), description="transfers to whitelisted receivers auto-approve up to this"
    )
    function_calls: list[FunctionCallRule] = Field(default_factory=list)
    stake_validators: list[str] = Field(
        default_factory=list, description="staking pools (account ids) or validator keys (ed25519:…)"
    )
    deny_full_access_operations: bool = True
    deny_delete_account: bool = True
    sign_messages: Literal["auto", "approval", "deny"] = "approval"
    key_groups: dict[str, list[str]] = Field(
        default_factory=dict, description='key name -> groups that may use it ("*" = all); default main'
    )
    token_limits: dict[str, TokenLimit] = Field(
        default_factory=dict, description="token contract -> daily and auto-approve limits in base units"
    )

    @field_validator("transfer_whitelist")
    @classmethod
    def _accounts(cls, values: list[str]) -> list[str]:
        return [validate_account_id(v) for v in values]

    @field_validator("stake_validators")
    @classmethod
    def _validators(cls, values: list[str]) -> list[str]:
        return [v if v.startswith("ed25519:") else validate_account_id(v) for v in values]

    @field_validator("token_limits")
    @classmethod
    def _token_contracts(cls, values: dict[str, TokenLimit]) -> dict[str, TokenLimit]:
        for contract in values:
            validate_account_id(contract)
        return values

    def groups_for_key(self, key_name: str) -> list[str]:
        return self.key_groups.get(key_name, ["main"])


class WalletConfig(Section):
    network: Network = "testnet"
    rpc_url: str | None = Field(None, description="NEAR JSON-RPC endpoint; default: the network's public RPC")
    rpc_timeout_s: float = Field(10.0, gt=0, le=300)
    rpc_retries: int = Field(3, ge=0, le=10)
    approval_timeout_s: float = Field(600.0, gt=0, le=86_400)
    default_key: str | None = Field(None, description="key used when an agent does not name one")
    policy: WalletPolicy = WalletPolicy()

    @field_validator("rpc_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL, e.g. https://rpc.testnet.near.org")
        return None if value is None else value.rstrip("/")

    @property
    def effective_rpc_url(self) -> str:
        return self.rpc_url or DEFAULT_RPC_URLS[self.network]
