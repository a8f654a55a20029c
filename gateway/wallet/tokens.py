"""Which function calls move tokens, and how many: the value a NEAR deposit does not show.

A NEP-141 `ft_transfer` attaches exactly 1 yoctoNEAR (the standard's proof that a full-access
key signed it) and moves whatever `amount` its arguments say. Judging it by its deposit would
let an agent empty the account's USDC inside a 0.1 NEAR auto-approve limit, so the policy
judges token calls by what this module reads from their arguments, per token contract:

* NEP-141 `ft_transfer`, `ft_transfer_call` and wNEAR's `near_withdraw`: `amount` (u128 decimal);
* NEP-171 `nft_transfer`, `nft_transfer_call`, `nft_approve`: one NFT (an approval hands over
  the right to transfer it);
* NEP-245 `mt_transfer`, `mt_transfer_call`: `amount`; `mt_batch_transfer`,
  `mt_batch_transfer_call`, `mt_approve`: the sum of `amounts` over all token ids of the contract;
* any other call that attaches exactly 1 yoctoNEAR, or whose name says it moves something
  (transfer, withdraw, burn, ...): tokens of unknown amount.

An amount that cannot be read exactly — arguments that are not one JSON object, a duplicated
key (contracts and Python disagree on which copy wins), a number instead of a string, a value
outside u128 — is *unbounded* (`amount is None`): the policy never signs such a call on its own.

Pure and stdlib-only: it runs for every transaction, before anything is signed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from core.wallet.amounts import U128_MAX

Standard = Literal["NEP-141", "NEP-171", "NEP-245", "unknown"]

UNBOUNDED_CHARGE = U128_MAX + 1
"""What an unbounded movement costs in the per-token ledger: more than any configured limit."""
MAX_PARSE_BYTES = 64 * 1024

_FT = frozenset({"ft_transfer", "ft_transfer_call", "near_withdraw"})
_NFT = frozenset({"nft_transfer", "nft_transfer_call", "nft_approve"})
_MT_ONE = frozenset({"mt_transfer", "mt_transfer_call"})
_MT_BATCH = frozenset({"mt_batch_transfer", "mt_batch_transfer_call", "mt_approve"})
_U128_TEXT = re.compile(r"[0-9]{1,39}")
_MOVES_SOMETHING = re.compile(
    r"transfer|withdraw|send|approv|burn|unregister|swap|drain|unwrap|redeem", re.IGNORECASE
)
ONE_YOCTO = 1


@dataclass(frozen=True, slots=True)
class TokenMove:
    """Tokens of `contract` that one call moves out of the signer's holdings (or lets another move).

    `amount` is in the contract's base units (NEP-171: a number of NFTs); None when it cannot be
    bounded, with `why` saying so. `receiver` is the agent-chosen recipient, for display only.
    """

    contract: str
    method: str
    standard: Standard
    amount: int | None
    receiver: str | None = None
    why: str | None = None


def token_move(contract: str, method: str, args: bytes, deposit: int) -> TokenMove | None:
    """The tokens a call of `contract.method(args)` with `deposit` yoctoNEAR moves, or None if none."""
    standard: Standard
    if method in _FT:
        standard = "NEP-141"
    elif method in _NFT:
        standard = "NEP-171"
    elif method in _MT_ONE or method in _MT_BATCH:
        standard = "NEP-245"
    elif deposit == ONE_YOCTO or _MOVES_SOMETHING.search(method):
        cue = "1 yoctoNEAR deposit" if deposit == ONE_YOCTO else "the method name"
        return TokenMove(
            contract, method, "unknown", None, why=f"an unknown method that may move tokens ({cue})"
        )
    else:
        return None
    obj = _args_object(args)
    if obj is None:
        return TokenMove(
            contract, method, standard, None, why="its arguments are not one readable JSON object"
        )
    receiver = obj.get("receiver_id", obj.get("account_id"))
    shown = receiver if isinstance(receiver, str) else None
    if standard == "NEP-171":
        if not isinstance(obj.get("token_id"), str):
            return TokenMove(contract, method, standard, None, shown, why="token_id is not a string")
        return TokenMove(contract, method, standard, 1, shown)
    amount: int | None
    why: str | None
    if method in _MT_BATCH:
        amount, why = _batch_amount(obj.get("token_ids"), obj.get("amounts"))
    elif standard == "NEP-245" and not isinstance(obj.get("token_id"), str):
        amount, why = None, "token_id is not a string"
    else:
        amount, why = _u128(obj.get("amount"), "amount")
    return TokenMove(contract, method, standard, amount, shown, why=why)


def token_totals(moves: Iterable[TokenMove]) -> dict[str, int | None]:
    """Per contract, the sum of what `moves` move; None if any of them is unbounded."""
    totals: dict[str, int | None] = {}
    for move in moves:
        previous = totals.get(move.contract, 0)
        totals[move.contract] = None if previous is None or move.amount is None else previous + move.amount
    return totals


def ledger_charges(moves: Iterable[TokenMove]) -> dict[str, int]:
    """What `moves` cost in the per-token daily ledger: an unbounded movement uses up any limit."""
    return {c: UNBOUNDED_CHARGE if t is None else t for c, t in token_totals(moves).items()}


def _args_object(args: bytes) -> dict[str, object] | None:
    """`args` as a JSON object, or None if it is anything else or repeats a key at any level."""
    if not args or len(args) > MAX_PARSE_BYTES:
        return None
    try:
        obj = json.loads(args.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _u128(value: object, field: str) -> tuple[int | None, str | None]:
    """A NEP-141/245 `U128`: a JSON string of decimal digits (what near-sdk's U128 accepts, minus '+')."""
    if not isinstance(value, str):
        return None, f"{field} is missing or not a decimal string"
    if _U128_TEXT.fullmatch(value) is None or int(value) > U128_MAX:
        return None, f"{field} is not a u128 decimal string"
    return int(value), None


def _batch_amount(token_ids: object, amounts: object) -> tuple[int | None, str | None]:
    if not isinstance(token_ids, list) or not all(isinstance(t, str) for t in token_ids):
        return None, "token_ids is not a list of strings"
    if not isinstance(amounts, list) or len(amounts) != len(token_ids) or not amounts:
        return None, "amounts is not a non-empty list as long as token_ids"
    total = 0
    for value in amounts:
        amount, why = _u128(value, "an amount")
        if amount is None:
            return None, why
        total += amount
    return total, None
