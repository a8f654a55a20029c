"""A policy verdict and the rule that combines verdicts: the most restrictive one wins.

Kept apart from `gateway.wallet.policy` so the store (which records a verdict atomically
with the spend it allows) can depend on the verdict's shape without importing the engine.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["auto_approve", "needs_approval", "deny"]
_SEVERITY: dict[str, int] = {"auto_approve": 0, "needs_approval": 1, "deny": 2}


@dataclass(frozen=True, slots=True)
class Decision:
    """`reasons` explain the outcome: why it is denied, or every reason it needs the owner."""

    outcome: Outcome
    reasons: tuple[str, ...] = ()

    @property
    def signs(self) -> bool:
        return self.outcome == "auto_approve"


AUTO = Decision("auto_approve")


def combine(decisions: Iterable[Decision]) -> Decision:
    """The most restrictive outcome wins; its reasons are every reason that led to it."""
    decisions = list(decisions)
    worst = max((d.outcome for d in decisions), key=_SEVERITY.__getitem__, default="auto_approve")
    reasons: list[str] = []
    for d in decisions:
        if d.outcome == worst:
            reasons.extend(r for r in d.reasons if r not in reasons)
    return Decision(worst, tuple(reasons))
