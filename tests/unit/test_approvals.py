"""Approvals (invariant 6): real SQLite, capture channels, a hand-driven clock.

The main chat is `tg:-1` (owned by the `tg` capture channel); `tg:-2` is a registered
non-main group. `tg:1` is an admin by config, `tg:2` is nobody.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from channels.console import OWNER_ID
from core.models import Approval, Group
from gateway.approvals import REFUSE_CHAT, REFUSE_USER, UNKNOWN, Approvals, new_approval_id
from gateway.commands import AdminCommands, parse
from gateway.registry import GroupRegistry
from gateway.store import Store
from tests.fakes.channel import CaptureChannel
from tests.fakes.clock import FakeClock

MAIN = "tg:-1"
TEAM = "tg:-2"
ADMIN = "tg:1"
GUEST = "tg:2"
T0 = 1_700_000_000.0


@dataclass
class World:
    path: Path
    store: Store
    registry: GroupRegistry
    tg: CaptureChannel
    console: CaptureChannel
    clock: FakeClock
    approvals: Approvals

    async def ask(self, title: str = "send 5 NEAR", expires_in: float = 600) -> tuple[asyncio.Task[str], str]:
        """Start a request; returns its task and the id of the prompt it posted."""
        before = len(self.tg.prompts)
        task = asyncio.create_task(self.approvals.request_approval(title, "to bob.near", "team", expires_in))
        await self.tg.wait_until(lambda: len(self.tg.prompts) > before, 5)
        chat, prompt = self.tg.prompts[before]
        assert chat == MAIN
        return task, prompt.id

    async def state(self, approval_id: str) -> str:
        approval = await self.store.approval(approval_id)
        assert approval is not None
        return approval.state


async def make_world(path: Path, clock: FakeClock) -> World:
    store = await Store.open(path)
    registry = GroupRegistry(store)
    await registry.load()
    if registry.main is None:
        await registry.register(Group("main", MAIN, "main", "@Andy", False, True))
        await registry.register(Group("team", TEAM, "team", "@Andy"))
    tg = CaptureChannel(prefix="tg:")
    console = CaptureChannel(prefix="console:")
    approvals = Approvals(store, registry, [console, tg], [ADMIN], clock)
    for channel in (console, tg):
        await channel.connect(lambda m: asyncio.sleep(0), approvals.on_button)
    await approvals.start()
    return World(path, store, registry, tg, console, clock, approvals)


@pytest.fixture
async def w(tmp_path: Path) -> AsyncIterator[World]:
    world = await make_world(tmp_path / "db.sqlite", FakeClock(T0))
    yield world
    await world.approvals.stop()
    await world.store.close()


async def test_approve_by_button_resolves_the_request_and_edits_the_prompt(w: World) -> None:
    task, approval_id = await w.ask()
    prompt = w.tg.prompts[0][1]
    assert (prompt.title, prompt.details, prompt.requester_group) == ("send 5 NEAR", "to bob.near", "team")
    assert prompt.expires_at == T0 + 600
    assert len(f"ap:{approval_id}:a".encode()) <= 64  # Telegram callback_data
    assert not task.done()
    w.clock.set(T0 + 5)
    assert await w.tg.press(approval_id, "approve", ADMIN, MAIN) == "Approved: send 5 NEAR"
    assert await asyncio.wait_for(task, 5) == "approved"
    [(chat, ref, edited, outcome)] = w.tg.outcomes
    assert (chat, ref, edited.id) == (MAIN, f"msg-{approval_id}", approval_id)
    assert (outcome.state, outcome.decided_by, outcome.decided_at) == ("approved", ADMIN, T0 + 5)
    record = await w.store.approval(approval_id)
    assert record is not None
    assert (record.state, record.decided_by, record.decided_at) == ("approved", ADMIN, T0 + 5)
    assert record.message_ref == f"msg-{approval_id}"
    assert w.approvals._timers == {}  # the expiry timer is gone with the decision


async def test_deny_by_button(w: World) -> None:
    task, approval_id = await w.ask()
    assert await w.tg.press(approval_id, "deny", OWNER_ID, MAIN) == "Denied: send 5 NEAR"
    assert await asyncio.wait_for(task, 5) == "denied"
    assert [o.state for _, _, _, o in w.tg.outcomes] == ["denied"]
    assert await w.state(approval_id) == "denied"


async def test_a_non_admin_press_is_refused_and_changes_nothing(w: World) -> None:
    task, approval_id = await w.ask()
    for decision in ("approve", "deny"):
        assert await w.tg.press(approval_id, decision, GUEST, MAIN) == REFUSE_USER
    await asyncio.sleep(0)
    assert not task.done()
    assert await w.state(approval_id) == "pending"
    assert w.tg.outcomes == []
    assert await w.tg.press(approval_id, "approve", ADMIN, MAIN)
    assert await task == "approved"


async def test_a_press_outside_the_main_chat_is_refused_even_from_an_admin(w: World) -> None:
    task, approval_id = await w.ask()
    for chat, user in ((TEAM, ADMIN), ("tg:-999", ADMIN), ("console:main", OWNER_ID), (TEAM, GUEST)):
        assert await w.tg.press(approval_id, "approve", user, chat) == REFUSE_CHAT
    assert await w.state(approval_id) == "pending"
    assert not task.done() and w.tg.outcomes == []
    assert await w.tg.press("nonexistent", "approve", ADMIN, MAIN) == UNKNOWN
    assert await w.tg.press(approval_id, "deny", ADMIN, MAIN)
    assert await task == "denied"


async def test_a_double_click_decides_once(w: World) -> None:
    task, approval_id = await w.ask()
    toasts = await asyncio.gather(
        *(w.tg.press(approval_id, "approve" if i % 2 else "deny", ADMIN, MAIN) for i in range(10))
    )
    winners = [t for t in toasts if not t.startswith("already decided")]
    assert len(winners) == 1, toasts
    decision = await task
    assert winners[0] == f"{decision.capitalize()}: send 5 NEAR"
    assert await w.state(approval_id) == decision
    assert len(w.tg.outcomes) == 1  # the prompt is edited once


async def test_a_replay_after_the_decision_is_refused(w: World) -> None:
    task, approval_id = await w.ask()
    w.clock.set(T0 + 1)
    await w.tg.press(approval_id, "approve", ADMIN, MAIN)
    assert await task == "approved"
    w.clock.set(T0 + 100)
    for decision in ("deny", "approve"):
        toast = await w.tg.press(approval_id, decision, OWNER_ID, MAIN)
        assert toast == f"already decided: approved by {ADMIN} at 2023-11-14T22:13:21Z"
    assert await w.state(approval_id) == "approved"
    assert len(w.tg.outcomes) == 1


async def test_expiry_denies_and_edits_the_prompt(w: World) -> None:
    task, approval_id = await w.ask(expires_in=60)
    w.clock.set(T0 + 59)
    await asyncio.sleep(0.01)
    assert not task.done()
    w.clock.set(T0 + 60)
    assert await asyncio.wait_for(task, 5) == "expired"
    await w.tg.wait_until(lambda: len(w.tg.outcomes) == 1, 5)
    [(_, ref, _, outcome)] = w.tg.outcomes
    assert ref == f"msg-{approval_id}"
    assert (outcome.state, outcome.decided_by, outcome.decided_at) == ("expired", None, T0 + 60)
    assert await w.state(approval_id) == "expired"
    # A click after expiry cannot approve.
    assert (await w.tg.press(approval_id, "approve", ADMIN, MAIN)).startswith("already decided: expired")
    assert await w.state(approval_id) == "expired"
    assert len(w.tg.outcomes) == 1


async def test_a_late_click_before_the_timer_fired_cannot_approve(w: World) -> None:
    task, approval_id = await w.ask(expires_in=60)
    w.clock.t = T0 + 61  # time passed but the timer has not run yet
    assert (await w.tg.press(approval_id, "approve", ADMIN, MAIN)).startswith("already decided: expired")
    assert await task == "expired"
    assert [o.state for _, _, _, o in w.tg.outcomes] == ["expired"]


async def test_text_fallback_approve_and_deny_in_the_main_chat(w: World) -> None:
    gw = SimpleNamespace(config=SimpleNamespace(admin=SimpleNamespace(users=[ADMIN])), approvals=w.approvals)
    commands = AdminCommands(gw)  # type: ignore[arg-type]
    main, team = w.registry.main, w.registry.by_folder("team")

    async def run(text: str, chat: str, sender: str, group: Group | None) -> str | None:
        command = parse(text)
        assert command is not None
        return await commands.execute(command, w.tg.message(text, chat, sender, "x"), group)

    first, first_id = await w.ask("first")
    second, second_id = await w.ask("second")
    # Outside the main chat, or from a non-admin, the commands do not exist.
    assert await run(f"/approve {first_id}", TEAM, ADMIN, team) is None
    assert await run(f"/approve {first_id}", MAIN, GUEST, main) is None
    assert await w.state(first_id) == "pending"
    assert await run("/approve", MAIN, ADMIN, main) == "usage: " + "/approve <approval-id> — " + (
        "approve a pending request (text fallback for the button)"
    )
    assert await run(f"/approve {first_id}", MAIN, ADMIN, main) == "Approved: first"
    assert await run(f"/deny {second_id}", MAIN, ADMIN, main) == "Denied: second"
    assert (await first, await second) == ("approved", "denied")
    assert (await run(f"/deny {first_id}", MAIN, ADMIN, main) or "").startswith("already decided: approved")
    assert [o.state for _, _, _, o in w.tg.outcomes] == ["approved", "denied"]


async def test_restart_expires_every_pending_approval_and_edits_its_prompt(tmp_path: Path) -> None:
    """After a restart nobody waits for the previous run's approvals: none of them can be approved."""
    path = tmp_path / "db.sqlite"
    clock = FakeClock(T0)
    w = await make_world(path, clock)
    short_task, short_id = await w.ask("short", expires_in=60)
    long_task, long_id = await w.ask("long", expires_in=3600)
    decided_task, decided_id = await w.ask("decided", expires_in=60)
    await w.tg.press(decided_id, "approve", ADMIN, MAIN)
    await decided_task
    # "Crash": the requesters die with the process; the records stay pending.
    short_task.cancel()
    long_task.cancel()
    await asyncio.gather(short_task, long_task, return_exceptions=True)
    await w.approvals.stop()
    await w.store.close()
    assert len(w.tg.outcomes) == 1

    clock = FakeClock(T0 + 120)  # the short one's time ran out while the gateway was down, not the long one's
    w = await make_world(path, clock)
    try:
        edited = {prompt.id: (chat, ref, outcome) for chat, ref, prompt, outcome in w.tg.outcomes}
        assert set(edited) == {short_id, long_id}
        for approval_id in (short_id, long_id):  # the edit uses the ref stored before the restart
            chat, ref, outcome = edited[approval_id]
            assert (chat, ref, outcome.state, outcome.decided_by) == (
                MAIN,
                f"msg-{approval_id}",
                "expired",
                None,
            )
            assert await w.state(approval_id) == "expired"
        assert await w.state(decided_id) == "approved"
        assert w.approvals._timers == {}
        toast = await w.tg.press(long_id, "approve", ADMIN, MAIN)
        assert toast.startswith("already decided: expired")
        assert await w.state(long_id) == "expired" and len(w.tg.outcomes) == 2
    finally:
        await w.approvals.stop()
        await w.store.close()


async def test_recover_settles_before_the_channels_deliver_and_start_edits_after(tmp_path: Path) -> None:
    """The gateway's order: `recover()` with the channels still down, a click, then `start()`."""
    path = tmp_path / "db.sqlite"
    w = await make_world(path, FakeClock(T0))
    task, approval_id = await w.ask(expires_in=600)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await w.approvals.stop()
    await w.store.close()

    store = await Store.open(path)
    registry = GroupRegistry(store)
    await registry.load()
    tg = CaptureChannel(prefix="tg:")
    approvals = Approvals(store, registry, [tg], [ADMIN], FakeClock(T0 + 10))
    try:
        await approvals.recover()
        record = await store.approval(approval_id)
        assert record is not None and record.state == "expired"  # before any channel is connected
        await tg.connect(lambda m: asyncio.sleep(0), approvals.on_button)
        toast = await tg.press(approval_id, "approve", ADMIN, MAIN)  # the click Telegram held
        assert toast.startswith("already decided: expired")
        assert tg.outcomes == []
        await approvals.start()
        [(_, ref, _, outcome)] = tg.outcomes
        assert (ref, outcome.state) == (f"msg-{approval_id}", "expired")
    finally:
        await approvals.stop()
        await store.close()


async def test_a_click_for_an_approval_nobody_waits_for_answers_expired(w: World) -> None:
    """The requester went away (its turn was cancelled): approving would do nothing, so it cannot."""
    task, approval_id = await w.ask(expires_in=600)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert await w.state(approval_id) == "pending"
    toast = await w.tg.press(approval_id, "approve", ADMIN, MAIN)
    assert toast.startswith("already decided: expired")
    assert await w.state(approval_id) == "expired"
    [(_, _, _, outcome)] = w.tg.outcomes
    assert outcome.state == "expired"


async def test_a_press_is_handled_while_the_agent_turn_awaits_the_approval(w: World) -> None:
    """The turn holds its group's lane while it waits; the click must not need that lane."""
    lane = asyncio.Lock()
    asked = asyncio.Event()

    async def agent_turn() -> str:
        async with lane:
            task = asyncio.create_task(w.approvals.request_approval("swap", "", "team"))
            await w.tg.wait_until(lambda: len(w.tg.prompts) == 1, 5)
            asked.set()
            return await task

    turn = asyncio.create_task(agent_turn())
    await asyncio.wait_for(asked.wait(), 5)
    assert lane.locked()
    approval_id = w.tg.prompts[0][1].id
    toast = await asyncio.wait_for(w.tg.press(approval_id, "approve", ADMIN, MAIN), 5)
    assert toast == "Approved: swap"
    assert await asyncio.wait_for(turn, 5) == "approved"


async def test_a_prompt_that_cannot_be_posted_is_denied(w: World) -> None:
    w.tg.fail_approvals = True
    assert await asyncio.wait_for(w.approvals.request_approval("x", "", "team"), 5) == "denied"
    [record] = [a for a in await all_approvals(w.store)]
    assert (record.state, record.decided_by) == ("denied", "gateway")


async def test_a_click_that_races_the_post_still_edits_the_prompt(w: World) -> None:
    """The channel may deliver the click before `send_approval` has returned the ref."""
    original = w.tg.send_approval

    async def slow_post(chat_id, prompt):  # type: ignore[no-untyped-def]
        ref = await original(chat_id, prompt)
        assert await w.tg.press(prompt.id, "approve", ADMIN, MAIN) == f"Approved: {prompt.title}"
        return ref

    w.tg.send_approval = slow_post  # type: ignore[method-assign]
    assert await asyncio.wait_for(w.approvals.request_approval("fast", "", "team"), 5) == "approved"
    [(_, ref, _, outcome)] = w.tg.outcomes
    assert (ref, outcome.state) == (f"msg-{w.tg.prompts[0][1].id}", "approved")


async def test_without_a_main_group_nothing_is_asked_and_the_answer_is_deny(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    registry = GroupRegistry(store)
    tg = CaptureChannel(prefix="tg:")
    approvals = Approvals(store, registry, [tg], [ADMIN], FakeClock(T0))
    assert await approvals.request_approval("x", "", "team") == "denied"
    assert tg.prompts == []
    await store.close()


async def test_store_decides_exactly_once(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    approval_id = new_approval_id()
    await store.create_approval(
        Approval(approval_id, "t", "d", "team", T0, T0 + 60, "pending", None, None, MAIN, None)
    )
    results = await asyncio.gather(
        *(
            store.decide_approval(approval_id, s, ADMIN, T0 + i)
            for i, s in enumerate(["approved", "denied"] * 5)
        )
    )
    assert results.count(True) == 1
    assert await store.pending_approvals() == []
    assert not await store.decide_approval("unknown", "approved", ADMIN, T0)
    with pytest.raises(ValueError):
        await store.decide_approval(approval_id, "pending", ADMIN, T0)
    await store.close()


async def all_approvals(store: Store) -> list[Approval]:
    async with store._conn.execute("SELECT id FROM approvals") as cur:
        ids = [row[0] for row in await cur.fetchall()]
    return [a for a in [await store.approval(i) for i in ids] if a is not None]
