"""What an approval prompt looks like in Telegram: its text, its buttons, and a click's data.

Kept apart from the channel's transport (channels/telegram.py, channels/telegram_outbound.py)
because this is where the agent's own words meet the owner's screen: the title and details
come (in part) from the requesting sandbox, so everything here is escaped and bounded, and a
button's callback data is parsed strictly before any approval id reaches the gateway.
"""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime
from typing import Literal

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from channels.base import ApprovalOutcome, ApprovalPrompt
from channels.telegram_format import LIMIT

CALLBACK_PREFIX = "ap:"
_CALLBACK = re.compile(r"ap:([A-Za-z0-9_-]{1,56}):([adf])")
_DECISIONS: dict[str, Literal["approve", "deny", "allow"]] = {"a": "approve", "d": "deny", "f": "allow"}


def keyboard(prompt: ApprovalPrompt) -> InlineKeyboardMarkup:
    """Approve / Deny, and "allow for N minutes" where the request offers it."""
    rows = [
        [
            InlineKeyboardButton("✅ Approve", callback_data=_callback(prompt.id, "a")),
            InlineKeyboardButton("❌ Deny", callback_data=_callback(prompt.id, "d")),
        ]
    ]
    if prompt.allow_label:
        rows.append(
            [InlineKeyboardButton(f"⏱ {prompt.allow_label}", callback_data=_callback(prompt.id, "f"))]
        )
    return InlineKeyboardMarkup(rows)


def pending_text(prompt: ApprovalPrompt) -> str:
    expires = datetime.fromtimestamp(prompt.expires_at, UTC).strftime("%H:%M UTC")
    return _approval_text(prompt, f"Expires at {expires}. Approve or deny below, or /approve {prompt.id}.")


def decided_text(prompt: ApprovalPrompt, outcome: ApprovalOutcome) -> str:
    when = datetime.fromtimestamp(outcome.decided_at, UTC).strftime("%Y-%m-%d %H:%M UTC")
    if outcome.state == "expired":
        status = f"⌛ Expired at {when} (denied)"
    else:
        mark = "✅ Approved" if outcome.state == "approved" else "❌ Denied"
        status = f"{mark} by {outcome.decided_by or 'unknown'} at {when}"
    if outcome.note:
        status += f" ({outcome.note})"
    return _approval_text(prompt, status)


def parse_callback(data: str | None) -> tuple[str, Literal["approve", "deny", "allow"]] | None:
    """(approval id, decision) of one of our buttons; None for anything else."""
    match = _CALLBACK.fullmatch(data or "")
    if match is None:
        return None
    return match.group(1), _DECISIONS[match.group(2)]


def _callback(approval_id: str, action: str) -> str:
    data = f"{CALLBACK_PREFIX}{approval_id}:{action}"
    if len(data.encode()) > 64:
        raise ValueError(f"approval id {approval_id!r} too long for Telegram callback data (64 bytes)")
    return data


def _approval_text(prompt: ApprovalPrompt, status: str) -> str:
    """The title and details come (in part) from the requesting agent: escaped, and inside
    <code>/<pre>, where Telegram makes no links, @mentions, hashtags or clickable /commands
    of them, so the agent's text can neither link elsewhere nor pass for our status line."""
    head = (
        f"🔐 <b>Approval needed</b> ({html.escape(prompt.id)})\n"
        f"<code>{html.escape(prompt.title)}</code>\n"
        f"Requested by group <code>{html.escape(prompt.requester_group)}</code>\n\n"
    )
    tail = f"\n\n{html.escape(status)}"
    room = LIMIT - len(head) - len(tail) - 20
    details = html.escape(prompt.details)
    while len(details) > room:  # cut the raw text, never an escaped entity
        details = html.escape(prompt.details[: len(html.unescape(details)) * 9 // 10]) + "…"
    return head + (f"<pre>{details}</pre>" if details.strip() else "") + tail
