"""The gateway's side of the dashboard: what its pages read, and the one path they decide through.

`dashboard/` imports nothing from `gateway`; this module implements its `Backend` Protocol from
the running gateway's own objects (names it through `gateway.running.RunningGateway`), so the
dashboard's reach is exactly the methods here.

Who a dashboard user is. A login link is minted by `clawgate dashboard url`, i.e. by someone with
a shell on the gateway's machine and access to its data dir — the owner of the install, already
the console owner (`console:owner`, always an admin) and already able to do anything the CLI
does. A link acts as `console:owner` unless it names another admin (`--as tg:123`, which must be
in `[admin] users`). Each decision is then a `ButtonPress` from that identity in the main chat,
handed to `Approvals.on_button` — the chat buttons' exactly-once path, which checks the identity
is an admin at that moment (so removing someone from `[admin] users` takes effect at once). The
dashboard adds no privilege a main-chat admin does not have, and the history shows who decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Literal
from zoneinfo import ZoneInfo

from channels.base import ButtonPress
from core.budget import GLOBAL
from core.models import Approval, InboundMessage
from dashboard.activity import SpendHistory, TurnActivity
from dashboard.backend import (
    ApprovalView,
    AuditQuery,
    AuditView,
    BudgetLine,
    ChannelState,
    DeadLetterView,
    Feed,
    GroupCommand,
    GroupSpend,
    GroupsView,
    Overview,
    SandboxState,
    SecretForm,
    SpendLine,
    SpendView,
    TaskRow,
    TaskRunRow,
    TaskState,
    VaultView,
)
from dashboard.server import DashboardServer, DashboardUnavailable
from dashboard.wallet_view import WalletQuery, WalletView
from gateway import (
    budget,
    dashboard_activity,
    dashboard_groups,
    dashboard_vault,
    dashboard_wallet,
    dead_letters,
)
from gateway.approvals import REFUSE_USER, UNKNOWN
from gateway.budget_state import budget_statuses
from gateway.running import RunningGateway
from gateway.sandboxes import group_runtime
from gateway.store.budgets import SpendRow
from proxy.process import VaultUnavailable

VAULT_PROBE_S = 2.0
NEXT_TASKS = 5
HISTORY = 50
TASK_RUNS = 5

__all__ = ["DashboardUnavailable", "GatewayDashboard", "serve"]


class GatewayDashboard:
    """`dashboard.backend.Backend` over a running gateway."""

    def __init__(self, gw: RunningGateway) -> None:
        self._gw = gw
        self.feed = Feed()
        self._memory = dashboard_activity.MemoryReader()

    def publish(self, message: InboundMessage, status: str) -> None:
        """A message the router stored: shown live if it belongs to a registered group."""
        if status == "bot" or message.is_from_bot:
            return
        group = self._gw.registry.for_chat(message.chat_id)
        if group is None:
            return
        self.feed.publish(group.folder, message.sender_name or message.sender_id, message.text)

    async def overview(self) -> Overview:
        gw = self._gw
        now = time.time()
        settings = gw.config.sandbox
        live_now = gw.pool.live
        memory = await self._memory.read(live_now)
        sandboxes = [
            SandboxState(
                group=folder,
                backend=settings.backend,
                runtime=(
                    f"{settings.runtime} · {group_runtime(gw.config, live.group)}"
                    if settings.backend == "docker"
                    else group_runtime(gw.config, live.group)
                ),
                uptime_s=now - live.started_at,
                memory_bytes=memory.get(folder),
            )
            for folder, live in sorted(live_now.items())
        ]
        vault_up = False
        with contextlib.suppress(VaultUnavailable, OSError, TimeoutError):
            vault_up = await asyncio.wait_for(gw.vault.healthy(), VAULT_PROBE_S)
        stats = await gw.store.stats()
        tasks = [t for t in await gw.store.tasks(statuses=["active"]) if t.next_run_at is not None]
        tasks.sort(key=lambda t: t.next_run_at or 0.0)
        day = budget.day_period(now, ZoneInfo(gw.config.budget.timezone))
        spend: dict[str, GroupSpend] = {}
        for row in await gw.store.spend_by_model(None, day.start):
            was = spend.get(row.group, GroupSpend(row.group, 0.0, 0, 0))
            spend[row.group] = GroupSpend(
                row.group,
                was.cost_usd + row.cost_micros / 1_000_000,
                was.tokens + row.tokens,
                was.calls + row.calls,
            )
        return Overview(
            channels=[ChannelState(c.name, bool(c.connected)) for c in gw.channels],
            sandboxes=sandboxes,
            lanes_running=len(gw.queue.busy),
            lanes_waiting=len(gw.queue.waiting),
            dead_letters=sum(stats.get("dead_letters", {}).values()),
            next_tasks=[TaskState(t.id, t.folder, t.kind, t.spec, t.next_run_at) for t in tasks[:NEXT_TASKS]],
            vault_up=vault_up,
            vault_restarts=gw.vault.restarts,
            spend_today=sorted(spend.values(), key=lambda s: -s.cost_usd),
            spend_day=day.key,
            uptime_s=now - gw.started_at,
        )

    async def approvals(self) -> tuple[list[ApprovalView], list[ApprovalView]]:
        pending = await self._gw.store.pending_approvals()
        decided = await self._gw.store.decided_approvals(HISTORY)
        return (
            [_view(a) for a in sorted(pending, key=lambda a: -a.created_at)],
            [_view(a) for a in decided],
        )

    async def decide(self, approval_id: str, decision: Literal["approve", "deny"], user: str) -> str:
        main = self._gw.registry.main
        if main is None:
            return UNKNOWN
        press = ButtonPress(approval_id, decision, user_id=user, user_name="dashboard", chat_id=main.chat_id)
        return await self._gw.approvals.on_button(press)

    async def dead_letters(self) -> list[DeadLetterView]:
        return [DeadLetterView(*row) for row in reversed(await self._gw.store.dead_letters())]

    async def dead_letter_action(self, letter_id: int, action: Literal["retry", "drop"], user: str) -> str:
        """The main chat's `/retry` and `/drop` (gateway/commands.py), by an admin only."""
        if not self._gw.approvals.is_admin(user):  # e.g. removed from [admin] users since the login
            return REFUSE_USER
        if action == "retry":
            done = await dead_letters.retry(self._gw, letter_id)
            return f"dead letter #{letter_id} queued again" if done else f"no dead letter #{letter_id}"
        if await self._gw.store.drop_dead_letter(letter_id):  # what /drop does
            return f"dropped dead letter #{letter_id}"
        return f"no dead letter #{letter_id}"

    async def tasks(self) -> list[TaskRow]:
        rows = []
        for t in reversed(await self._gw.store.tasks()):
            runs = (await self._gw.store.task_runs(t.id))[-TASK_RUNS:]
            rows.append(
                TaskRow(
                    t.id,
                    t.folder,
                    t.prompt[:200],
                    t.kind,
                    t.spec,
                    t.status,
                    t.next_run_at,
                    [
                        TaskRunRow(r.scheduled_for, r.started_at, r.status, (r.error or r.result or "")[:200])
                        for r in reversed(runs)
                    ],
                )
            )
        return rows

    async def task_action(self, task_id: int, action: Literal["pause", "resume", "cancel"], user: str) -> str:
        """What `/pause`, `/resume`, `/cancel` do (gateway/commands.py): the scheduler's update."""
        if not self._gw.approvals.is_admin(user):
            return REFUSE_USER
        try:
            task = await self._gw.scheduler.update(task_id, action)
        except ValueError as exc:
            return str(exc)
        return f"task {task['id']}: {task['status']}"

    async def spend(self) -> SpendView:
        """The numbers of `clawgate usage` (gateway/usage_report.py), laid out for a page."""
        gw = self._gw
        now = time.time()
        zone = ZoneInfo(gw.config.budget.timezone)
        day, month = budget.day_period(now, zone), budget.month_period(now, zone)
        return SpendView(
            day=day.key,
            month=month.key,
            today=[_line(r) for r in await gw.store.spend_by_model(None, day.start)],
            this_month=[_line(r) for r in await gw.store.spend_by_model(None, month.start)],
            budgets=[line for lines in (await self._budget_lines(now)).values() for line in lines],
        )

    async def _budget_lines(self, now: float) -> dict[str, list[BudgetLine]]:
        """Scope -> its budgets' state in the chat's words, for the Spend and Groups pages."""
        gw = self._gw
        folders = [g.folder for g in gw.registry.all()]
        statuses = await budget_statuses(gw.config.budget, gw.store, folders, now)
        return {
            scope: [
                BudgetLine(
                    s.scope,
                    budget.describe(s),
                    s.period.key,
                    s.share,
                    s.exhausted,
                    budget.SHARED if s.scope == GLOBAL else "",
                    "usd" if s.unit == "usd_micros" else "tokens",
                    s.kind.startswith("daily"),
                    s.spent,
                )
                for s in scoped
            ]
            for scope, scoped in statuses.items()
        }

    async def groups(self) -> GroupsView:
        return await dashboard_groups.groups_view(self._gw, await self._budget_lines(time.time()))

    async def group_command(self, command: GroupCommand, user: str) -> str:
        return await dashboard_groups.run(self._gw, command, user)

    async def turn_activity(self) -> list[TurnActivity]:
        return await dashboard_activity.turn_activity(self._gw, time.time())

    async def spend_history(self) -> SpendHistory:
        return await dashboard_activity.spend_history(self._gw, time.time())

    async def vault(self) -> VaultView:
        return await dashboard_vault.vault_view(self._gw)

    async def audit(self, q: AuditQuery) -> AuditView:
        return await dashboard_vault.audit_view(self._gw, q)

    async def vault_add(self, form: SecretForm, value: str, user: str) -> str:
        return await dashboard_vault.add(self._gw, form, value, user)

    async def vault_rotate(self, name: str, value: str, user: str) -> str:
        return await dashboard_vault.rotate(self._gw, name, value, user)

    async def vault_scope(self, name: str, groups: str, user: str) -> str:
        return await dashboard_vault.scope(self._gw, name, groups, user)

    async def vault_remove(self, name: str, user: str) -> str:
        return await dashboard_vault.remove(self._gw, name, user)

    async def wallet(self, q: WalletQuery) -> WalletView:
        return await dashboard_wallet.wallet_view(self._gw, q)


def _line(row: SpendRow) -> SpendLine:
    return SpendLine(row.group, row.model, row.tokens, row.cost_micros / 1_000_000, row.calls, row.estimated)


def _view(a: Approval) -> ApprovalView:
    return ApprovalView(
        id=a.id,
        title=a.title,
        details=a.details,
        requester_group=a.requester_group,
        created_at=a.created_at,
        expires_at=a.expires_at,
        state=a.state,
        decided_by=a.decided_by,
        decided_at=a.decided_at,
    )


async def serve(gw: RunningGateway) -> tuple[GatewayDashboard, DashboardServer]:
    """Bind the dashboard (or DashboardUnavailable); it serves once the gateway has started."""
    backend = GatewayDashboard(gw)
    server = DashboardServer(gw.config.dashboard, gw.data_dir, backend)
    await server.start()
    return backend, server
