"""What a NEAR transaction does, in terms the policy engine and the owner can judge.

`analyze()` is pure and cheap: it runs for every transaction an agent asks for, before the
policy decides and before anything is signed (invariant 5, docs/ARCHITECTURE.md). It keeps two kinds of
data apart on purpose:

* exact data for the policy engine — amounts in yoctoNEAR ints, the raw method name as it
  will be signed (matching a rule against a cleaned-up name could match the wrong thing);
* display data (`summary`, `key_permission`) that is safe to paste into a chat: a hostile
  agent chooses method names and call arguments, so they are length-capped, control and
  format characters (newlines, bidi overrides, zero-width spaces) are escaped visibly, and
  amounts are exact NEAR decimals, never rounded.

Value accounting: an action's `value` is the yoctoNEAR it moves or locks out of the signer's
account (transfer deposit, call deposit, stake). A relayed delegate action (NEP-366) spends
the *delegate sender's* funds, not ours — we only pay the outer transaction's gas — so its
inner values are not part of `TxAnalysis.total_value`; the exception is a delegate whose
sender is our own signer, where the inner actions do spend our money and are counted.

Token accounting: a function call's deposit says nothing about the tokens it moves (an
`ft_transfer` of a fortune attaches 1 yoctoNEAR), so each call also carries the `TokenMove`
that `gateway.wallet.tokens` reads from its arguments, and `TxAnalysis.token_moves` lists the
ones that move *our* tokens (top-level calls, and calls inside a delegate we send ourselves).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from core.json_nesting import nesting_exceeds
from core.wallet.amounts import U128_MAX, YOCTO_PER_NEAR
from gateway.wallet.tokens import TokenMove, token_move, token_totals
from gateway.wallet.transactions import (
    AddKey,
    CreateAccount,
    DeleteAccount,
    DeleteKey,
    DeployContract,
    FullAccessPermission,
    FunctionCall,
    FunctionCallPermission,
    NonDelegateAction,
    SignedDelegate,
    Stake,
    Transaction,
    Transfer,
)

Risk = Literal["low", "medium", "high", "critical"]
RISK_ORDER: dict[str, int] = {"low": 0, "medium": 1, "high": 2, "critical": 3}

MAX_METHOD_CHARS = 64
"""Longest method name shown; NEAR allows 256 bytes, which would drown a chat message."""
MAX_ARGS_CHARS = 160
"""Longest rendering of call arguments shown in a summary."""
MAX_ARGS_DEPTH = 64  # deeper JSON is shown as its size, like any unreadable argument blob
MAX_ARGS_PARSE_BYTES = 64 * 1024
"""Arguments longer than this are not parsed as JSON just to be shown (the display is capped anyway)."""
_JSON_WHITESPACE = str.maketrans("", "", "\n\r\t")


def format_yocto(yocto: int) -> str:
    """Exact NEAR decimal of any non-negative int, including sums above u128 (`format_near` refuses them).

    A transaction's total can exceed u128 when several actions each carry a large amount; the
    policy must still be able to say so exactly instead of crashing.
    """
    whole, frac = divmod(yocto, YOCTO_PER_NEAR)
    if not frac:
        return str(whole)
    return f"{whole}.{f'{frac:024d}'.rstrip('0')}"


def _escape(ch: str) -> str:
    code = ord(ch)
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def safe_text(text: str, limit: int) -> str:
    """`text` fit for a chat line: non-printable characters escaped as \\uXXXX, at most `limit` chars (+ "…").

    Escaping (rather than dropping) shows the owner that something was hidden: "transfer"
    and "trans\\u200bfer" must not look the same.
    """
    if len(text) <= limit and text.isprintable():
        return text
    out: list[str] = []
    size = 0
    for ch in text:
        piece = ch if ch.isprintable() else _escape(ch)
        if size + len(piece) > limit:
            out.append("…")
            break
        out.append(piece)
        size += len(piece)
    return "".join(out)


def render_args(args: bytes) -> str:
    """Call arguments for display: the JSON text as sent if it is UTF-8 JSON, else "<N bytes>".

    The original text is shown (not a re-serialization) so duplicate keys and exact number
    spellings are visible as the contract will see them; JSON forbids raw control characters
    inside strings, so removing newlines/tabs only removes insignificant whitespace.
    """
    if not args:
        return "<0 bytes>"
    if len(args) > MAX_ARGS_PARSE_BYTES:
        return f"<{len(args)} bytes>"
    try:
        text = args.decode("utf-8")
        if nesting_exceeds(args, MAX_ARGS_DEPTH):  # the parser's own limit differs between Python versions
            return f"<{len(args)} bytes>"
        json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return f"<{len(args)} bytes>"
    text = text.strip().translate(_JSON_WHITESPACE)
    shown = safe_text(text, MAX_ARGS_CHARS)
    # Valid JSON never ends with "…", so the ellipsis means safe_text cut it short.
    return f"{shown} ({len(args)} bytes)" if shown.endswith("…") else shown


def format_tgas(gas: int) -> str:
    """Gas in Tgas, exactly (no float rounding: an owner comparing numbers should see the real one)."""
    whole, frac = divmod(gas, 10**12)
    return f"{whole}.{f'{frac:012d}'.rstrip('0')}" if frac else str(whole)


def _amount(value: object, what: str) -> int:
    """Amounts must be u128 ints: anything else could not be encoded, and must not be judged either."""
    if type(value) is not int or not 0 <= value <= U128_MAX:
        raise ValueError(f"{what} must be an int of yoctoNEAR within u128, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ActionAnalysis:
    """One action. `method` is exact (for matching policy rules), not for display: use `summary`."""

    kind: str
    receiver_id: str
    value: int
    method: str | None = None
    deposit: int = 0
    gas: int | None = None
    key_permission: str | None = None
    public_key: str | None = None
    beneficiary_id: str | None = None
    inner: tuple[ActionAnalysis, ...] = ()
    risk: Risk = "low"
    summary: str = ""
    sender_id: str | None = None
    """Delegate only: the account whose meta-transaction we relay (and whose funds its actions spend)."""
    token: TokenMove | None = None
    """FunctionCall only: the tokens the call moves (amount None = cannot be bounded)."""


@dataclass(frozen=True, slots=True)
class TxAnalysis:
    signer_id: str
    receiver_id: str
    public_key: str
    actions: tuple[ActionAnalysis, ...]
    total_value: int
    """yoctoNEAR leaving or locked in *our* account; a relayed delegate's inner values are the sender's."""
    risk: Risk
    summary: str
    token_moves: tuple[TokenMove, ...] = ()
    """Tokens leaving *our* holdings (or put in another's control), per call."""


def _max_risk(risks: list[Risk] | tuple[Risk, ...], floor: Risk = "low") -> Risk:
    best = floor
    for risk in risks:
        if RISK_ORDER[risk] > RISK_ORDER[best]:
            best = risk
    return best


def _permission_text(permission: FunctionCallPermission) -> str:
    methods = ",".join(safe_text(m, MAX_METHOD_CHARS) for m in permission.method_names) or "*"
    return f"function_call:{permission.receiver_id}:{safe_text(methods, 4 * MAX_METHOD_CHARS)}"


def _action(action: NonDelegateAction, receiver: str) -> ActionAnalysis:
    """Analyze one non-delegate action sent to `receiver`; the `type() is` chain is the fast path."""
    if type(action) is Transfer:
        value = _amount(action.deposit, "transfer deposit")
        return ActionAnalysis(
            "Transfer",
            receiver,
            value,
            deposit=value,
            summary=f"Transfer {format_yocto(value)} NEAR to {receiver}",
        )
    if type(action) is FunctionCall:
        deposit = _amount(action.deposit, "function call deposit")
        method: str = action.method_name
        gas: int = action.gas
        if type(gas) is not int or not 0 <= gas < 1 << 64:
            raise ValueError(f"function call gas must be a u64 int, got {gas!r}")
        summary = (
            f"Call {receiver}.{safe_text(method, MAX_METHOD_CHARS)}({render_args(action.args)})"
            f" with {format_yocto(deposit)} NEAR deposit, {format_tgas(gas)} Tgas"
        )
        token = token_move(receiver, method, action.args, deposit)
        if token is not None:
            summary += f" — {describe_move(token)}"
        return ActionAnalysis(
            "FunctionCall",
            receiver,
            deposit,
            method=method,
            deposit=deposit,
            gas=gas,
            summary=summary,
            risk="medium" if token is not None else "low",
            token=token,
        )
    if type(action) is Stake:
        value = _amount(action.stake, "stake")
        key = str(action.public_key)
        summary = (
            f"Stake {format_yocto(value)} NEAR on {receiver} with validator key {key}"
            if value
            else f"Unstake everything on {receiver} (stake 0, validator key {key})"
        )
        return ActionAnalysis("Stake", receiver, value, public_key=key, risk="medium", summary=summary)
    if type(action) is AddKey:
        key = str(action.public_key)
        permission = action.access_key.permission
        if isinstance(permission, FullAccessPermission):
            return ActionAnalysis(
                "AddKey",
                receiver,
                0,
                key_permission="full_access",
                public_key=key,
                risk="critical",
                summary=f"Add FULL ACCESS key {key} to {receiver}",
            )
        if not isinstance(permission, FunctionCallPermission):
            raise TypeError(f"unknown access key permission {permission!r}")
        allowance = (
            "unlimited gas allowance"
            if permission.allowance is None
            else f"{format_yocto(_amount(permission.allowance, 'allowance'))} NEAR gas allowance"
        )
        text = _permission_text(permission)
        return ActionAnalysis(
            "AddKey",
            receiver,
            0,
            key_permission=text,
            public_key=key,
            risk="medium",
            summary=f"Add function-call key {key} to {receiver} ({text}, {allowance})",
        )
    if type(action) is DeleteKey:
        key = str(action.public_key)
        return ActionAnalysis(
            "DeleteKey",
            receiver,
            0,
            key_permission="delete",
            public_key=key,
            risk="high",
            summary=f"Delete key {key} from {receiver}",
        )
    if type(action) is DeleteAccount:
        beneficiary: str = action.beneficiary_id
        return ActionAnalysis(
            "DeleteAccount",
            receiver,
            0,
            beneficiary_id=beneficiary,
            risk="critical",
            summary=f"DELETE ACCOUNT {receiver}, sending its whole balance to {beneficiary}",
        )
    if type(action) is CreateAccount:
        return ActionAnalysis(
            "CreateAccount", receiver, 0, risk="medium", summary=f"Create account {receiver}"
        )
    if type(action) is DeployContract:
        size = len(action.code)
        return ActionAnalysis(
            "DeployContract",
            receiver,
            0,
            risk="high",
            summary=f"Deploy a contract ({size} bytes) to {receiver}",
        )
    raise TypeError(f"not a NEAR action: {type(action).__name__}")


def describe_move(move: TokenMove) -> str:
    """The owner's view of a token movement: exact base units, the contract, the (escaped) recipient."""
    to = f" to {safe_text(move.receiver, 64)}" if move.receiver is not None else ""
    if move.amount is None:
        return f"moves an UNKNOWN amount of {move.contract} tokens{to} ({move.why})"
    unit = "NFT" if move.standard == "NEP-171" else "base units of"
    return f"moves {move.amount} {unit} {move.contract} tokens{to} ({move.standard})"


def _delegate(action: SignedDelegate, signer_id: str) -> ActionAnalysis:
    da = action.delegate_action
    inner = tuple(_action(a, da.receiver_id) for a in da.actions)
    inner_value = sum(a.value for a in inner)
    own = da.sender_id == signer_id
    lines = [
        f"Relay a meta-transaction from {da.sender_id} to {da.receiver_id} "
        f"({len(inner)} action{'s' if len(inner) != 1 else ''}, "
        + ("our own funds" if own else "paid by the sender; we pay the gas")
        + "):"
    ]
    lines.extend(f"    - {a.summary}" for a in inner)
    return ActionAnalysis(
        "Delegate",
        da.receiver_id,
        inner_value if own else 0,
        public_key=str(da.public_key),
        inner=inner,
        risk=_max_risk([a.risk for a in inner], floor="medium"),
        summary="\n".join(lines),
        sender_id=da.sender_id,
    )


def analyze(tx: Transaction) -> TxAnalysis:
    """Analyze `tx`; raises ValueError/TypeError for actions that could not be signed anyway."""
    receiver = tx.receiver_id
    actions = tuple(
        _delegate(a, tx.signer_id) if type(a) is SignedDelegate else _action(a, receiver) for a in tx.actions
    )
    total = 0
    risks: list[Risk] = []
    lines: list[str] = []
    moves: list[TokenMove] = []
    for a in actions:
        total += a.value
        risks.append(a.risk)
        lines.append(a.summary)
        if a.token is not None:
            moves.append(a.token)
        if a.kind == "Delegate" and a.sender_id == tx.signer_id:  # our own meta-transaction
            moves.extend(inner.token for inner in a.inner if inner.token is not None)
    lines.append(f"Total: {format_yocto(total)} NEAR")
    for contract, amount in token_totals(moves).items():
        lines.append(f"Tokens of {contract}: {'UNKNOWN amount' if amount is None else amount}")
    return TxAnalysis(
        signer_id=tx.signer_id,
        receiver_id=receiver,
        public_key=str(tx.public_key),
        actions=actions,
        total_value=total,
        risk=_max_risk(risks),
        summary="\n".join(lines),
        token_moves=tuple(moves),
    )
