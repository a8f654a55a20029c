"""Plain data passed between channels, router, store and queue."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A chat message as every channel normalizes it; `chat_id` is namespaced (`tg:…`, `slack:…`)."""

    chat_id: str
    external_id: str
    sender_id: str
    sender_name: str
    text: str
    timestamp: float
    channel: str
    chat_name: str = ""
    is_from_bot: bool = False


@dataclass(frozen=True, slots=True)
class Group:
    """A registered chat whose assistant gets its own folder and sandbox."""

    folder: str
    chat_id: str
    name: str
    trigger: str
    requires_trigger: bool = True
    is_main: bool = False
    extra_mounts: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    chat_id: str
    sender_name: str
    text: str
    timestamp: float
    status: str


@dataclass(frozen=True, slots=True)
class ClaimedRun:
    """The batch of messages one agent turn answers; `triggers` are the ones that asked for it."""

    run_id: int
    group: Group
    messages: list[StoredMessage]


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    id: int
    run_id: int | None
    chat_id: str
    text: str
    attempts: int
