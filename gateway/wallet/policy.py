"""The owner's signing policy applied to an analyzed transaction: sign, ask the owner, or refuse.

Every rule below yields its own `Decision`; `combine()` keeps the most restrictive outcome
with every reason behind it, so a harmless part of a transaction can never launder a
dangerous part (a whitelisted 0.01 NEAR transfer next to a DeleteAccount is still denied),
and the owner's approval prompt lists *all* reasons it needs a human.

The engine is pure and synchronous on purpose: the store calls `decide()` inside its write
transaction with today's spend, so the verdict and the spend it allows are recorded
atomically (invariant 5, docs/ARCHITECTURE.md) and concurrent requests cannot both pass the daily limit.

The owner pressing Approve (`owner_approved=True`) lifts every needs-approval outcome but no
deny: key access, function-call key limits, forbidden operations and the daily limits (hard
caps on auto *and* approved spend) are re-checked and still refuse.

Tokens are value too. A call that moves tokens (`gateway.wallet.tokens`) is signed without
asking only if a function-call rule auto-approves it AND `token_limits` has an entry for its
contract AND its amount is known and within that entry's `auto_approve_max`; the entry's
`daily_limit` is a hard cap like the NEAR one. A transfer of a token without an entry, or of an
amount that cannot be read, always asks the owner. The NEAR daily limit counts fees as well:
`fee_reserve` is the most this transaction can burn (`gateway.wallet.fees`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Protocol

from core.wallet.settings import STAKING_METHODS, FunctionCallRule, WalletPolicy
from gateway.wallet.analysis import ActionAnalysis, TxAnalysis, format_yocto, safe_text
from gateway.wallet.decision import AUTO, Decision, combine
from gateway.wallet.tokens import UNBOUNDED_CHARGE, token_totals

_EPOCH = date(1970, 1, 1)
_SECONDS_PER_DAY = 86_400
_VALUE_KINDS = frozenset({"Transfer", "FunctionCall", "Stake", "Delegate"})
_KNOWN_KINDS = _VALUE_KINDS | {"AddKey", "DeleteKey", "DeleteAccount", "CreateAccount", "DeployContract"}


def utc_day(ts: float) -> str:
    """The UTC calendar day (YYYY-MM-DD) of a unix timestamp: the daily limit's accounting period.

    Floor division instead of `datetime.fromtimestamp`, which rounds to microseconds and can
    carry 23:59:59.9999996 into the next day.
    """
    return (_EPOCH + timedelta(days=int(ts // _SECONDS_PER_DAY))).isoformat()


class KeyPermissionLike(Protocol):
    """The shape of `gateway.wallet.keyinfo.KeyPermission` (not imported: the engine stays standalone)."""

    @property
    def kind(self) -> str: ...  # "full_access" | "function_call"

    @property
    def receiver_id(self) -> str | None: ...

    @property
    def method_names(self) -> tuple[str, ...]: ...

    @property
    def allowance(self) -> int | None: ...


def _near(yocto: int) -> str:
    return f"{format_yocto(yocto)} NEAR"


def _deny(reason: str) -> Decision:
    return Decision("deny", (reason,))


def _ask(reason: str) -> Decision:
    return Decision("needs_approval", (reason,))


def _units(amount: int) -> str:
    """Base units spent today; an unbounded movement approved earlier shows as such."""
    return "unbounded amount" if amount >= UNBOUNDED_CHARGE else str(amount)


def _method(name: str | None) -> str:
    return safe_text(name or "", 64)


class PolicyEngine:
    """Decides transactions and NEP-413 messages against one `WalletPolicy`."""

    def __init__(self, policy: WalletPolicy) -> None:
        self.policy = policy

    @property
    def policy(self) -> WalletPolicy:
        return self._policy

    @policy.setter
    def policy(self, policy: WalletPolicy) -> None:
        # Lookups happen for every transaction; precompute sets once per policy.
        self._policy = policy
        self._whitelist = frozenset(policy.transfer_whitelist)
        self._validators = frozenset(policy.stake_validators)
        self._rules: tuple[FunctionCallRule, ...] = tuple(policy.function_calls)
        self._token_limits = dict(policy.token_limits)

    # -- access --------------------------------------------------------------------------

    def may_use_key(self, group: str, key_name: str) -> bool:
        """Whether `group` may sign with `key_name`; unlisted keys belong to the main group only."""
        groups = self._policy.groups_for_key(key_name)
        return "*" in groups or group in groups

    def _access(self, group: str, key_name: str) -> Decision:
        if self.may_use_key(group, key_name):
            return AUTO
        return _deny(f"group '{group}' may not use key '{key_name}'")

    # -- transactions --------------------------------------------------------------------

    def decide(
        self,
        analysis: TxAnalysis,
        *,
        group: str,
        key_name: str,
        key_permission: KeyPermissionLike,
        spent_today: int,
        owner_approved: bool = False,
        tokens_spent_today: Mapping[str, int] | None = None,
        fee_reserve: int = 0,
    ) -> Decision:
        """The verdict for signing `analysis` with `key_name` for `group`.

        `spent_today` is the day's NEAR spend in yoctoNEAR (value and fees), `tokens_spent_today`
        each token contract's base units moved today, `fee_reserve` the most this one can burn.
        """
        policy = self._policy
        decisions: list[Decision] = [
            self._access(group, key_name),
            self._key_permission(analysis, key_name, key_permission),
        ]
        for action in analysis.actions:
            decisions.extend(self._forbidden(action, ""))
            if action.kind == "FunctionCall":
                decisions.extend(self._function_call(action))
            elif action.kind == "Stake":
                decisions.append(self._stake(action))
            elif action.kind == "CreateAccount":
                decisions.append(_ask(f"creating account {action.receiver_id} needs approval"))
            elif action.kind == "AddKey" and action.key_permission != "full_access":
                decisions.append(_ask(f"adding a function-call key to {action.receiver_id} needs approval"))
            elif action.kind == "Delegate":
                decisions.append(
                    _ask(
                        f"relaying a meta-transaction from {action.sender_id} to {action.receiver_id} "
                        "(we pay its gas) needs approval"
                    )
                )
                for inner in action.inner:
                    decisions.extend(
                        self._forbidden(inner, f"inside a meta-transaction from {action.sender_id}: ")
                    )
            elif action.kind not in _KNOWN_KINDS:
                decisions.append(_deny(f"unknown action kind {safe_text(action.kind, 32)!r}"))
        decisions.extend(self._value(analysis))
        decisions.extend(self._tokens(analysis, tokens_spent_today or {}))

        total = analysis.total_value
        if spent_today + total + fee_reserve > policy.daily_limit:
            fees = f" + up to {_near(fee_reserve)} in fees" if fee_reserve else ""
            decisions.append(
                _deny(
                    f"today's spend {_near(spent_today)} + this {_near(total)}{fees} would exceed "
                    f"the daily limit {_near(policy.daily_limit)}"
                )
            )

        verdict = combine(decisions)
        if owner_approved and verdict.outcome == "needs_approval":
            return Decision("auto_approve", tuple(f"approved by the owner: {r}" for r in verdict.reasons))
        return verdict

    def _key_permission(self, analysis: TxAnalysis, key_name: str, permission: KeyPermissionLike) -> Decision:
        """A function-call key can sign exactly one zero-deposit call to its receiver (and methods)."""
        kind = permission.kind
        if kind == "full_access":
            return AUTO
        if kind != "function_call":
            return _deny(f"key '{key_name}' has an unknown permission {safe_text(str(kind), 32)!r}")
        receiver = permission.receiver_id
        prefix = f"key '{key_name}' is a function-call key for {receiver}; it"
        actions = analysis.actions
        if len(actions) != 1:
            return _deny(f"{prefix} can sign only a single function call, not {len(actions)} actions")
        action = actions[0]
        if action.kind != "FunctionCall":
            return _deny(f"{prefix} cannot sign {action.kind}")
        reasons: list[str] = []
        if analysis.receiver_id != receiver:
            reasons.append(f"{prefix} cannot call {analysis.receiver_id}")
        if permission.method_names and action.method not in permission.method_names:
            allowed = ", ".join(_method(m) for m in permission.method_names)
            reasons.append(f"{prefix} cannot call method '{_method(action.method)}' (allowed: {allowed})")
        if action.deposit:
            reasons.append(f"{prefix} cannot attach a deposit ({_near(action.deposit)})")
        return Decision("deny", tuple(reasons)) if reasons else AUTO

    def _forbidden(self, action: ActionAnalysis, where: str) -> list[Decision]:
        """DeleteAccount and full-access operations: denied by default, never automatic."""
        policy = self._policy
        kind = action.kind
        if kind == "DeleteAccount":
            what = f"{where}deleting account {action.receiver_id} (balance to {action.beneficiary_id})"
            if policy.deny_delete_account:
                return [_deny(f"{what} is forbidden by policy (deny_delete_account)")]
            return [_ask(f"{what} needs approval")]
        if kind == "AddKey" and action.key_permission == "full_access":
            what = f"{where}adding full-access key {action.public_key} to {action.receiver_id}"
        elif kind == "DeleteKey":
            what = f"{where}deleting key {action.public_key} from {action.receiver_id}"
        elif kind == "DeployContract":
            what = f"{where}deploying a contract to {action.receiver_id}"
        else:
            return []
        if policy.deny_full_access_operations:
            return [_deny(f"{what} is forbidden by policy (deny_full_access_operations)")]
        return [_ask(f"{what} needs approval")]

    def _function_call(self, action: ActionAnalysis) -> list[Decision]:
        receiver, method, deposit = action.receiver_id, action.method or "", action.deposit
        shown = f"{receiver}.{_method(method)}"
        out: list[Decision] = []
        if method in STAKING_METHODS and receiver not in self._validators:
            out.append(
                _deny(f"staking call {shown}: {receiver} is not an allowed validator (stake_validators)")
            )
        token = action.token
        if token is not None and token.amount is None:
            out.append(_ask(f"{shown} moves an unknown amount of tokens ({token.why})"))
        rule = next((r for r in self._rules if r.matches(receiver, method)), None)
        if rule is None:
            out.append(_ask(f"no function-call rule for {shown}"))
            return out
        if deposit > rule.max_deposit:
            out.append(
                _ask(
                    f"deposit {_near(deposit)} to {shown} exceeds "
                    f"the rule's max deposit {_near(rule.max_deposit)}"
                )
            )
        if not rule.auto_approve:
            out.append(_ask(f"the function-call rule for {shown} requires approval"))
        return out

    def _stake(self, action: ActionAnalysis) -> Decision:
        if action.public_key in self._validators or action.receiver_id in self._validators:
            return AUTO  # the amount is judged with the transaction's total value
        return _deny(
            f"staking {_near(action.value)} with validator key {action.public_key} on {action.receiver_id}: "
            "not an allowed validator (stake_validators)"
        )

    def _value(self, analysis: TxAnalysis) -> list[Decision]:
        """Whitelisted transfers up to whitelist_max; everything else up to auto_approve_max, in total.

        Whitelisted transfers are judged by their sum (they all go to the same receiver), so
        splitting one large payment into several Transfer actions does not escape the limit.
        """
        policy = self._policy
        total = analysis.total_value
        receiver = analysis.receiver_id
        valued = [a for a in analysis.actions if a.value and a.kind in _VALUE_KINDS]
        whitelisted = (
            receiver in self._whitelist and bool(valued) and all(a.kind == "Transfer" for a in valued)
        )
        out: list[Decision] = []
        if whitelisted:
            # Being whitelisted never makes a transfer stricter than for an unknown receiver.
            limit = max(policy.whitelist_max, policy.auto_approve_max)
            if total > limit:
                out.append(
                    _ask(
                        f"transfer of {_near(total)} to whitelisted {receiver} exceeds "
                        f"the whitelist limit {_near(limit)}"
                    )
                )
            return out
        if total > policy.auto_approve_max:
            if len(valued) == 1 and valued[0].kind == "Transfer":
                what = f"transfer of {_near(total)} to {receiver}"
            else:
                what = f"total value {_near(total)}"
            out.append(_ask(f"{what} exceeds the auto-approve limit {_near(policy.auto_approve_max)}"))
        return out

    def _tokens(self, analysis: TxAnalysis, spent: Mapping[str, int]) -> list[Decision]:
        """Per token contract: auto only within `token_limits`; its daily limit is a hard cap."""
        out: list[Decision] = []
        for contract, amount in token_totals(analysis.token_moves).items():
            limit = self._token_limits.get(contract)
            used = spent.get(contract, 0)
            if limit is None:
                out.append(
                    _ask(
                        f"no token limit for {contract} (token_limits): "
                        "its token transfers always need approval"
                    )
                )
                continue
            if amount is None:  # already asked for; a day whose cap is used up takes nothing more
                if used >= limit.daily_limit:
                    out.append(
                        _deny(
                            f"{contract} tokens: today's {_units(used)} already reach "
                            f"the daily token limit {limit.daily_limit}"
                        )
                    )
                continue
            if amount > limit.auto_max:
                out.append(
                    _ask(f"{amount} {contract} tokens exceed the token auto-approve limit {limit.auto_max}")
                )
            if used + amount > limit.daily_limit:
                out.append(
                    _deny(
                        f"{contract} tokens: today's {_units(used)} + this {amount} would exceed "
                        f"the daily token limit {limit.daily_limit}"
                    )
                )
        return out

    # -- messages ------------------------------------------------------------------------

    def decide_message(
        self, *, group: str, key_name: str, key_permission: KeyPermissionLike | None = None
    ) -> Decision:
        """NEP-413 message signing: key access, then `sign_messages` (auto | approval | deny).

        A signed message proves control of the account to a third party, so it needs a
        full-access key (NEP-413) when the key's permission is known.
        """
        decisions = [self._access(group, key_name)]
        if key_permission is not None and key_permission.kind != "full_access":
            decisions.append(_deny(f"key '{key_name}' is not a full-access key; NEP-413 messages need one"))
        mode = self._policy.sign_messages
        if mode == "deny":
            decisions.append(_deny("signing messages is forbidden by policy (sign_messages = deny)"))
        elif mode == "approval":
            decisions.append(_ask("signing a message (NEP-413) needs approval (sign_messages = approval)"))
        return combine(decisions)
