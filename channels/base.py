"""The contract every chat channel (console, Telegram, Slack) fulfils.

Channels only translate: they normalize inbound messages into `InboundMessage`
(namespaced chat ids, `is_from_bot` set for the bot's own output), format and chunk
outbound text, and render approval prompts with buttons. Routing, storage,
authorization and the approval state machine live in the gateway.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from core.models import InboundMessage

OnMessage = Callable[[InboundMessage], Awaitable[object]]


class ChannelUnavailable(Exception):
    """`connect` failed for a reason the operator fixes (a refused token, an unreachable API).

    The message is the one line the failed start-up prints: it says what and where, and
    carries no secret (the gateway still redacts known secret values from it).
    """


@dataclass(frozen=True, slots=True)
class ApprovalPrompt:
    """What an owner is asked to decide. `id` is short (fits Telegram's 64-byte callback data)."""

    id: str
    title: str
    details: str
    requester_group: str
    expires_at: float
    # A third button, "Allow for 10 min" (held HTTP requests, gateway/http_approvals.py): approve
    # this one and let the same kind of request through for a while. None: no such button.
    allow_label: str | None = None


@dataclass(frozen=True, slots=True)
class ApprovalOutcome:
    state: Literal["approved", "denied", "expired"]
    decided_by: str | None  # namespaced user id, None on expiry
    decided_at: float
    note: str = ""  # shown after the outcome, e.g. "allowed for 10 min"


@dataclass(frozen=True, slots=True)
class ButtonPress:
    """A click on Approve/Deny as a channel saw it; the gateway decides whether it counts."""

    approval_id: str
    decision: Literal["approve", "deny", "allow"]  # allow: approve + the prompt's allow_label
    user_id: str  # namespaced, e.g. "tg:12345"
    user_name: str
    chat_id: str  # where the button was pressed


# Returns the short text to show the clicker (a Telegram toast, a Slack ephemeral message).
OnButton = Callable[[ButtonPress], Awaitable[str]]

# Writes one attachment into a registered group's inbox as a new file (one already there is the
# same update delivered again, and stays) and answers its path as the group's agent sees it.
# The gateway makes these (gateway/channel_setup.py): where group files live and how they are
# written safely is its business (groups.groupfs), not a channel's.
SaveAttachment = Callable[[str, bytes], Awaitable[str]]
# chat id → how to save an attachment of that chat (None: not a registered group). It may raise
# OSError with a reason to refuse the attachment (e.g. the group is over its disk quota).
GroupInbox = Callable[[str], SaveAttachment | None]


@runtime_checkable
class Channel(Protocol):
    name: str

    @property
    def connected(self) -> bool:
        """For /status; a channel keeps it true while it can receive and send (an attribute will do)."""

    async def connect(self, on_message: OnMessage, on_button: OnButton | None = None) -> None:
        """Start receiving; every inbound message is awaited through `on_message` (which persists it).

        Button presses go to `on_button` and must be handled concurrently with message
        processing: a click must never wait behind the agent turn that waits for it.
        """

    async def disconnect(self) -> None:
        """Stop receiving and release resources; idempotent."""

    async def send(self, chat_id: str, text: str) -> None:
        """Deliver text to a chat this channel owns; raises on failure so the outbox retries."""

    def owns_chat(self, chat_id: str) -> bool:
        """Whether `chat_id` (e.g. `console:main`, `tg:-100…`) belongs to this channel."""

    async def send_approval(self, chat_id: str, prompt: ApprovalPrompt) -> str:
        """Post the prompt with Approve/Deny buttons; returns a reference for `finish_approval`."""

    async def finish_approval(
        self, chat_id: str, ref: str, prompt: ApprovalPrompt, outcome: ApprovalOutcome
    ) -> None:
        """Edit the posted prompt to show the outcome, who decided and when, without buttons."""
