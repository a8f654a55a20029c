"""Who in a group may talk to the assistant: the sender policies and the sender-id rule.

A group's *sender policy* decides which of its members' triggered messages start a turn:

    open      everyone (the default), except blocked senders
    members   only senders on the group's allow list; anyone else's messages are context only
    approval  allowed senders; an unknown sender's first triggered message asks the owner in the
              main chat (Allow / Deny) and waits; the answer is remembered

A sender is named by the namespaced id its channel gives it (`tg:123`, `slack:U123`), never by
a display name or username, which anyone can copy. Ids are checked strictly here, both where an
owner types one (`/allow`, `clawgate groups allow`, `--members`) and where a channel hands one
over: an id outside these shapes never becomes a member and is never put in a prompt.
"""

from __future__ import annotations

import re
from typing import Literal

SenderPolicy = Literal["open", "members", "approval"]
SENDER_POLICIES: tuple[SenderPolicy, ...] = ("open", "members", "approval")

SenderState = Literal["allowed", "blocked"]

# Telegram: a user id (positive) or, for channel posts and anonymous admins, the chat's id
# (negative). Slack: a user id, U… or W… and upper-case letters and digits. The console's
# local user. Nothing else: no spaces, markup, quotes or control characters can pass.
_SENDER_ID = re.compile(r"tg:-?[1-9][0-9]{0,19}|slack:[UW][A-Z0-9]{1,31}|console:[a-z][a-z0-9_-]{0,31}")
EXAMPLES = "tg:123456789 or slack:U0123ABCD"


def is_sender_id(value: str) -> bool:
    """Whether `value` is a sender id of a shape some channel produces."""
    return _SENDER_ID.fullmatch(value) is not None


def validate_sender_id(value: str) -> str:
    """`value` unchanged, or ValueError naming the expected shapes."""
    if not is_sender_id(value):
        shown = value if len(value) <= 40 else value[:40] + "…"
        raise ValueError(f"invalid sender id {shown!r}: use the channel's id, e.g. {EXAMPLES} (see /whoami)")
    return value


def parse_sender_list(text: str) -> tuple[str, ...]:
    """`tg:1,tg:2` → ("tg:1", "tg:2"): comma-separated, each id checked, duplicates dropped."""
    ids = [part.strip() for part in text.split(",")]
    if not any(ids):
        raise ValueError(f"an empty sender list: give ids separated by commas, e.g. {EXAMPLES}")
    return tuple(dict.fromkeys(validate_sender_id(i) for i in ids))


def validate_policy(value: str) -> SenderPolicy:
    for policy in SENDER_POLICIES:
        if value == policy:
            return policy
    raise ValueError(f"unknown sender policy {value!r}: use one of {', '.join(SENDER_POLICIES)}")
