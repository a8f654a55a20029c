"""What the owner reads and changes about the wallet from the main chat: the approval prompts,
`/wallet`, `/policy` and `/policy set`. The dashboard's Wallet page reads the same `wallet_status`
and `policy_text` (gateway/dashboard_wallet.py), so both show one computation of the limits.

These are views, not decisions: the verdicts are :class:`~gateway.wallet.policy.PolicyEngine`'s
and the spend is the store's.  A `/policy set` override is validated exactly like the config file
(the whole policy is rebuilt through pydantic), so a chat command cannot create a policy the
config loader would refuse; only :data:`SETTABLE` keys can be changed from chat, the rest
(`key_groups` above all) only in the config file.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass

import httpx
from pydantic import ValidationError

from core.wallet.amounts import format_near
from core.wallet.settings import WalletPolicy
from gateway.store import Store
from gateway.wallet.analysis import TxAnalysis
from gateway.wallet.decision import DaySpend
from gateway.wallet.keyinfo import KeyInfo
from gateway.wallet.keystore import KeyStore
from gateway.wallet.params import excerpt
from gateway.wallet.policy import utc_day
from gateway.wallet.rpc import NearRpc
from gateway.wallet.rpc_errors import RpcError
from gateway.wallet.tokens import UNBOUNDED_CHARGE

# `/policy set` may change these; lists take comma-separated values.
SETTABLE = (
    "auto_approve_max",
    "daily_limit",
    "whitelist_max",
    "transfer_whitelist",
    "stake_validators",
    "sign_messages",
    "deny_full_access_operations",
    "deny_delete_account",
)
_LISTS = ("transfer_whitelist", "stake_validators")
_BOOLS = ("deny_full_access_operations", "deny_delete_account")


@dataclass(frozen=True)
class KeyStatus:
    """A key's public data with its live balance (or why there is none) and the groups that may use it."""

    key: KeyInfo
    balance: str  # "12.5 NEAR" or "balance unavailable (why)"
    available: bool
    groups: tuple[str, ...]


@dataclass(frozen=True)
class DayLimit:
    """One daily limit and today's spend against it: the line `/wallet` prints, and its numbers."""

    unit: str  # "NEAR", or a token contract
    spent: int  # yoctoNEAR, or the token's base units
    limit: int | None  # None: that token has no limit (its transfers always ask)
    line: str


@dataclass(frozen=True)
class WalletStatus:
    """What `/wallet` shows, as data: the chat prints it (`status_text`), the dashboard lays it out."""

    keys: list[KeyStatus]
    day: str  # the UTC day the limits count
    limits: list[DayLimit]
    pending: list[int]  # request ids waiting for the owner


async def balance_of(rpc: NearRpc, account_id: str, timeout_s: float | None = None) -> tuple[str, bool]:
    """(text, available): the account's balance, or why it is unavailable — never an exception.

    `timeout_s` bounds the whole lookup, retries included (the dashboard must not hang on a node
    that accepts and never answers); the node's answer is checked by `NearRpc.account`.
    """
    try:
        view = await asyncio.wait_for(rpc.account(account_id), timeout_s)
    except RpcError as exc:
        return f"balance unavailable ({exc})", False
    except TimeoutError:
        return f"balance unavailable (no answer within {timeout_s:g}s)", False
    except httpx.HTTPError as exc:  # what the client's transport wraps no further (a bad encoding …)
        return f"balance unavailable ({type(exc).__name__})", False
    return f"{format_near(view.amount)} NEAR", True


def day_limits(spent: DaySpend, policy: WalletPolicy, day: str) -> list[DayLimit]:
    """Today's NEAR spend (value and fees) and each token's, against the policy's daily limits."""
    limit = format_near(policy.daily_limit)
    near = DayLimit(
        "NEAR",
        spent.near,
        policy.daily_limit,
        f"Today's spend ({day} UTC): {format_near(spent.near)} of {limit} NEAR (value and fees)",
    )
    tokens = [
        DayLimit(
            contract,
            spent.tokens.get(contract, 0),
            None if (cap := policy.token_limits.get(contract)) is None else cap.daily_limit,
            token_line(contract, spent, policy),
        )
        for contract in sorted(set(spent.tokens) | set(policy.token_limits))
    ]
    return [near, *tokens]


async def wallet_status(
    policy: WalletPolicy,
    keys: KeyStore,
    rpc: NearRpc,
    store: Store,
    now: float,
    balance_timeout_s: float | None = None,
) -> WalletStatus:
    """Each key with its live balance (looked up concurrently) and groups, today's spend, requests waiting."""
    listed = keys.list()
    balances = await asyncio.gather(*(balance_of(rpc, k.account_id, balance_timeout_s) for k in listed))
    statuses = [
        KeyStatus(key, text, available, tuple(policy.groups_for_key(key.name)))
        for key, (text, available) in zip(listed, balances, strict=True)
    ]
    today = utc_day(now)
    limits = day_limits(await store.wallet_day(today), policy, today)
    pending = await store.wallet_requests(state="pending", limit=1000)
    return WalletStatus(statuses, today, limits, [r.id for r in pending])


async def status_text(policy: WalletPolicy, keys: KeyStore, rpc: NearRpc, store: Store, now: float) -> str:
    """`/wallet`: each key with its live balance and groups, today's spend, requests waiting."""
    status = await wallet_status(policy, keys, rpc, store, now)
    lines = ["Wallet keys:" if status.keys else "Wallet keys: none (add one with `clawgate wallet generate`)"]
    for s in status.keys:
        key = s.key
        lines.append(
            f"• {key.name}: {key.account_id} ({key.network}, {key.permission.describe()}) — {s.balance};"
            f" groups: {', '.join(s.groups)}"
        )
    lines.extend(limit.line for limit in status.limits)
    if status.pending:
        lines.append(f"Waiting for approval: {', '.join(f'#{i}' for i in status.pending)}")
    return "\n".join(lines)


def policy_text(policy: WalletPolicy) -> str:
    """`/policy`: every setting in the units the config file uses."""
    dumped = policy.model_dump(mode="json")
    lines = ["Wallet policy (amounts in NEAR):"]
    for name, value in dumped.items():
        if name == "token_limits":
            value = (
                "; ".join(
                    f"{contract} daily {limit['daily_limit']}, auto up to "
                    f"{limit['auto_approve_max'] or limit['daily_limit']}"
                    for contract, limit in value.items()
                )
                or "none (token transfers always need approval)"
            )
        elif name == "function_calls":
            rules = [
                f"{r['receiver']} {','.join(r['methods'])} max deposit {r['max_deposit']}"
                f"{' auto' if r['auto_approve'] else ''}"
                for r in value
            ]
            value = "; ".join(rules) or "none"
        elif isinstance(value, list):
            value = ", ".join(value) or "none"
        elif isinstance(value, dict):
            value = "; ".join(f"{k}: {', '.join(v)}" for k, v in value.items()) or "main only"
        lines.append(f"• {name}: {value}")
    return "\n".join(lines)


def transaction_prompt(
    request_id: int,
    group: str,
    key: KeyInfo,
    receiver: str,
    analysis: TxAnalysis,
    fee: int,
    reasons: Sequence[str],
    spent: DaySpend,
    policy: WalletPolicy,
) -> tuple[str, str]:
    """(title, details) of the approval prompt for a transaction: everything it will do, what it
    can cost at most, where today's spend stands, and why the policy did not sign it alone."""
    lines = [
        f"Group: {group}",
        f"Key: {key.name} — signs as {key.account_id} ({key.network})",
        f"Receiver: {receiver}",
        "Actions:",
        *(f"  {i}. {a.summary}" for i, a in enumerate(analysis.actions, 1)),
        f"Total: {format_near(analysis.total_value)} NEAR (+ fees, at most {format_near(fee)} NEAR)",
        # per token contract moved: today's base units against its limit
        *(
            token_line(contract, spent, policy)
            for contract in dict.fromkeys(m.contract for m in analysis.token_moves)
        ),
        f"Today's spend: {format_near(spent.near)} of {format_near(policy.daily_limit)} NEAR (UTC day)",
        "Needs your approval because:",
        *(f"  • {reason}" for reason in reasons),
    ]
    title = f"NEAR request #{request_id} from {group}: {format_near(analysis.total_value)} NEAR"
    title += f" → {receiver}"
    return title, "\n".join(lines)


def message_prompt(
    request_id: int, group: str, key: KeyInfo, recipient: str, message: str, reasons: Sequence[str]
) -> tuple[str, str]:
    """(title, details) of the approval prompt for a NEP-413 message signature."""
    details = "\n".join(
        [
            f"Group: {group}",
            f"Key: {key.name} — signs as {key.account_id} ({key.network})",
            f"Recipient: {recipient}",
            f"Message: {excerpt(message, 1500)}",
            "A NEP-413 signature proves to the recipient that you control this account.",
            *(f"  • {reason}" for reason in reasons),
        ]
    )
    title = f"NEAR request #{request_id} from {group}: sign a message for {recipient[:60]}"
    return title, details


def setting_value(name: str, value: str) -> object:
    """A chat value as the config file would hold it: lists comma-separated, booleans in words."""
    if name in _LISTS:
        return [v.strip() for v in value.split(",") if v.strip()]
    if name in _BOOLS:
        lowered = value.lower()
        if lowered not in ("true", "false", "on", "off", "yes", "no"):
            raise ValueError(f"{name} must be true or false")
        return lowered in ("true", "on", "yes")
    return value


def policy_with(base: WalletPolicy, overrides: dict[str, str]) -> WalletPolicy:
    """``base`` (the config file's policy) with the stored `/policy set` overrides applied.

    Raises ValueError naming the setting when the result is not a valid policy."""
    data = base.model_dump(mode="json")
    for name, raw in overrides.items():
        if name in SETTABLE:
            data[name] = json.loads(raw)
    try:
        return WalletPolicy.model_validate(data)
    except ValidationError as exc:  # show the readable part, naming the setting
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ValueError("; ".join(problems)) from None


def token_line(contract: str, spent: DaySpend, policy: WalletPolicy) -> str:
    """One token contract's spend today against its limit (in `/wallet` and in approval prompts)."""
    used = spent.tokens.get(contract, 0)
    shown = "an unbounded amount" if used >= UNBOUNDED_CHARGE else str(used)
    limit = policy.token_limits.get(contract)
    cap = f" of {limit.daily_limit}" if limit is not None else " (no token limit: always asks)"
    return f"Today's {contract} tokens: {shown}{cap} base units"
