"""The Wallet page's view records and query: public key data, balances, limits, requests.

Kept apart from dashboard/backend.py so the Protocol's module stays small; `Backend.wallet`
returns a `WalletView`. Like every record the dashboard is given, none has a field for key
material: a key is its name, account, network, public key and permission — what
`gateway.wallet.keyinfo.KeyInfo` calls safe to print. Every text that came from a sandbox or a
NEAR node (summaries, receivers, reasons, errors, a node's error text) is clipped by the gateway
before it is put here, and escaped by the template like everything else.
"""

from __future__ import annotations

from dataclasses import dataclass

STATES = ("pending", "signing", "submitted", "failed", "denied", "rejected")


@dataclass(frozen=True)
class WalletQuery:
    """The requests table's filters and page, as given in the URL (checked by the gateway)."""

    group: str = ""
    state: str = ""  # one of STATES, or "" for all
    offset: int = 0


@dataclass(frozen=True)
class WalletKeyRow:
    name: str
    label: str
    account_id: str
    network: str
    public_key: str  # "ed25519:<base58>": the public half only
    permission: str  # "full access", or "function call to x.near (a, b), allowance 1 NEAR"
    groups: list[str]  # the groups [wallet.policy] key_groups lets use it
    balance: str  # "975 NEAR", or "balance unavailable (why)"
    balance_ok: bool


@dataclass(frozen=True)
class WalletLimitRow:
    """Today's spend against one daily limit; `line` is `/wallet`'s own sentence for it."""

    unit: str  # "NEAR" or a token contract
    line: str
    share: float | None  # spent / limit, None when there is no limit


@dataclass(frozen=True)
class WalletRequestRow:
    id: int
    created_at: float
    group: str
    receiver: str
    kind: str  # transaction | message
    summary: str
    value: str  # NEAR attached (and tokens moved), formatted
    outcome: str  # the policy's verdict: auto_approve | needs_approval | deny
    state: str
    reasons: str
    approval_id: str
    tx_hash: str
    error: str


@dataclass(frozen=True)
class WalletView:
    configured: bool  # at least one key is stored
    keys_error: str | None  # the key file could not be read (its reason; never key material)
    network: str
    rpc_host: str  # the node's host name only: a URL may carry a provider's API key
    keys: list[WalletKeyRow]
    day: str
    limits: list[WalletLimitRow]
    pending: list[int]
    policy: list[str]  # `/policy`'s lines
    requests: list[WalletRequestRow]
    query: WalletQuery  # as applied (a refused filter is dropped)
    offset: int
    limit: int
    has_more: bool
    note: str | None  # a refused filter
