"""A policy verdict, the rule that combines verdicts (the most restrictive one wins), and the
day's spend a verdict is judged against.

Kept apart from `gateway.wallet.policy` so the store (which records a verdict atomically
with the spend it allows) can depend on their shapes without importing the engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

Outcome = Literal["auto_approve", "needs_approval", "deny"]
_SEVERITY: dict[Outcome, int] = {"auto_approve": 0, "needs_approval": 1, "deny": 2}


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
    worst: Outcome = max((d.outcome for d in decisions), key=_SEVERITY.__getitem__, default="auto_approve")
    reasons: list[str] = []
    for d in decisions:
        if d.outcome == worst:
            reasons.extend(r for r in d.reasons if r not in reasons)
    return Decision(worst, tuple(reasons))


@dataclass(frozen=True, slots=True)
class DaySpend:
    """What one UTC day has spent so far: NEAR (value and fees) and each token contract's base units."""

    near: int = 0
    tokens: Mapping[str, int] = field(default_factory=dict)
