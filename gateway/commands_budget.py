"""`/usage [group]` and `/budget [set <group|global> <limit> <amount|off|default>]`.

`/budget set` validates amounts with the very functions `[budget]` in config.toml uses
(core/budget.py), stores the override in the database (it beats the config, survives restarts
and reloads), and pushes the new headroom to the vault before it answers, so a lifted budget
lets the group's next message through at once.

Limit words: `daily` and `monthly` are USD, `daily-tokens` and `monthly-tokens` tokens. The
amount `off` (or `none`) means no limit even if the config sets one; `default` drops the
override and follows the config again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.budget import GLOBAL, format_limit, parse_limit
from gateway import budget, usage_report

if TYPE_CHECKING:
    from gateway.running import RunningGateway

SET_USAGE = "/budget set <group|global> <daily|monthly|daily-tokens|monthly-tokens> <amount|off|default>"


class BudgetUsageError(Exception):
    """Bad arguments; the message says which and how."""


async def usage_text(gw: RunningGateway, folder: str | None) -> str:
    folders = [g.folder for g in gw.registry.all()]
    report = await usage_report.build(gw.store, gw.config.budget, folder, folders)
    return usage_report.render(report)


async def budget_text(gw: RunningGateway) -> str:
    folders = [g.folder for g in gw.registry.all()]
    found = await gw.budget.statuses(None)
    overrides = await gw.store.budget_overrides()
    lines = []
    for scope in [*folders, GLOBAL]:
        for s in found.get(scope, []):
            notes = [budget.SHARED] if scope == GLOBAL else []
            notes += ["set in chat"] if (scope, s.kind) in overrides else []
            lines.append(f"{scope}: {budget.describe(s)}" + "".join(f", {n}" for n in notes))
    for (scope, kind), amount in sorted(overrides.items()):
        if amount is None:
            lines.append(f"{scope}: {budget.COMMAND_WORD[kind]} off, set in chat")
    return "\n".join(lines) or f"no budgets set; {SET_USAGE}"


async def budget_set(gw: RunningGateway, args: list[str], sender: str) -> str:
    """`set <scope> <word> <amount>`; raises BudgetUsageError with the reason."""
    if len(args) != 4 or args[0] != "set":
        raise BudgetUsageError("")
    _, scope, word, value = args
    if scope != GLOBAL and gw.registry.by_folder(scope) is None:
        raise BudgetUsageError(f"no registered group {scope!r} (see /groups), and not 'global'")
    kind = budget.KIND_OF_WORD.get(word)
    if kind is None:
        raise BudgetUsageError(f"unknown limit {word!r}: daily, monthly, daily-tokens or monthly-tokens")
    if value.lower() == "default":
        await gw.store.clear_budget_override(scope, kind)
        configured = gw.config.budget.limits(scope).amounts().get(kind)
        now = "no limit" if configured is None else format_limit(kind, configured)
        said = f"{scope} {word}: back to the config ({now})"
    elif value.lower() in ("off", "none"):
        await gw.store.set_budget_override(scope, kind, None, sender)
        said = f"{scope} {word}: no limit"
    else:
        try:
            amount = parse_limit(kind, value)
        except ValueError as exc:
            raise BudgetUsageError(f"{word} {value!r}: {exc}") from None
        await gw.store.set_budget_override(scope, kind, amount, sender)
        said = f"{scope} {word}: {format_limit(kind, amount)}"
    await gw.budget.push()  # before answering: the next message must find the vault told
    for status in (await gw.budget.statuses(None if scope == GLOBAL else scope)).get(scope, []):
        if status.kind == kind:
            state = "exhausted" if status.exhausted else f"{format_limit(kind, status.remaining)} left"
            said += f" — {format_limit(kind, max(status.spent, 0))} spent in {status.period.key}, {state}"
    return "budget set: " + said
