"""Budgets at run time: the pre-turn check, the main chat's notices, the state the vault enforces.

Two places refuse a group over its budget (docs/ARCHITECTURE.md, invariant 16):

1. Here, before a turn: `check` answers the chat with a short refusal and the run ends without
   an agent, a retry or a dead letter (like the disk quota, gateway/disk.py).
2. In the vault, per model call (proxy/budget.py): the gateway pushes every limit's remaining
   headroom with `push`; the vault refuses a model call once any applicable headroom is <= 0
   and subtracts each metered response synchronously, so a turn that starts within budget
   cannot make a second call past it. The one call in flight when the headroom runs out is
   the overshoot bound (its cost is only known when its response ends).

`push` is called after every stored usage report (`after_usage`), after `/budget set`, after a
config reload, at every day boundary (`run_timer`) and when the vault (re)starts; the vault
also replays the last state it was given when the supervisor restarts it (proxy/process.py).

Notices: once per (scope, limit, period, level), claimed in the database before sending
(gateway/store/budgets.py), so neither a restart nor a burst of reports repeats one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from core.budget import GLOBAL, BudgetConfig
from gateway import budget
from gateway.budget import LimitStatus, Spend
from gateway.store import Store

log = logging.getLogger(__name__)

ALL_GROUPS = "*"  # the vault's name for the shared limits (SPEND-INTERFACE §6)
MAX_TIMER_SLEEP_S = 3600.0  # re-check the clock at least hourly (suspend, clock steps)


class BudgetSink(Protocol):
    """The vault handle (proxy/process.py VaultProcess)."""

    async def set_budgets(self, state: dict[str, Any]) -> None: ...


class BudgetGuard:
    def __init__(
        self,
        config: BudgetConfig,
        prices: Callable[[], dict[str, dict[str, float]]],
        store: Store,
        vault: BudgetSink,
        folders: Callable[[], Iterable[str]],
        notify_main: Callable[[str], Awaitable[None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._prices = prices
        self._store = store
        self._vault = vault
        self._folders = folders
        self._notify_main = notify_main
        self._clock = clock
        self._push_lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.config.timezone)

    async def statuses(self, folder: str | None) -> dict[str, list[LimitStatus]]:
        """Scope -> its limits' status now: the folder's (all registered ones if None) and global."""
        scopes = [folder] if folder is not None else sorted(set(self._folders()))
        return await budget_statuses(self.config, self._store, scopes, self._clock())

    async def check(self, folder: str) -> str | None:
        """Before a turn: None if the group may call the model, else what its chat is told."""
        found = await self.statuses(folder)
        flat = [s for scoped in found.values() for s in scoped]
        over = budget.first_exhausted(flat)
        if over is None:
            return None
        await self._notices(flat)  # normally sent already, when the spend was reported
        log.info("group %s: turn refused, %s exhausted", folder, over.key)
        return budget.chat_refusal(over)

    async def after_usage(self, folders: Iterable[str]) -> None:
        """A usage report was stored: push the new headroom to the vault, send due notices."""
        await self.push()
        for folder in sorted(set(folders)):
            found = await self.statuses(folder)  # the folder's limits and the shared ones
            await self._notices([s for scoped in found.values() for s in scoped])

    async def _notices(self, found: list[LimitStatus]) -> None:
        warn_at = self.config.warn_at
        for status in found:
            level: Literal["warn", "exhausted"] | None = None
            if status.exhausted:
                level = "exhausted"
            elif status.warned(warn_at):
                level = "warn"
            if level is None:
                continue
            claimed = await self._store.claim_budget_notice(
                status.scope, status.kind, status.period.key, level
            )
            if level == "exhausted":  # a jump past the warning line does not warn afterwards
                await self._store.claim_budget_notice(status.scope, status.kind, status.period.key, "warn")
            if claimed:
                log.warning("budget %s: %s", status.key, level)
                await self._notify_main(budget.notice(status, level, warn_at))

    async def state(self) -> dict[str, Any]:
        """The vault's `budgets` op (SPEND-INTERFACE §6): only scopes that have limits."""
        found = await self.statuses(None)
        limits: dict[str, list[dict[str, object]]] = {}
        for scope, scoped in found.items():
            if scoped:
                limits[ALL_GROUPS if scope == GLOBAL else scope] = budget.vault_limits(scoped)
        return {"prices": self._prices(), "limits": limits}

    async def push(self) -> None:
        """Send the authoritative state; serialized, so the newest computation is sent last."""
        async with self._push_lock:
            state = await self.state()
            try:
                await self._vault.set_budgets(state)
            except Exception as exc:  # the vault is down: its restart replays the state (process.py)
                log.warning("could not push budgets to the vault: %s", exc)

    # -- period boundaries -------------------------------------------------------------------

    def start(self) -> None:
        if self._timer is None or self._timer.done():
            current = budget.day_period(self._clock(), self.zone).key  # the day the last push was for
            self._timer = asyncio.create_task(self._run_timer(current), name="budget-periods")

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None

    async def _run_timer(self, current: str) -> None:
        """At each new day (and month) the headroom starts over: the vault must hear it then."""
        while True:
            now = self._clock()
            day = budget.day_period(now, self.zone).key
            if day != current:
                current = day
                log.info("budget period %s begins; pushing fresh headroom to the vault", day)
                try:
                    await self.push()
                except Exception:
                    log.exception("pushing budgets at the period boundary failed")
            wait = max(budget.next_boundary(now, self.zone) - now, 0.0) + 0.5
            await asyncio.sleep(min(wait, MAX_TIMER_SLEEP_S))


async def budget_statuses(
    config: BudgetConfig, store: Store, scopes: list[str], now: float
) -> dict[str, list[LimitStatus]]:
    """Scope -> status of each limit in force, for the given folders and always "global"."""
    zone = ZoneInfo(config.timezone)
    overrides = await store.budget_overrides()
    day, month = budget.day_period(now, zone), budget.month_period(now, zone)
    by_day = await store.spend_since(day.start)
    by_month = await store.spend_since(month.start)
    found: dict[str, list[LimitStatus]] = {}
    for scope in [*(s for s in scopes if s != GLOBAL), GLOBAL]:
        limits = budget.effective_limits(config, overrides, scope)
        if scope == GLOBAL:
            spend = {"day": _total(by_day.values()), "month": _total(by_month.values())}
        else:
            spend = {"day": Spend(*by_day.get(scope, (0, 0))), "month": Spend(*by_month.get(scope, (0, 0)))}
        found[scope] = budget.statuses(scope, limits, spend, now, zone)  # type: ignore[arg-type]
    return found


def _total(values: Iterable[tuple[int, int]]) -> Spend:
    tokens = cost = 0
    for t, c in values:
        tokens += t
        cost += c
    return Spend(tokens, cost)
