"""What a transaction can cost in fees, before it runs, and what it did cost, after.

The daily limit is a hard cap on everything that leaves the account, and gas is paid in NEAR:
an agent that loops failing 300 Tgas calls spends ~0.03 NEAR a call without moving any value.
So the spend ledger charges every signed transaction

* at decision time, `max_fee()`: an upper bound that the burnt fee cannot exceed — the gas the
  transaction can burn (each action's static send + execution cost, bounded generously, plus
  every function call's attached gas, which is the most its execution can burn) at
  `PRICE_FACTOR` times the node's current gas price (NEAR lets the price rise at most 1% a
  block, so twice today's price covers the ~70 blocks a transaction and its receipts take in
  the worst case we accept);
* once the outcome is known, `tokens_burnt()`: what the chain actually burnt — the transaction's
  conversion plus every receipt it caused (`transaction_outcome` + `receipts_outcome`).

The bound only has to be an upper bound; the settlement makes the ledger exact.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.wallet.transactions import (
    AddKey,
    DeployContract,
    FunctionCall,
    FunctionCallPermission,
    SignedDelegate,
    Transaction,
)

TX_GAS = 10**12
"""Converting the transaction into its receipt (NEAR: ~0.22 Tgas send + execution), rounded up."""
ACTION_GAS = 10 * 10**12
"""Static send + execution gas of one action; the largest (a function call) is ~4.6 Tgas."""
BYTE_GAS = 100_000_000
"""Per byte of contract code, call arguments or method names (a deploy costs ~71 Mgas a byte)."""
MIN_GAS_PRICE = 100_000_000
"""NEAR's minimum gas price in yoctoNEAR per gas; a node answering less is not believed."""
PRICE_FACTOR = 2


def max_gas(tx: Transaction) -> int:
    """An upper bound on the gas `tx` and all its receipts can burn (a relayed delegate's too: we pay it)."""
    return TX_GAS + _actions_gas(tx.actions)


def _actions_gas(actions: Iterable[object]) -> int:
    gas = 0
    for action in actions:
        gas += ACTION_GAS
        if isinstance(action, FunctionCall):
            gas += action.gas + BYTE_GAS * (len(action.args) + len(action.method_name.encode()))
        elif isinstance(action, DeployContract):
            gas += BYTE_GAS * len(action.code)
        elif isinstance(action, AddKey) and isinstance(action.access_key.permission, FunctionCallPermission):
            permission = action.access_key.permission
            gas += BYTE_GAS * sum(len(m.encode()) for m in permission.method_names)
        elif isinstance(action, SignedDelegate):
            gas += _actions_gas(action.delegate_action.actions)
    return gas


def max_fee(tx: Transaction, gas_price: int) -> int:
    """yoctoNEAR reserved against the daily limit for `tx` until its burnt fee is known."""
    return max_gas(tx) * max(gas_price, MIN_GAS_PRICE) * PRICE_FACTOR


def tokens_burnt(raw: dict[str, Any]) -> int | None:
    """The fee a final outcome (NEAR `FinalExecutionOutcome`) burnt, or None if it does not say.

    None (keep the reservation) when any part is missing or malformed: a partial sum would
    undercount.
    """
    outcomes = [raw.get("transaction_outcome")]
    receipts = raw.get("receipts_outcome")
    if not isinstance(receipts, list):
        return None
    outcomes.extend(receipts)
    total = 0
    for entry in outcomes:
        outcome = entry.get("outcome") if isinstance(entry, dict) else None
        burnt = outcome.get("tokens_burnt") if isinstance(outcome, dict) else None
        if not isinstance(burnt, str) or not burnt.isascii() or not burnt.isdigit():
            return None
        total += int(burnt)
    return total
