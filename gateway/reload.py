"""What a SIGHUP may change in a running gateway, and what needs a restart.

Only settings that are read afresh on every use are applied live; everything that shaped a
component at start-up (channels, sandbox backend, vault, model endpoint, tokens) would need
that component rebuilt under running turns, so a change to it is reported, not half-applied.
The list is explicit on purpose: a new key is "needs a restart" until someone proves it is safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import Config, ConfigError
from core.config import load as load_config

log = logging.getLogger(__name__)

# Read on every turn, command or send; replacing the value is all it takes.
LIVE_KEYS: frozenset[str] = frozenset(
    {
        "admin.users",  # who may run admin commands / decide approvals: checked per message
        "context_messages",  # read when a turn claims its batch
        "groups.default_sender_policy",  # read when a group is registered
        "groups.sender_approval_timeout_s",  # read when an unknown sender's prompt is posted
        "groups.max_open_sender_prompts",  # read whenever a sender prompt may open (app pumps)
        "groups.max_open_sender_prompts_total",
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


def reread(config_dir: Path, current: Config, adjust: Callable[[Config], Config]) -> Config | None:
    """Re-read config.toml for a SIGHUP: the configuration to run with from now on, or None.

    An invalid file changes nothing: the gateway keeps the configuration it runs with (None).
    Otherwise every key that needs a restart is named, and the returned Config keeps its old
    value for those, so nothing is half-applied.
    """
    try:
        new = adjust(load_config(config_dir))
    except ConfigError as exc:
        log.error("reload refused, still running with the previous configuration: %s", exc)
        return None
    result = plan(current, new)
    for key in result.needs_restart:
        log.warning("%s changed: needs a restart", key)
    log.warning(
        "configuration reloaded: %s",
        "applied " + ", ".join(result.applied) if result.applied else "nothing to apply live",
    )
    return result.config
