"""The narrow interface between the dashboard and the gateway: plain view data and one Protocol.

The dashboard package imports nothing from `gateway` (tests/unit/test_layering.py): the gateway
implements `Backend` (gateway/dashboard_backend.py) and hands it over. Everything a page shows is
one of these records, built by the gateway from what it already tracks, so what the dashboard can
read — and, through `decide`, change — is listed here in one place. No record has a field for a
secret value, key material or a token; the dashboard cannot show what it is never given.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal, Protocol

from dashboard.activity import SpendHistory, TurnActivity
from dashboard.wallet_view import WalletQuery, WalletView


@dataclass(frozen=True)
class ChannelState:
    name: str
    connected: bool


@dataclass(frozen=True)
class SandboxState:
    group: str
    backend: str  # docker | bwrap
    runtime: str  # runc | runsc for docker; the agent runtime beside it
    uptime_s: float
    memory_bytes: int | None = None  # None: could not be read in time (shown as "—")


@dataclass(frozen=True)
class TaskState:
    id: int
    group: str
    kind: str
    spec: str
    next_run_at: float | None


@dataclass(frozen=True)
class TaskRow:
    """A scheduled task with its last runs (newest first) for the Tasks page."""

    id: int
    group: str
    prompt: str
    kind: str
    spec: str
    status: str  # active | paused | cancelled | done
    next_run_at: float | None
    runs: list[TaskRunRow]


@dataclass(frozen=True)
class TaskRunRow:
    scheduled_for: float
    started_at: float
    status: str  # running | ok | error
    outcome: str  # the result's or the error's first characters


@dataclass(frozen=True)
class SpendLine:
    group: str
    model: str
    tokens: int
    cost_usd: float
    calls: int
    estimated: int = 0  # of the calls: cut before their final usage, counted with the vault's estimate


@dataclass(frozen=True)
class BudgetLine:
    """One limit in force, worded as `/budget` and `/usage` word it (gateway/budget.py `describe`)."""

    scope: str  # a group folder or "global" (all groups together)
    text: str  # e.g. "daily $2.00 (used $0.40, 20%)": the /budget set word, not the config key
    period: str  # the day or month it counts: 2026-03-29, 2026-03
    share: float  # used / limit, for the meter
    exhausted: bool
    shared: str  # "" for a group's own limit; for a global one how it is marked ("shared by all groups")
    unit: str = "usd"  # usd | tokens: what `spent` counts (micro-USD or tokens)
    daily: bool = True  # counts today (else this month)
    spent: int = 0  # all of it used in the period, in `unit` (a group's share is measured against it)


@dataclass(frozen=True)
class SpendView:
    day: str
    month: str
    today: list[SpendLine]
    this_month: list[SpendLine]
    budgets: list[BudgetLine]


@dataclass(frozen=True)
class GroupSpend:
    group: str
    cost_usd: float
    tokens: int
    calls: int


@dataclass(frozen=True)
class Overview:
    channels: list[ChannelState]
    sandboxes: list[SandboxState]
    lanes_running: int
    lanes_waiting: int
    dead_letters: int
    next_tasks: list[TaskState]
    vault_up: bool
    vault_restarts: int
    spend_today: list[GroupSpend]
    spend_day: str  # the budget day the spend is counted in (its time zone's date)
    uptime_s: float


@dataclass(frozen=True)
class ApprovalView:
    id: str
    title: str
    details: str
    requester_group: str
    created_at: float
    expires_at: float
    state: str
    decided_by: str | None
    decided_at: float | None


@dataclass(frozen=True)
class DeadLetterView:
    id: int
    kind: str  # run (a group's unanswered messages) | reply (an undelivered reply)
    ref: str  # the group folder (run) or the chat (reply)
    reason: str


@dataclass(frozen=True)
class SecretView:
    """A stored secret as the Vault page lists it: metadata only (the store never decrypts here)."""

    name: str
    rules: list[str]  # each rule described: host, path, methods, action, header/format, approval
    groups: list[str]
    created_at: str
    last_used: str


@dataclass(frozen=True)
class VaultView:
    secrets: list[SecretView]
    settings: list[tuple[str, str]]  # [vault] keys and their values (egress, rate limit, sizes …)
    policies: list[str]  # [[vault.policy]] entries, one line each
    error: str | None  # the secrets file could not be read (its reason, never a value)


@dataclass(frozen=True)
class SecretForm:
    """The Vault page's add form: the options of `clawgate vault add`, as posted (unvalidated)."""

    name: str
    host: str
    path: str
    methods: tuple[str, ...]
    action: str
    header: str
    fmt: str
    query_param: str
    preset: str
    groups: str
    replace: bool
    approve: bool


@dataclass(frozen=True)
class AuditQuery:
    """The audit log's filters and page, as given in the URL (validated by the backend)."""

    group: str = ""
    host: str = ""
    status: str = ""  # 403, 4xx or none
    kind: str = ""  # refused | leak | approval | unmetered
    offset: int = 0


@dataclass(frozen=True)
class AuditRow:
    ts: str
    group: str
    method: str
    host: str
    path: str
    status: str
    ms: str
    secret: str
    refusal: str
    approval: str
    spend: str  # "unmetered: …" for a model-provider call the vault could not meter (no budget applied)


@dataclass(frozen=True)
class AuditView:
    rows: list[AuditRow]
    offset: int
    limit: int
    has_more: bool
    note: str | None  # a refused filter, or the scan bound reached


@dataclass(frozen=True)
class MountLine:
    """One extra mount as groups/mounts.py decided it when the group's sandbox would start."""

    host_path: str
    container_path: str  # where it lands (granted) or what was asked for (refused)
    mode: str  # ro | rw; "" when refused
    reason: str  # why refused (the allowlist check's own words); "" when granted


@dataclass(frozen=True)
class WaitingSender:
    """An unknown sender held in an `approval` group, as `/senders <group>` lists them."""

    sender_id: str
    name: str  # the display name they chose (hostile text: escaped by the template, clipped)
    count: int  # held messages
    asked: bool  # their Allow/Deny prompt is open in the main chat


@dataclass(frozen=True)
class GroupView:
    folder: str
    chat_id: str
    channel: str  # the chat id's namespace: tg, slack, console
    is_main: bool
    trigger: str | None  # None: answers every message (no trigger)
    policy: str  # open | members | approval; the main chat: admins
    senders: str  # the policy as /senders says it
    listed: list[tuple[str, str]]  # (sender id, allowed | blocked)
    runtime: str  # the agent runtime it runs: builtin | claude
    runtime_set: str  # its own setting: builtin | claude | default ([agent] runtime)
    backend: str  # the sandbox backend (and the Docker runtime)
    live: bool  # a sandbox is running for it now
    granted: list[MountLine]
    refused: list[MountLine]
    mount_notes: list[str]  # the allowlist's error, downgrades to read-only, missing roots
    budgets: list[BudgetLine]  # its own limits in force (the Spend page's lines)
    spent_today: str
    spent_month: str
    shared_use: list[str] = field(default_factory=list)  # per GroupsView.shared line: this group's part
    waiting: list[WaitingSender] = field(default_factory=list)  # held senders, oldest first (the first few)
    waiting_total: int = 0  # all held senders
    waiting_asked: int = 0  # of them, with an open prompt; the rest wait past the cap
    prompt_cap: int = 0  # [groups] max_open_sender_prompts


@dataclass(frozen=True)
class GroupsView:
    groups: list[GroupView]
    shared: list[BudgetLine]  # [budget.global] limits in force: they limit every group, shown on each card
    day: str
    month: str
    default_trigger: str
    default_runtime: str
    default_policy: str


GroupCommandName = Literal["register", "unregister", "senders", "allow", "block", "budget", "set"]


@dataclass(frozen=True)
class GroupCommand:
    """A change from the Groups page: a chat admin command's name and argument list, exactly as a
    main-chat admin would type them (`set`: `clawgate groups set`'s NAME --runtime R), unvalidated —
    the command's own code validates them."""

    name: GroupCommandName
    args: tuple[str, ...]


@dataclass(frozen=True)
class FeedItem:
    """One group message for the live feed (already stored by the gateway when published)."""

    group: str
    sender: str
    text: str
    at: float


class Backend(Protocol):
    """What the running gateway offers the dashboard."""

    feed: Feed

    async def overview(self) -> Overview: ...

    async def approvals(self) -> tuple[list[ApprovalView], list[ApprovalView]]:
        """(pending, recently decided) — newest first."""
        ...

    async def decide(self, approval_id: str, decision: Literal["approve", "deny"], user: str) -> str:
        """Decide as admin `user` through the chat buttons' path; returns what a clicker is told."""
        ...

    async def dead_letters(self) -> list[DeadLetterView]: ...

    async def dead_letter_action(self, letter_id: int, action: Literal["retry", "drop"], user: str) -> str:
        """`/retry` or `/drop` as admin `user` (the chat commands' code); returns their answer."""
        ...

    async def tasks(self) -> list[TaskRow]: ...

    async def spend(self) -> SpendView:
        """Metered spend per group and model today and this month, and every budget's state."""
        ...

    async def turn_activity(self) -> list[TurnActivity]:
        """Turns ended, failed and their latency over the last hour and day (dashboard/activity.py)."""
        ...

    async def spend_history(self) -> SpendHistory:
        """Metered cost per group, model and budget day over the last 30 days."""
        ...

    async def task_action(self, task_id: int, action: Literal["pause", "resume", "cancel"], user: str) -> str:
        """`/pause`, `/resume` or `/cancel` as admin `user` (the scheduler's own update)."""
        ...

    async def vault(self) -> VaultView:
        """The secrets' metadata and the vault's egress, rate and approval policies."""
        ...

    async def audit(self, q: AuditQuery) -> AuditView:
        """One page of the vault's audit log, newest first, read without loading it whole."""
        ...

    async def vault_add(self, form: SecretForm, value: str, user: str) -> str:
        """`clawgate vault add` as admin `user`; returns a line naming the secret (never the value)."""
        ...

    async def vault_rotate(self, name: str, value: str, user: str) -> str:
        """`clawgate vault rotate`."""
        ...

    async def vault_scope(self, name: str, groups: str, user: str) -> str:
        """`clawgate vault scope`."""
        ...

    async def vault_remove(self, name: str, user: str) -> str:
        """`clawgate vault remove`."""
        ...

    async def groups(self) -> GroupsView:
        """Every registered group: registration, trigger, senders, runtime, mounts, budget."""
        ...

    async def group_command(self, command: GroupCommand, user: str) -> str:
        """The chat command (or `clawgate groups set`) as admin `user`; returns its answer."""
        ...

    async def wallet(self, q: WalletQuery) -> WalletView:
        """`/wallet` and `/policy` as the chat shows them, and one page of the wallet's requests."""
        ...


FEED_TEXT_CHARS = 500
FEED_KEEP = 50
SUBSCRIBER_QUEUE = 100


@dataclass
class Feed:
    """Recent group messages and the live subscribers (server-sent event streams) to push them to.

    A subscriber that does not keep up loses items rather than growing the gateway's memory:
    its queue is bounded and a full queue drops the new item for that subscriber only.
    """

    recent: deque[FeedItem] = field(default_factory=lambda: deque(maxlen=FEED_KEEP))
    _subscribers: set[asyncio.Queue[FeedItem]] = field(default_factory=set)

    def publish(self, group: str, sender: str, text: str, at: float | None = None) -> None:
        item = FeedItem(group, sender, text[:FEED_TEXT_CHARS], time.time() if at is None else at)
        self.recent.append(item)
        for queue in self._subscribers:
            if not queue.full():
                queue.put_nowait(item)

    def subscribe(self) -> asyncio.Queue[FeedItem]:
        queue: asyncio.Queue[FeedItem] = asyncio.Queue(SUBSCRIBER_QUEUE)
        self._subscribers.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[FeedItem]) -> None:
        self._subscribers.discard(queue)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)
