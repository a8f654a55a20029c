"""Plain data passed between channels, router, store and queue."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from core.senders import SenderPolicy


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
class MountRequest:
    """An extra mount a group's registration asks for; `groups.mounts` decides what is granted.

    `container_path` defaults to the host path's last component and always lands under
    `/workspace/extra/`; `read_write` is only a wish (the allowlist and group decide).
    """

    host_path: str
    container_path: str | None = None
    read_write: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "host_path": self.host_path,
            "container_path": self.container_path,
            "read_write": self.read_write,
        }

    @classmethod
    def from_json(cls, item: object) -> MountRequest:
        """A request from stored/received JSON: a plain string (old style) or an object; strict types."""
        if isinstance(item, MountRequest):
            return item
        if isinstance(item, str):
            return cls(host_path=item)
        if not isinstance(item, dict):
            raise TypeError(f"a mount request is a path string or an object, not {type(item).__name__}")
        unknown = set(item) - {"host_path", "container_path", "read_write"}
        if unknown:
            raise ValueError(f"unknown mount request keys: {', '.join(sorted(map(str, unknown)))}")
        host_path, container_path = item.get("host_path"), item.get("container_path")
        read_write = item.get("read_write", False)
        if not isinstance(host_path, str) or not host_path:
            raise ValueError("a mount request needs a non-empty string host_path")
        if container_path is not None and not isinstance(container_path, str):
            raise TypeError("container_path must be a string or null")
        if not isinstance(read_write, bool):
            raise TypeError("read_write must be true or false")
        return cls(host_path=host_path, container_path=container_path, read_write=read_write)


@dataclass(frozen=True, slots=True)
class Group:
    """A registered chat whose assistant gets its own folder and sandbox."""

    folder: str
    chat_id: str
    name: str
    trigger: str
    requires_trigger: bool = True
    is_main: bool = False
    extra_mounts: tuple[MountRequest, ...] = field(default_factory=tuple)
    runtime: str | None = None  # "builtin" | "claude"; None follows `[agent] runtime`
    senders: SenderPolicy = "open"  # who may trigger the assistant (core.senders, gateway.senders)


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


@dataclass(frozen=True, slots=True)
class ScheduledTask:
    """A task an agent (or the owner) scheduled; times are UTC epoch seconds. See `gateway.scheduler`."""

    id: int
    folder: str
    prompt: str
    kind: str  # cron | interval | once
    spec: str  # cron expression | interval seconds | ISO 8601 time
    next_run_at: float | None
    anchor: float | None  # interval tasks: slots are anchor + k * interval
    status: str  # active | paused | cancelled | done
    created_by: str
    created_at: float
    last_run_at: float | None
    last_result: str | None


@dataclass(frozen=True, slots=True)
class TaskRun:
    """One firing of a task: the slot it was due at, and how the run it caused ended."""

    id: int
    task_id: int
    scheduled_for: float
    started_at: float
    finished_at: float | None
    duration: float | None
    status: str  # running | ok | error
    result: str | None
    error: str | None
    run_id: int | None


@dataclass(frozen=True, slots=True)
class Approval:
    """An approval prompt in the main chat (gateway.approvals); `state` changes exactly once."""

    id: str
    title: str
    details: str
    requester_group: str
    created_at: float
    expires_at: float
    state: Literal["pending", "approved", "denied", "expired"]
    decided_by: str | None
    decided_at: float | None
    chat_id: str
    message_ref: str | None


@dataclass(frozen=True, slots=True)
class WalletDraft:
    """A wallet request as analyzed, before the policy verdict is recorded (gateway.wallet)."""

    group_folder: str
    key_name: str
    signer_id: str
    receiver_id: str
    kind: str  # transaction | message
    summary: str
    value: int  # yoctoNEAR counted against the daily limit
    fee: int = 0  # yoctoNEAR reserved for fees until the burnt fee is known
    tokens: Mapping[str, int] = field(default_factory=dict)  # token contract -> base units moved


@dataclass(frozen=True, slots=True)
class WalletRequest:
    """One recorded wallet request; `value` + `fee` (and `tokens`) count as spend on `spend_day`
    while signing, submitted or failed on chain."""

    id: int
    created_at: float
    group_folder: str
    key_name: str
    signer_id: str
    receiver_id: str
    kind: str
    summary: str
    value: int
    outcome: str
    reasons: tuple[str, ...]
    state: str  # denied | pending | signing | submitted | failed | rejected
    spend_day: str | None
    approval_id: str | None
    tx_hash: str | None
    error: str | None
    updated_at: float
    fee: int = 0
    tokens: Mapping[str, int] = field(default_factory=dict)
