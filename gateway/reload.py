"""What a SIGHUP may change in a running gateway, and what needs a restart.

Only settings that are read afresh on every use are applied live; everything that shaped a
component at start-up (channels, sandbox backend, vault, model endpoint, tokens) would need
that component rebuilt under running turns, so a change to it is reported, not half-applied.
The list is explicit on purpose: a new key is "needs a restart" until someone proves it is safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.config import Config

# Read on every turn, command or send; replacing the value is all it takes.
LIVE_KEYS: frozenset[str] = frozenset(
    {
        "admin.users",  # who may run admin commands / decide approvals: checked per message
        "context_messages",  # read when a turn claims its batch
        "groups.default_sender_policy",  # read when a group is registered
        "groups.sender_approval_timeout_s",  # read when an unknown sender's prompt is posted
        "retry.max_attempts",  # read when a failure is deferred or a send fails
        "retry.base_delay_s",
        "retry.max_delay_s",
    }
)
# Whole sections read afresh: `[budget]` is re-read by gateway/budget_state.py, which pushes the
# new headroom to the vault right after the reload.
LIVE_SECTIONS: tuple[str, ...] = ("budget.",)


def _live(key: str) -> bool:
    return key in LIVE_KEYS or key.startswith(LIVE_SECTIONS)


@dataclass(frozen=True)
class ReloadPlan:
    """The effective config after a reload, and the changed keys on either side of the line."""

    config: Config
    applied: list[str]
    needs_restart: list[str]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        flat: dict[str, Any] = {}
        for key, inner in value.items():
            flat.update(_flatten(inner, f"{prefix}{key}."))
        return flat
    return {prefix.rstrip("."): value}


def changed_keys(old: Config, new: Config) -> list[str]:
    """Dotted keys whose value differs (SecretStr compares by secret; values are never returned)."""
    before, after = _flatten(old.model_dump(by_alias=True)), _flatten(new.model_dump(by_alias=True))
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))


def plan(old: Config, new: Config) -> ReloadPlan:
    """`old` with only the live keys taken from `new`; the rest keeps running as started."""
    changed = changed_keys(old, new)
    applied = [key for key in changed if _live(key)]
    effective = old.model_copy(
        update={
            "admin": new.admin,
            "retry": new.retry,
            "context_messages": new.context_messages,
            "groups": new.groups,
            "budget": new.budget,
        }
    )
    return ReloadPlan(effective, applied, [key for key in changed if not _live(key)])
