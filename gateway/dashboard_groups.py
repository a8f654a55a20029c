"""The dashboard's Groups page, gateway side: what each group is, and changes through the chat's code.

Reading: a group's registration, trigger and sender lists come from the registry and the sender
gate; its mounts are decided by `groups.mounts.plan_mounts` — the very call a sandbox start makes,
with the same allowlist, dirs and project root — so "refused and why" is the reason that start
would log; its budget lines are the Spend page's (gateway/dashboard_backend.py passes them in),
worded as `/budget` words them. Every card also lists the `[budget.global]` limits, marked as
shared by all groups: they stop this group's calls too, so one card shows every limit that can,
with this group's own part of what each has used (who eats a shared limit). An `approval`
group's card lists the unknown senders waiting for a decision from `SenderGate.waiting` — the
reading `/senders <group>` prints — with Allow / Block forms that are the typed-id forms below.

Changing: each form becomes a `GroupCommand` — a chat admin command's name and argument list —
run by `AdminCommands.execute` as a message from the session's admin in the main chat. That is
the code `/register`, `/unregister`, `/senders`, `/allow`, `/block` and `/budget set` run in the
chat: the same admin check (someone removed from `[admin] users` is refused), the same
validation, the same answer (a usage line and the reason on bad input, with nothing written).
The chat has no command for a group's runtime; that is `clawgate groups set --runtime`, whose
code (gateway/group_settings.py) runs here followed by the reload the CLI asks a running gateway
for. Nothing else is reachable: any other name is refused before anything runs.
"""

from __future__ import annotations

import asyncio
import logging
import shlex
import time
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from core.budget import GLOBAL, LimitKind, format_limit
from core.models import Group, InboundMessage
from dashboard.backend import BudgetLine, GroupCommand, GroupsView, GroupView, MountLine, WaitingSender
from gateway import budget
from gateway.commands import AdminCommands, Command
from gateway.control_requests import reload_groups
from gateway.group_settings import set_group
from gateway.running import RunningGateway
from gateway.sandboxes import group_runtime
from gateway.sender_queue import SHOWN_HELD
from groups.mounts import ALLOWLIST_FILE, MountPlan, plan_mounts

log = logging.getLogger(__name__)

CHAT_COMMANDS = frozenset({"register", "unregister", "senders", "allow", "block", "budget"})
REFUSED = "Sorry, only an admin in the main chat may change groups."
DASHBOARD_CHANNEL = "dashboard"


async def groups_view(gw: RunningGateway, budgets: dict[str, list[BudgetLine]]) -> GroupsView:
    now = time.time()
    zone = ZoneInfo(gw.config.budget.timezone)
    day, month = budget.day_period(now, zone), budget.month_period(now, zone)
    today, this_month = await gw.store.spend_since(day.start), await gw.store.spend_since(month.start)
    shared = budgets.get(GLOBAL, [])
    views = []
    for group in sorted(gw.registry.all(), key=lambda g: (not g.is_main, g.folder)):
        plan = await asyncio.to_thread(_plan, gw, group)
        spent = today.get(group.folder), this_month.get(group.folder)
        view = _view(gw, group, plan, budgets.get(group.folder, []), *spent)
        views.append(
            replace(view, shared_use=[_share(line, *spent) for line in shared], **await _waiting(gw, group))
        )
    return GroupsView(
        groups=views,
        shared=shared,
        day=day.key,
        month=month.key,
        default_trigger=gw.config.default_trigger,
        default_runtime=gw.config.agent.runtime,
        default_policy=gw.config.groups.default_sender_policy,
    )


def _plan(gw: RunningGateway, group: Group) -> MountPlan:
    """What `SandboxPool` decides at this group's next sandbox start (gateway/sandboxes.py)."""
    return plan_mounts(
        group, gw.config_dir / ALLOWLIST_FILE, gw.config_dir, gw.data_dir, gw.config.mounts.project_root
    )


def _view(
    gw: RunningGateway,
    group: Group,
    plan: MountPlan,
    budgets: list[BudgetLine],
    today: tuple[int, int] | None,
    month: tuple[int, int] | None,
) -> GroupView:
    sandbox = gw.config.sandbox
    # The allowlist's state matters only to a group that asks for extra mounts.
    asked = bool(plan.granted or plan.refused)
    notes = ([f"allowlist: {plan.allowlist_error}"] if plan.allowlist_error and asked else []) + list(
        plan.notes
    )
    return GroupView(
        folder=group.folder,
        chat_id=group.chat_id,
        channel=group.chat_id.split(":", 1)[0],
        is_main=group.is_main,
        trigger=group.trigger if group.requires_trigger else None,
        policy="admins" if group.is_main else group.senders,
        senders=gw.senders.describe(group),
        listed=sorted(gw.senders.senders(group.folder).items()),
        runtime=group_runtime(gw.config, group),
        runtime_set=group.runtime or "default",
        backend=f"docker ({sandbox.runtime})" if sandbox.backend == "docker" else sandbox.backend,
        live=group.folder in gw.pool.live,
        granted=[
            MountLine(str(m.host_path), m.container_path, "ro" if m.read_only else "rw", "")
            for m in plan.granted
        ],
        refused=[MountLine(r.host_path, r.container_path or "", "", reason) for r, reason in plan.refused],
        mount_notes=notes,
        budgets=budgets,
        spent_today=_spent(today),
        spent_month=_spent(month),
    )


def _share(line: BudgetLine, today: tuple[int, int] | None, month: tuple[int, int] | None) -> str:
    """This group's part of what a shared limit has used, counted as the limit counts."""
    tokens, micros = (today if line.daily else month) or (0, 0)
    kind: LimitKind = "daily_usd" if line.unit == "usd" else "daily_tokens"  # only the unit matters here
    mine = micros if line.unit == "usd" else tokens
    return f"this group: {format_limit(kind, mine)} of {format_limit(kind, max(line.spent, 0))} used"


async def _waiting(gw: RunningGateway, group: Group) -> dict[str, Any]:
    """The unknown senders held in the group: `/senders <group>`'s reading, the first few named."""
    if group.is_main:
        return {}
    waiting = await gw.senders.waiting(group)
    return {
        "waiting": [
            WaitingSender(w.sender_id, w.name or "(none)", w.count, w.asked) for w in waiting[:SHOWN_HELD]
        ],
        "waiting_total": len(waiting),
        "waiting_asked": sum(1 for w in waiting if w.asked),
        "prompt_cap": gw.config.groups.max_open_sender_prompts,
    }


def _spent(spend: tuple[int, int] | None) -> str:
    tokens, micros = spend or (0, 0)
    return f"${micros / 1_000_000:,.2f} · {tokens:,} tokens"


async def run(gw: RunningGateway, command: GroupCommand, user: str) -> str:
    """Run `command` as admin `user`; returns the answer the chat (or the CLI) would give."""
    if command.name == "set":
        answer = await _groups_set(gw, list(command.args), user)
    elif command.name in CHAT_COMMANDS:
        answer = await _chat_command(gw, command.name, list(command.args), user)
    else:  # the Literal type keeps the page from asking; a bug must not run anything else
        answer = f"unknown group command {command.name!r}"
    log.info("dashboard: %s: %s → %s", user, command.name, answer.splitlines()[0] if answer else "")
    return answer


async def _chat_command(gw: RunningGateway, name: str, args: list[str], user: str) -> str:
    """The main chat's `/name args…` from `user`: `AdminCommands` checks that `user` is an admin."""
    main = gw.registry.main
    if main is None:
        return REFUSED
    message = InboundMessage(
        chat_id=main.chat_id,
        external_id=f"dashboard-{time.time_ns()}",
        sender_id=user,
        sender_name=DASHBOARD_CHANNEL,
        text=f"/{name} {shlex.join(args)}",
        timestamp=time.time(),
        channel=DASHBOARD_CHANNEL,
    )
    # A fresh instance: AdminCommands remembers who runs the command it is executing.
    reply = await AdminCommands(gw).execute(Command(name, args), message, main)
    return REFUSED if reply is None else reply


async def _groups_set(gw: RunningGateway, args: list[str], user: str) -> str:
    """`clawgate groups set NAME --runtime R`: the CLI's code, then the reload it asks for."""
    if not gw.approvals.is_admin(user):
        return REFUSED
    if len(args) != 3 or args[1] != "--runtime":
        return "usage: clawgate groups set NAME --runtime builtin|claude|default"
    try:
        answer = await set_group(gw.registry, args[0], args[2], None)
    except ValueError as exc:
        return str(exc)
    await reload_groups(gw)
    return answer
