"""The scheduler against a real SQLite store and a clock the test drives by hand.

Nothing here sleeps for real (except one test of the system clock): `FakeClock` holds
wall time, `run_until` lets it flow and stops at every armed slot, exactly as real time
would, and `Scheduler.settle()` waits until the scheduler has nothing due.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.models import Group, ScheduledTask, TaskRun
from gateway.scheduler import ChatLauncher, Scheduler, SystemClock, iso
from gateway.store import Store
from tests.fakes.clock import FakeClock

T0 = datetime(2030, 1, 1, 0, 0, 20, tzinfo=UTC).timestamp()  # a Tuesday, 00:00:20 UTC


class Recorder:
    """The fire callback: records (task id, slot, time fired); may take (simulated) time; logs a result."""

    def __init__(self, clock: FakeClock, store: Store) -> None:
        self.clock, self.store = clock, store
        self.calls: list[tuple[int, float, float]] = []
        self.cost = 0.0
        self.fail: Exception | None = None

    async def __call__(self, task: ScheduledTask, firing: TaskRun) -> None:
        self.calls.append((task.id, firing.scheduled_for, self.clock.now()))
        if self.fail is not None:
            raise self.fail
        if self.cost:
            self.clock.set(self.clock.now() + self.cost)
        await self.store.finish_task_run(firing.id, f"ran {task.id}", None, self.cost)

    def slots(self, task_id: int) -> list[float]:
        return [slot for tid, slot, _ in self.calls if tid == task_id]


class Env:
    def __init__(self, store: Store, clock: FakeClock, fired: Recorder, scheduler: Scheduler) -> None:
        self.store, self.clock, self.fired, self.scheduler = store, clock, fired, scheduler

    async def run_until(self, t: float, late_by: float = 0.0) -> None:
        """Let time flow to `t`, stopping at every armed slot (woken `late_by` s late) like a real clock."""
        await self.scheduler.settle()
        while (due := self.scheduler.next_due()) is not None and due <= t:
            self.clock.set(max(due + late_by, self.clock.now()))
            await self.scheduler.settle()
        self.clock.set(max(t, self.clock.now()))
        await self.scheduler.settle()

    async def schedule(self, folder: str = "team", **spec: object) -> dict:
        return await self.scheduler.schedule(folder, "do the thing", created_by=folder, **spec)  # type: ignore[arg-type]

    async def restart(self, downtime_s: float) -> None:
        """The gateway stops, time passes, a new scheduler starts on the same database."""
        await self.scheduler.stop()
        self.clock.set(self.clock.now() + downtime_s)
        self.scheduler = Scheduler(self.store, self.fired, self.clock)
        await self.scheduler.start()
        await self.scheduler.settle()


@pytest.fixture
async def env(tmp_path: Path):  # type: ignore[no-untyped-def]
    store = await Store.open(tmp_path / "clawgate.db")
    clock = FakeClock(T0)
    fired = Recorder(clock, store)
    scheduler = Scheduler(store, fired, clock)
    await scheduler.start()
    e = Env(store, clock, fired, scheduler)
    yield e
    await e.scheduler.stop()
    await store.close()


# -- cron ------------------------------------------------------------------------------------


async def test_cron_fires_exactly_at_matching_times_in_utc(env: Env) -> None:
    task = await env.schedule(cron="*/15 * * * *")
    assert task["kind"] == "cron" and task["next_run"] == "2030-01-01T00:15:00Z"
    await env.run_until(T0 + 2 * 3600)
    fired_at = [iso(at) for _, _, at in env.fired.calls]
    assert fired_at == [f"2030-01-01T{h:02d}:{m:02d}:00Z" for h in (0, 1) for m in (0, 15, 30, 45)][1:] + [
        "2030-01-01T02:00:00Z"
    ]
    assert [slot for _, slot, _ in env.fired.calls] == [at for _, _, at in env.fired.calls]


async def test_cron_weekday_schedule_and_aliases(env: Env) -> None:
    weekdays = await env.schedule(cron="0 9 * * 1-5")
    hourly = await env.schedule(cron="@hourly")
    assert weekdays["next_run"] == "2030-01-01T09:00:00Z"  # Tuesday
    assert hourly["next_run"] == "2030-01-01T01:00:00Z"
    await env.run_until(T0 + 7 * 86400)
    days = [iso(slot) for slot in env.fired.slots(weekdays["id"])]
    assert days == [f"2030-01-{d:02d}T09:00:00Z" for d in (1, 2, 3, 4, 7)]  # Sat 5th, Sun 6th skipped
    assert len(env.fired.slots(hourly["id"])) == 7 * 24


# -- intervals -------------------------------------------------------------------------------


async def test_interval_does_not_drift_over_many_periods(env: Env) -> None:
    task = await env.schedule(every_s=37.5)
    await env.run_until(T0 + 500 * 37.5 + 1)
    slots = env.fired.slots(task["id"])
    assert len(slots) == 500
    for k, slot in enumerate(slots, start=1):
        assert slot == pytest.approx(T0 + k * 37.5, abs=1e-6)
    assert [at for _, _, at in env.fired.calls] == slots  # fired on the dot


async def test_interval_does_not_drift_when_every_wakeup_is_late(env: Env) -> None:
    task = await env.schedule(every_s=60)
    await env.run_until(T0 + 300 * 60 + 1, late_by=0.4)  # each timer fires 0.4 s late
    slots = env.fired.slots(task["id"])
    assert slots == [pytest.approx(T0 + k * 60, abs=1e-6) for k in range(1, 301)]  # not k * 60.4
    assert all(at - slot == pytest.approx(0.4, abs=1e-6) for _, slot, at in env.fired.calls)


async def test_interval_with_a_slow_fire_callback_keeps_its_grid(env: Env) -> None:
    env.fired.cost = 7.0  # each firing takes 7 s of (simulated) time
    task = await env.schedule(every_s=60)
    await env.run_until(T0 + 50 * 60 + 1)
    slots = env.fired.slots(task["id"])
    assert slots == [pytest.approx(T0 + k * 60, abs=1e-6) for k in range(1, 51)]  # not 67, 134, …


async def test_a_firing_slower_than_the_interval_skips_slots_instead_of_piling_up(env: Env) -> None:
    env.fired.cost = 90.0
    task = await env.schedule(every_s=60)
    await env.run_until(T0 + 10 * 60 + 1)
    slots = env.fired.slots(task["id"])
    assert slots == [pytest.approx(T0 + k * 60, abs=1e-6) for k in (1, 3, 5, 7, 9)]


# -- one-off ---------------------------------------------------------------------------------


async def test_one_off_fires_once_then_is_done(env: Env) -> None:
    task = await env.schedule(at="2030-01-01T01:30:00+01:00")  # = 00:30Z
    assert task["kind"] == "once" and task["next_run"] == "2030-01-01T00:30:00Z"
    await env.run_until(T0 + 86400)
    assert [iso(at) for _, _, at in env.fired.calls] == ["2030-01-01T00:30:00Z"]
    [row] = await env.scheduler.list("team", include_finished=True)
    assert row["status"] == "done" and row["next_run"] is None and row["last_result"] == f"ran {task['id']}"
    assert await env.scheduler.list("team") == []  # finished tasks are hidden by default
    assert env.scheduler.next_due() is None


# -- downtime --------------------------------------------------------------------------------


async def test_missed_runs_after_downtime_run_once_and_reschedule_from_now(env: Env) -> None:
    interval = await env.schedule(every_s=60)
    cron = await env.schedule(cron="*/5 * * * *")
    once = await env.schedule(at=iso(T0 + 600))
    await env.run_until(T0 + 125)  # interval fired at +60 and +120
    assert len(env.fired.slots(interval["id"])) == 2
    await env.restart(downtime_s=3 * 3600 + 10)  # down from T0+125 to T0+10935
    now = env.clock.now()
    # Exactly one catch-up firing per task, for the first slot it missed.
    assert env.fired.slots(interval["id"])[2:] == [pytest.approx(T0 + 180, abs=1e-6)]
    assert env.fired.slots(cron["id"]) == [datetime(2030, 1, 1, 0, 5, tzinfo=UTC).timestamp()]
    assert env.fired.slots(once["id"]) == [T0 + 600]
    tasks = {t["id"]: t for t in await env.scheduler.list(None, include_finished=True)}
    assert tasks[once["id"]]["status"] == "done"
    # The next slot is the next regular one after now: anchor-aligned for the interval.
    next_interval = (await env.store.task(interval["id"])).next_run_at  # type: ignore[union-attr]
    assert next_interval == pytest.approx(T0 + (int((now - T0) // 60) + 1) * 60, abs=1e-6)
    assert now < next_interval <= now + 60
    assert tasks[cron["id"]]["next_run"] == "2030-01-01T03:05:00Z"
    count = len(env.fired.calls)
    await env.run_until(now + 600)
    assert len(env.fired.calls) - count == 10 + 2  # back to normal: 10 interval + 2 cron firings


async def test_replay_of_a_slot_after_a_crash_reuses_its_log_row(env: Env) -> None:
    task = await env.schedule(every_s=60)
    # Simulate a crash after the firing was logged but before the task advanced.
    first = await env.store.start_task_run(task["id"], T0 + 60, T0 + 60)
    await env.run_until(T0 + 61)
    runs = await env.store.task_runs(task["id"])
    assert [r.id for r in runs] == [first.id] and runs[0].status == "ok"


# -- pause / resume / cancel -----------------------------------------------------------------


async def test_pause_resume_cancel(env: Env) -> None:
    task = await env.schedule(every_s=60)
    await env.run_until(T0 + 130)
    assert len(env.fired.calls) == 2
    paused = await env.scheduler.update(task["id"], "pause")
    assert paused["status"] == "paused" and paused["next_run"] is None
    assert (await env.scheduler.update(str(task["id"]), "pause"))["status"] == "paused"  # idempotent
    await env.run_until(T0 + 1000)
    assert len(env.fired.calls) == 2  # nothing while paused, nothing made up on resume
    resumed = await env.scheduler.update(task["id"], "resume")
    assert resumed["status"] == "active" and resumed["next_run"] == iso(T0 + 17 * 60)  # next slot after now
    await env.run_until(T0 + 17 * 60 + 1)
    assert env.fired.slots(task["id"])[2:] == [pytest.approx(T0 + 17 * 60, abs=1e-6)]
    cancelled = await env.scheduler.update(task["id"], "cancel")
    assert cancelled["status"] == "cancelled" and cancelled["next_run"] is None
    await env.run_until(T0 + 3600)
    assert len(env.fired.calls) == 3
    for action in ("pause", "resume"):
        with pytest.raises(ValueError, match="cancelled"):
            await env.scheduler.update(task["id"], action)
    with pytest.raises(ValueError, match="unknown action"):
        await env.scheduler.update(task["id"], "delete")
    with pytest.raises(ValueError, match="no task"):
        await env.scheduler.update(999, "pause")


async def test_resume_of_cron_and_late_one_off(env: Env) -> None:
    cron = await env.schedule(cron="0 * * * *")
    once = await env.schedule(at=iso(T0 + 300))
    for t in (cron, once):
        await env.scheduler.update(t["id"], "pause")
    await env.run_until(T0 + 2 * 3600 + 100)
    assert env.fired.calls == []
    assert (await env.scheduler.update(cron["id"], "resume"))["next_run"] == "2030-01-01T03:00:00Z"
    # A one-off resumed after its time runs at once (the owner explicitly asked for it).
    await env.scheduler.update(once["id"], "resume")
    await env.scheduler.settle()
    assert env.fired.slots(once["id"]) == [env.clock.now()]


# -- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"cron": "* * * * * *"}, "5 fields"),
        ({"cron": "every minute"}, "5 fields"),
        ({"cron": "61 * * * *"}, "invalid cron"),
        ({"cron": "@reboot"}, "unsupported cron alias"),
        ({"cron": "0 0 30 2 *"}, "never fires"),
        ({"cron": ""}, "non-empty"),
        ({"every_s": 5}, "at least 10"),
        ({"every_s": 0}, "at least 10"),
        ({"every_s": -60}, "at least 10"),
        ({"every_s": float("inf")}, "number of seconds"),
        ({"every_s": float("nan")}, "number of seconds"),
        ({"every_s": True}, "number of seconds"),
        ({"every_s": 10**9}, "at most"),
        ({"at": "2029-12-31T23:00:00Z"}, "not in the future"),
        ({"at": "2030-01-02T09:00:00"}, "needs a timezone"),
        ({"at": "tomorrow at nine"}, "not an ISO 8601"),
        ({"at": "2099-01-01T00:00:00Z"}, "5 years"),
        ({}, "exactly one of"),
        ({"cron": "* * * * *", "every_s": 60}, "exactly one of"),
    ],
)
async def test_invalid_specs_are_rejected_with_a_clear_error(env: Env, spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        await env.schedule(**spec)
    assert await env.store.tasks() == []


async def test_bad_prompts_and_too_many_tasks_are_rejected(env: Env) -> None:
    for prompt in ("", "   ", "x" * 20_000):
        with pytest.raises(ValueError, match="prompt"):
            await env.scheduler.schedule("team", prompt, every_s=60, created_by="team")
    from gateway.scheduler import MAX_TASKS_PER_GROUP

    for _ in range(MAX_TASKS_PER_GROUP):
        await env.schedule(every_s=3600)
    with pytest.raises(ValueError, match="already has"):
        await env.schedule(every_s=3600)
    await env.schedule("other", every_s=3600)  # the limit is per group


# -- the timer -------------------------------------------------------------------------------


async def test_one_timer_armed_for_the_earliest_task_and_rearmed_on_change(env: Env) -> None:
    await env.scheduler.settle()
    assert env.clock.sleepers == []  # nothing scheduled: no timer at all, no polling
    late = await env.schedule(every_s=3600)
    await env.scheduler.settle()
    assert [when for when, _ in env.clock.sleepers] == [T0 + 3600]
    await env.schedule(every_s=600)
    await env.scheduler.settle()
    assert [when for when, _ in env.clock.sleepers] == [T0 + 600]
    await env.scheduler.update(late["id"], "cancel")
    await env.scheduler.settle()
    assert [when for when, _ in env.clock.sleepers] == [T0 + 600]


async def test_system_clock_fires_on_time(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "clawgate.db")
    fired: list[float] = []
    done = asyncio.Event()

    async def fire(task: ScheduledTask, firing: TaskRun) -> None:
        fired.append(time.time())
        done.set()

    scheduler = Scheduler(store, fire, SystemClock())
    await scheduler.start()
    try:
        start = time.time()
        due = datetime.fromtimestamp(start + 0.8, UTC).isoformat()
        await scheduler.schedule("team", "now", at=due, created_by="team")
        await asyncio.wait_for(done.wait(), 5)
        assert start + 0.79 <= fired[0] < start + 1.5
    finally:
        await scheduler.stop()
        await store.close()


# -- the database is shared with the CLI ------------------------------------------------------


async def test_pause_from_another_process_wins_without_reload(env: Env, tmp_path: Path) -> None:
    task = await env.schedule(every_s=60)
    cli_store = await Store.open(tmp_path / "clawgate.db")  # a second connection, like the CLI
    try:
        await Scheduler(cli_store).update(task["id"], "pause")
    finally:
        await cli_store.close()
    await env.run_until(T0 + 600)  # the row is re-read before firing: nothing fires
    assert env.fired.calls == []
    assert env.scheduler.next_due() is None


async def test_reload_picks_up_changes_made_by_the_cli(env: Env, tmp_path: Path) -> None:
    task = await env.schedule(every_s=60)
    await env.scheduler.update(task["id"], "pause")
    cli_store = await Store.open(tmp_path / "clawgate.db")
    try:
        cli = Scheduler(cli_store, clock=env.clock)
        await cli.update(task["id"], "resume")
        other = await cli.schedule("main", "report", cron="*/10 * * * *", created_by="owner")
    finally:
        await cli_store.close()
    assert env.scheduler.next_due() is None  # not yet known to the running scheduler
    await env.scheduler.reload()
    await env.run_until(T0 + 700)
    assert len(env.fired.slots(task["id"])) == 11
    assert len(env.fired.slots(other["id"])) == 1


# -- the run log -----------------------------------------------------------------------------


async def test_each_firing_is_logged_with_time_duration_and_result(env: Env) -> None:
    env.fired.cost = 3.0
    ok = await env.schedule(every_s=60)
    await env.run_until(T0 + 125)
    runs = await env.scheduler.runs(ok["id"])
    assert [(r.scheduled_for, r.started_at, r.status, r.duration, r.result) for r in runs] == [
        (T0 + 60, T0 + 60, "ok", 3.0, f"ran {ok['id']}"),
        (T0 + 120, T0 + 120, "ok", 3.0, f"ran {ok['id']}"),
    ]
    env.fired.fail = LookupError("group 'team' is not registered")
    await env.run_until(T0 + 185)
    last = (await env.scheduler.runs(ok["id"]))[-1]
    assert last.status == "error" and "not registered" in (last.error or "")
    # A failed start does not stop the schedule.
    assert (await env.store.task(ok["id"])).next_run_at == T0 + 240  # type: ignore[union-attr]
    [row] = await env.scheduler.list("team")
    assert row["last_result"].startswith("error: could not start")


async def test_chat_launcher_runs_the_task_as_a_chat_message_and_logs_the_run(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "clawgate.db")
    try:
        group = Group("team", "tg:-1", "team", "@Andy", requires_trigger=True)
        await store.register_group(group)
        woken: list[str] = []
        launcher = ChatLauncher(store, {"team": group}.get, lambda chat: "telegram", woken.append)
        scheduler = Scheduler(store, launcher, FakeClock(T0))
        task = await scheduler.schedule("team", "summarise the day", every_s=60, created_by="team")
        firing = await store.start_task_run(task["id"], T0 + 60, T0 + 60)
        await launcher(await store.task(task["id"]), firing)  # type: ignore[arg-type]
        await launcher(await store.task(task["id"]), firing)  # a replay after a crash: no duplicate
        [message] = await store.messages_for_chat("tg:-1")
        assert message.status == "pending"  # runs without an @mention
        assert message.sender_name == f"scheduled task {task['id']}" and message.text == "summarise the day"
        assert woken == ["team", "team"]

        claimed = await store.claim_run(group, 10)
        assert claimed is not None and [m.id for m in claimed.messages] == [message.id]
        await store.finish_run(claimed.run_id)
        await scheduler.run_finished(claimed, "Here is the summary.", None)
        [run] = await store.task_runs(task["id"])
        assert run.status == "ok" and run.result == "Here is the summary." and run.run_id == claimed.run_id
        assert run.finished_at is not None and run.duration is not None and 0 <= run.duration < 5
        assert (await store.task(task["id"])).last_result == "Here is the summary."  # type: ignore[union-attr]

        with pytest.raises(LookupError, match="not registered"):
            gone = ChatLauncher(store, lambda folder: None, lambda chat: None, woken.append)
            await gone(await store.task(task["id"]), firing)  # type: ignore[arg-type]
    finally:
        await store.close()
