"""The gateway's budget guard over a real SQLite store: spend from metered_usage, the pre-turn
check, notices sent once (also across a restart), overrides, the shared limit, the vault state."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.budget import BudgetConfig
from gateway.budget_state import BudgetGuard
from gateway.store import Store
from gateway.store.metered import MeteredRow

NOW = datetime(2026, 6, 15, 12, 0, tzinfo=UTC).timestamp()
_ids = itertools.count()


class VaultSink:
    """Stands in for the vault's control socket only; the real one is in tests/vault."""

    def __init__(self) -> None:
        self.states: list[dict[str, Any]] = []

    async def set_budgets(self, state: dict[str, Any]) -> None:
        self.states.append(state)


class Env:
    def __init__(self, store: Store, config: BudgetConfig) -> None:
        self.store, self.sink, self.notices = store, VaultSink(), list[str]()
        self.guard = self.make_guard(config)

    def make_guard(self, config: BudgetConfig) -> BudgetGuard:
        async def notify(text: str) -> None:
            self.notices.append(text)

        return BudgetGuard(
            config, lambda: {}, self.store, self.sink, lambda: ["team", "other"], notify, clock=lambda: NOW
        )

    async def spend(self, group: str, *, cost: int = 0, tokens: int = 0, at: float = NOW) -> None:
        row = MeteredRow(
            f"test:{next(_ids)}",
            group,
            None,
            "anthropic",
            "claude-sonnet-4-5",
            tokens,
            0,
            0,
            0,
            cost,
            True,
            at,
        )
        assert await self.store.add_metered_usage([row]) == 1


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "clawgate.db")
    yield store
    await store.close()


def config(**raw: Any) -> BudgetConfig:
    return BudgetConfig.model_validate(raw)


async def test_exhausted_group_is_refused_and_main_is_told_once_even_after_a_restart(
    store: Store, tmp_path: Path
) -> None:
    env = Env(store, config(groups={"team": {"daily_usd": 1}}))
    await env.spend("team", cost=600_000)
    await env.guard.after_usage(["team"])
    assert await env.guard.check("team") is None and env.notices == []
    assert env.sink.states[-1]["limits"]["team"][0]["remaining"] == 400_000

    await env.spend("team", cost=300_000)  # 90%: one warning
    await env.guard.after_usage(["team"])
    await env.guard.after_usage(["team"])
    assert (
        len(env.notices) == 1 and "90%" in env.notices[0] and "/budget set team daily 2.00" in env.notices[0]
    )

    await env.spend("team", cost=200_000)  # over: one exhaustion notice
    await env.guard.after_usage(["team"])
    refusal = await env.guard.check("team")
    assert refusal is not None and "owner can raise it" in refusal and "$1.00" in refusal
    assert await env.guard.check("other") is None  # another group is not affected
    assert (
        len(env.notices) == 2
        and "used up" in env.notices[1]
        and "/budget set team daily 2.00" in env.notices[1]
    )
    [entry] = env.sink.states[-1]["limits"]["team"]
    assert entry["remaining"] == -100_000 and entry["message"].startswith("clawgate budget:")

    await store.close()  # a restart remembers what main was told
    reopened = await Store.open(tmp_path / "clawgate.db")
    try:
        again = Env(reopened, config(groups={"team": {"daily_usd": 1}}))
        assert await again.guard.check("team") is not None
        await again.guard.after_usage(["team"])
        assert again.notices == []
    finally:
        await reopened.close()


async def test_override_beats_config_off_lifts_it_and_default_restores_it(store: Store) -> None:
    env = Env(store, config(groups={"team": {"daily_tokens": 100}}))
    await env.spend("team", tokens=150)
    assert await env.guard.check("team") is not None
    await store.set_budget_override("team", "daily_tokens", 1000, "tg:1")
    assert await env.guard.check("team") is None
    await env.guard.push()
    assert env.sink.states[-1]["limits"]["team"] == [
        {
            "key": "team:daily_tokens:2026-06-15",
            "unit": "tokens",
            "remaining": 850,
            "message": env.sink.states[-1]["limits"]["team"][0]["message"],
        }
    ]
    await store.set_budget_override("team", "daily_tokens", None, "tg:1")  # off
    assert await env.guard.check("team") is None
    await env.guard.push()
    assert "team" not in env.sink.states[-1]["limits"]
    assert await store.clear_budget_override("team", "daily_tokens")  # default: the config again
    assert await env.guard.check("team") is not None


async def test_global_limit_is_shared_by_all_groups_and_yesterday_does_not_count(store: Store) -> None:
    env = Env(store, config(**{"global": {"daily_tokens": 100}}))
    await env.spend("team", tokens=500, at=NOW - 86400)  # yesterday
    await env.spend("team", tokens=60)
    await env.spend("other", tokens=30)
    assert await env.guard.check("team") is None and await env.guard.check("other") is None
    await env.spend("other", tokens=20)
    await env.guard.after_usage(["team", "other"])
    assert await env.guard.check("team") is not None and await env.guard.check("other") is not None
    state = env.sink.states[-1]["limits"]
    assert list(state) == ["*"] and state["*"][0]["remaining"] == -10
    exhausted = [n for n in env.notices if "used up" in n]
    assert (
        len(exhausted) == 1 and "shared" in exhausted[0] and "/budget set global daily-tokens" in exhausted[0]
    )


async def test_a_new_day_pushes_fresh_headroom_to_the_vault(store: Store) -> None:
    """The timer wakes just after the next local midnight and pushes, so yesterday's spend no
    longer holds the group back in the vault either."""
    now = [datetime(2026, 6, 15, 23, 59, 59, 700_000, tzinfo=UTC).timestamp()]
    env = Env(store, config(groups={"team": {"daily_tokens": 100}}))
    env.guard = BudgetGuard(
        config(groups={"team": {"daily_tokens": 100}}),
        lambda: {},
        store,
        env.sink,
        lambda: ["team"],
        env.guard._notify_main,
        clock=lambda: now[0],
    )
    await env.spend("team", tokens=150, at=now[0] - 10)
    await env.guard.push()
    assert env.sink.states[-1]["limits"]["team"][0]["remaining"] == -50
    env.guard.start()
    try:
        await asyncio.sleep(0.1)  # the timer is asleep until just after midnight
        assert len(env.sink.states) == 1
        now[0] += 1.0  # the clock passes midnight while the timer sleeps (0.3 s + 0.5 s margin)
        for _ in range(100):
            if len(env.sink.states) > 1:
                break
            await asyncio.sleep(0.05)
    finally:
        await env.guard.stop()
    [entry] = env.sink.states[-1]["limits"]["team"]
    assert entry["key"] == "team:daily_tokens:2026-06-16" and entry["remaining"] == 100
