"""Admin commands, implemented once for every channel.

A command is recognised only when the message starts with `/name` (optionally
`/name@bot`) and `name` is one of ours. Its text is stored (status `command`) but never
reaches an agent. Only admins in the main chat may run admin commands; anywhere else
they are ignored without a word, so a stranger cannot even learn they exist. `/chatid`,
`/help` and `/whoami` are harmless and work everywhere.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from channels.base import ButtonPress
from channels.console import OWNER_ID
from core.models import Group, InboundMessage
from core.senders import SenderState, parse_sender_list, validate_policy, validate_sender_id
from gateway import commands_budget, dead_letters
from gateway.sandboxes import group_runtime
from gateway.vault_usage import spend_by_group, start_of_day
from groups import groupfs
from groups.folders import group_dirs, validate_folder

if TYPE_CHECKING:
    from gateway.agent_services import TaskBook
    from gateway.running import RunningGateway

PUBLIC = ("help", "chatid", "whoami")
# The built-in agent (groups/agent/history.py) compacts its history at the next turn when this
# file exists next to it, then removes it.
COMPACT_REQUEST = ".clawgate/compact-requested"
USAGE: dict[str, str] = {
    "help": "/help — the commands you may run",
    "chatid": "/chatid — this chat's id (to register it)",
    "whoami": "/whoami — your user id and whether you are an admin",
    "status": "/status — uptime, channels, containers, queue, vault, dead letters, spend today, next tasks",
    "groups": "/groups — registered groups",
    "register": "/register <chat-id> <name> [--trigger @X] [--no-trigger] [--runtime builtin|claude] "
    "[--senders open|members|approval] [--members tg:1,tg:2]",
    "unregister": "/unregister <name>",
    "senders": "/senders <group> [open|members|approval] — who may talk to its assistant; set the policy",
    "allow": "/allow <group> <sender-id> — that sender (e.g. tg:123) may trigger its assistant",
    "block": "/block <group> <sender-id> — that sender's messages are context only there",
    "tasks": "/tasks [group]",
    "pause": "/pause <task-id>",
    "resume": "/resume <task-id>",
    "cancel": "/cancel <task-id>",
    "stop": "/stop <group> — stop that group's container now",
    "reset": "/reset <group> — clear that group's agent session",
    "compact": "/compact <group> — builtin runtime: summarise its older conversation at the next turn",
    "dlq": "/dlq — dead letters",
    "retry": "/retry <dead-letter-id>",
    "drop": "/drop <dead-letter-id>",
    "approve": "/approve <approval-id> — approve a pending request (text fallback for the button)",
    "deny": "/deny <approval-id> — deny a pending request",
    "wallet": "/wallet — NEAR keys, balances and today's spend",
    "policy": "/policy [set <name> <value> | reset <name>] — show or change the NEAR signing policy",
    "usage": "/usage [group] — model spend today, this month and the last turns, with budgets",
    "budget": "/budget [set <group|global> <daily|monthly|daily-tokens|monthly-tokens> <amount|off|default>]",
}
# Allowed in any registered group, for that group only: its members may see what it costs.
GROUP_COMMANDS = ("usage",)


def menu() -> list[tuple[str, str]]:
    """The chat service's command menu (Telegram's): only the public commands, never admin ones."""
    return [(name, USAGE[name].split("— ", 1)[-1][:256]) for name in PUBLIC]


class UsageError(Exception):
    """Bad arguments: the reply is the command's usage line."""


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: list[str]


def parse(text: str) -> Command | None:
    """`/name args…` for one of our command names, else None (the text is an ordinary message)."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    # Any whitespace ends the name: "/pause\n7" or "/register\t…" is a command, not a chat message.
    head, *tail = stripped[1:].split(None, 1) or [""]
    rest = tail[0] if tail else ""
    name = head.split("@", 1)[0].lower()
    if name not in USAGE:
        return None
    try:
        args = shlex.split(rest)
    except ValueError:
        args = ["\x00unbalanced"]  # rejected by every handler's arity/shape checks
    return Command(name, args)


def is_admin(message: InboundMessage, admins: list[str]) -> bool:
    return message.sender_id == OWNER_ID or message.sender_id in admins


def _is_trigger(word: str) -> bool:
    """`@` and a word, as `clawgate groups register --trigger` requires (no space: a trigger is
    one word, and a quoted "@a b" from the chat or a dashboard field is not one)."""
    return word.startswith("@") and len(word) > 1 and not any(c.isspace() for c in word)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Handler = Callable[["AdminCommands", list[str]], Awaitable[str]]


class AdminCommands:
    def __init__(self, gateway: RunningGateway) -> None:
        self.gw = gateway
        self._by = ""

    def allowed(self, message: InboundMessage, group: Group | None) -> list[str]:
        admin = group is not None and group.is_main and is_admin(message, self.gw.config.admin.users)
        if admin:
            return list(USAGE)
        return list(PUBLIC) + (list(GROUP_COMMANDS) if group is not None and not group.is_main else [])

    async def execute(self, command: Command, message: InboundMessage, group: Group | None) -> str | None:
        """The reply text, or None when the command must be silently ignored."""
        if command.name not in self.allowed(message, group):
            return None
        if command.name == "help":
            return "\n".join(USAGE[name] for name in self.allowed(message, group))
        if command.name == "chatid":
            return f"This chat's id: {message.chat_id}"
        if command.name == "whoami":
            admin = "yes" if "status" in self.allowed(message, group) else "no"
            return f"You are {message.sender_id} ({message.sender_name}); admin here: {admin}"
        if command.name in ("approve", "deny"):
            return await self._decide(command, message)
        if command.name == "usage" and group is not None and not group.is_main:
            return await commands_budget.usage_text(self.gw, group.folder)  # its own, whatever it asks
        handler: Callable[[list[str]], Awaitable[str]] = getattr(self, f"_cmd_{command.name}")
        self._by = message.sender_id  # who ran it, for what it records (e.g. /allow)
        try:
            return await handler(command.args)
        except UsageError as exc:
            return f"usage: {USAGE[command.name]}" + (f"\n{exc}" if str(exc) else "")

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _arity(args: list[str], low: int, high: int | None = None) -> None:
        if len(args) < low or len(args) > (low if high is None else high):
            raise UsageError()

    def _group(self, name: str) -> Group:
        group = self.gw.registry.by_folder(name)
        if group is None:
            raise UsageError(f"no registered group {name!r} (see /groups)")
        return group

    # -- commands ------------------------------------------------------------------------

    async def _cmd_status(self, args: list[str]) -> str:
        self._arity(args, 0)
        return await self.status_text()

    async def status_text(self) -> str:
        gw = self.gw
        live = gw.pool.live
        lines = [
            f"up {_age(time.time() - gw.started_at)}",
            "channels: "
            + ", ".join(f"{c.name} ({'connected' if c.connected else 'DISCONNECTED'})" for c in gw.channels),
            f"containers: {len(live)}/{gw.config.sandbox.max_containers}"
            + (" (" + ", ".join(sorted(live)) + ")" if live else ""),
            f"queue: {len(gw.queue.busy)} running, {len(gw.queue.waiting)} waiting, "
            f"{await gw.store.count_messages('pending')} messages pending",
            f"vault: {'healthy' if await gw.vault.healthy() else 'DOWN'}",
            f"dead letters: {len(await gw.store.dead_letters())}",
        ]
        asking, backlog = len(gw.senders.asking()), gw.senders.backlog()
        if asking or backlog or gw.senders.refused:  # who was kept out, and who waits (gateway.senders)
            lines.append(
                f"senders: {asking} waiting for Allow/Deny, "
                + (f"{backlog} more not asked yet, " if backlog else "")
                + f"{sum(gw.senders.refused.values())} trigger(s) not let through (/senders <group>)"
            )
        # Spend as the vault metered it; what agents report about themselves counts for nothing.
        spend = spend_by_group(await gw.store.metered_totals(None, start_of_day(time.time())))
        if spend:
            lines.append(
                "model spend today: "
                + ", ".join(
                    f"{g} {tokens:,} tokens ${micros / 1e6:,.4f}" for g, (tokens, micros) in spend.items()
                )
            )
        tasks = gw.services.tasks
        if tasks is not None:
            upcoming = sorted(
                (t for t in await tasks.list(None) if t.get("status") == "active" and t.get("next_run_at")),
                key=lambda t: t["next_run_at"],
            )[:3]
            for task in upcoming:
                lines.append(
                    f"next task {task['id']} ({task['group']}) in {_age(task['next_run_at'] - time.time())}"
                )
        return "\n".join(lines)

    async def _cmd_groups(self, args: list[str]) -> str:
        self._arity(args, 0)
        activity = {chat_id: last for chat_id, _, _, last in await self.gw.store.chats()}
        lines = []
        for g in self.gw.registry.all():
            trigger = "no trigger" if not g.requires_trigger else g.trigger
            last = activity.get(g.chat_id)
            seen = f"active {_age(time.time() - last)} ago" if last else "never active"
            mounts = f", {len(g.extra_mounts)} mount request(s)" if g.extra_mounts else ""
            mounts += f", runtime {g.runtime}" if g.runtime else ""
            senders = self.gw.senders.describe(g)
            if not g.is_main and senders != "senders open (0 allowed, 0 blocked)":
                mounts += f", {senders}"  # said when it differs from how groups always behaved
            lines.append(
                f"{g.folder}{' (main)' if g.is_main else ''}: {g.chat_id}, {trigger}, {seen}{mounts}"
            )
        return "\n".join(lines) or "no groups registered"

    async def _cmd_register(self, args: list[str]) -> str:
        if len(args) < 2:
            raise UsageError()
        chat_id, name, rest = args[0], args[1], args[2:]
        trigger, requires = self.gw.config.default_trigger, True
        runtime: str | None = None
        policy: str | None = None
        members: tuple[str, ...] = ()
        try:
            while rest:
                flag = rest.pop(0)
                if flag == "--no-trigger":
                    requires = False
                elif flag == "--runtime" and rest:
                    runtime = rest.pop(0)
                elif flag == "--trigger" and rest and _is_trigger(rest[0]):
                    trigger = rest.pop(0)
                elif flag == "--senders" and rest:
                    policy = validate_policy(rest.pop(0))
                elif flag == "--members" and rest:
                    members = parse_sender_list(rest.pop(0))
                else:
                    raise UsageError(f"unexpected argument {flag!r}")
            validate_folder(name)
            senders = validate_policy(
                policy or ("members" if members else self.gw.config.groups.default_sender_policy)
            )
            group = Group(name, chat_id, name, trigger, requires, False, runtime=runtime, senders=senders)
            await self.gw.registry.register(group, members, self._by)
            await self.gw.senders.load()
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        how = "trigger " + trigger if requires else "no trigger"
        how += f", runtime {runtime}" if runtime else ""
        if senders != "open" or members:  # `open` is how every group behaved before policies
            how += f", senders {senders}" + (f": {', '.join(members)}" if members else "")
        return f"registered {name} for {chat_id} ({how})"

    async def _cmd_unregister(self, args: list[str]) -> str:
        self._arity(args, 1)
        group = self._group(args[0])
        try:
            await self.gw.registry.unregister(group.folder)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        await self.gw.pool.stop(group.folder)
        return f"unregistered {group.folder} (its folder is kept)"

    async def _cmd_senders(self, args: list[str]) -> str:
        self._arity(args, 1, 2)
        group = self._group(args[0])
        if len(args) == 2:
            try:
                group = await self.gw.registry.set_senders(group.folder, args[1])
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            await self.gw.senders.reload()  # held messages follow the new policy
        lines = [f"{group.folder}: {self.gw.senders.describe(group)}"]
        for sender, state in sorted(self.gw.senders.senders(group.folder).items()):
            lines.append(f"  {sender} {state}")
        lines += await self.gw.senders.held_report(group)  # asked now, then the ones in line
        if refused := self.gw.senders.refused[group.folder]:
            lines.append(f"  {refused} trigger(s) not let through since the start (see the log)")
        return "\n".join(lines)

    async def _sender_decision(self, args: list[str], state: SenderState) -> str:
        self._arity(args, 2)
        group = self._group(args[0])
        try:
            sender = validate_sender_id(args[1])
            await self.gw.senders.decide_by_owner(group, sender, state, self._by)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if state == "allowed":
            return f"{group.folder}: {sender} may trigger the assistant"
        return f"{group.folder}: {sender} is blocked (their messages are context only)"

    async def _cmd_allow(self, args: list[str]) -> str:
        return await self._sender_decision(args, "allowed")

    async def _cmd_block(self, args: list[str]) -> str:
        return await self._sender_decision(args, "blocked")

    async def _tasks(self) -> TaskBook:
        if self.gw.services.tasks is None:
            raise UsageError("the scheduler is not running")
        return self.gw.services.tasks

    async def _cmd_tasks(self, args: list[str]) -> str:
        self._arity(args, 0, 1)
        folder = self._group(args[0]).folder if args else None
        tasks = await (await self._tasks()).list(folder)
        if not tasks:
            return "no tasks"
        return "\n".join(
            f"{t['id']} [{t['group']}] {t['status']} {t.get('schedule', '')}: {str(t.get('prompt', ''))[:60]}"
            for t in tasks
        )

    async def _task_action(self, args: list[str], action: str) -> str:
        self._arity(args, 1)
        book = await self._tasks()
        if await book.group_of(args[0]) is None:
            raise UsageError(f"no task {args[0]!r}")
        try:
            task = await book.update(args[0], action)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        return f"task {task['id']}: {task['status']}"

    async def _cmd_pause(self, args: list[str]) -> str:
        return await self._task_action(args, "pause")

    async def _cmd_resume(self, args: list[str]) -> str:
        return await self._task_action(args, "resume")

    async def _cmd_cancel(self, args: list[str]) -> str:
        return await self._task_action(args, "cancel")

    async def _cmd_stop(self, args: list[str]) -> str:
        self._arity(args, 1)
        group = self._group(args[0])
        if group.folder not in self.gw.pool.live:
            return f"{group.folder} has no running container"
        await self.gw.pool.stop(group.folder)
        return f"stopped the container of {group.folder}"

    async def _cmd_reset(self, args: list[str]) -> str:
        self._arity(args, 1)
        group = self._group(args[0])
        await self.gw.pool.stop(group.folder)
        # The agent's state dir is sandbox-writable: removed fd-relative, a planted link never followed.
        await groupfs.aremove_tree(group_dirs(self.gw.data_dir, group.folder).group, ".clawgate")
        await self.gw.store.set_session(group.folder, f"reset-{int(time.time())}")
        return f"cleared the agent session of {group.folder}"

    async def _cmd_compact(self, args: list[str]) -> str:
        self._arity(args, 1)
        group = self._group(args[0])
        if group_runtime(self.gw.config, group) == "claude":
            return (
                f"{group.folder} runs the claude runtime, whose session Claude Code compacts by itself; "
                "/compact applies to the builtin runtime (/reset starts a fresh session)"
            )
        root = group_dirs(self.gw.data_dir, group.folder).group
        try:
            # Never creates `.clawgate`: made by the gateway (root) it would shut the agent out of it.
            await groupfs.awrite_bytes(root, COMPACT_REQUEST, b"requested with /compact\n")
        except FileNotFoundError:
            return f"{group.folder} has no conversation history yet; nothing to compact"
        except OSError as exc:
            return f"could not ask {group.folder} to compact its history: {exc}"
        return f"{group.folder}: its older conversation will be summarised at its next turn"

    async def _cmd_dlq(self, args: list[str]) -> str:
        self._arity(args, 0)
        letters = await self.gw.store.dead_letters()
        if not letters:
            return "no dead letters"
        return "\n".join(f"#{i} {kind} {ref}: {reason[:120]}" for i, kind, ref, reason in letters)

    def _letter_id(self, args: list[str]) -> int:
        self._arity(args, 1)
        try:
            return int(args[0].lstrip("#"))
        except ValueError:
            raise UsageError("the id is a number, see /dlq") from None

    async def _cmd_retry(self, args: list[str]) -> str:
        letter = self._letter_id(args)
        if not await dead_letters.retry(self.gw, letter):
            raise UsageError(f"no dead letter #{letter}")
        return f"dead letter #{letter} queued again"

    async def _cmd_drop(self, args: list[str]) -> str:
        letter = self._letter_id(args)
        if not await self.gw.store.drop_dead_letter(letter):
            raise UsageError(f"no dead letter #{letter}")
        return f"dropped dead letter #{letter}"

    async def _cmd_wallet(self, args: list[str]) -> str:
        self._arity(args, 0)
        return await self.gw.wallet.status_text()

    async def _cmd_policy(self, args: list[str]) -> str:
        if not args:
            return self.gw.wallet.policy_text()
        if args[0] == "set" and len(args) >= 3:
            value: str | None = " ".join(args[2:])
        elif args[0] == "reset" and len(args) == 2:
            value = None
        else:
            raise UsageError()
        try:
            return "policy updated: " + await self.gw.wallet.set_policy(args[1], value)
        except ValueError as exc:
            raise UsageError(str(exc)) from None

    async def _cmd_usage(self, args: list[str]) -> str:
        self._arity(args, 0, 1)
        folder = self._group(args[0]).folder if args else None
        return await commands_budget.usage_text(self.gw, folder)

    async def _cmd_budget(self, args: list[str]) -> str:
        if not args:
            return await commands_budget.budget_text(self.gw)
        try:
            return await commands_budget.budget_set(self.gw, args, self._by)
        except commands_budget.BudgetUsageError as exc:
            raise UsageError(str(exc)) from None

    async def _decide(self, command: Command, message: InboundMessage) -> str:
        """`/approve <id>`, `/deny <id>`: the same path (and the same checks) as a button press."""
        if len(command.args) != 1:
            return f"usage: {USAGE[command.name]}"
        press = ButtonPress(
            approval_id=command.args[0],
            decision="approve" if command.name == "approve" else "deny",
            user_id=message.sender_id,
            user_name=message.sender_name,
            chat_id=message.chat_id,
        )
        return await self.gw.approvals.on_button(press)
