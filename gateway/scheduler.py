"""Scheduled tasks: cron expressions, fixed intervals and one-off times, fired by one precise timer.

The scheduler keeps the next due time of every active task in memory and arms exactly
one timer for the earliest of them; any change (a new task, pause, resume, cancel, a
`reload()` after the CLI edited the database) re-arms it. Nothing polls.

Semantics:
- cron: standard 5-field expressions (or @hourly, @daily, …) evaluated in UTC by croniter.
- interval: slots are `anchor + k * every_s` (the anchor is the creation time), so a
  late or slow firing never shifts the following ones (no drift).
- once: an ISO 8601 time with a timezone, in the future; the task is `done` after it fired.
- Downtime: a task whose slot passed while the gateway was down fires once (not once per
  missed slot); the next slot is then computed from now (for intervals: the next
  anchor-aligned slot after now).
- The row is re-read right before firing, so a pause or cancel written by another process
  (the CLI) wins. A resumed task gets its next slot computed from now; a one-off resumed
  after its time fires at once.

Firing hands the task to a callback (`Fire`); in the gateway that is `ChatLauncher`, which
puts the prompt into the group's chat as a pending message so it runs in the group's
sandbox like any message. Every firing is logged in `task_runs`; `run_finished` closes the
log row when the run that answered it ends (time, duration, result or error).

The clock is injected (`Clock`): tests drive wall time by hand, the gateway uses `SystemClock`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

from croniter import croniter

from core.models import ClaimedRun, Group, InboundMessage, ScheduledTask, TaskRun
from gateway.store import Store

log = logging.getLogger(__name__)

MIN_INTERVAL_S = 10.0
MAX_INTERVAL_S = 366 * 86400.0
MAX_AHEAD_S = 5 * 366 * 86400.0
MAX_PROMPT_CHARS = 16_000
MAX_CRON_CHARS = 120
MAX_TASKS_PER_GROUP = 50  # active + paused
ACTIONS = ("pause", "resume", "cancel")
SENDER_ID = "scheduler"
CRON_ALIASES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"})
RETRY_AFTER_FAILURE_S = 60.0  # a firing that failed inside the scheduler itself (e.g. database busy)


# -- time ---------------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> float:
        """Wall time, UTC epoch seconds."""

    async def sleep_until(self, when: float) -> None:
        """Return once `now() >= when` (it may be cancelled earlier)."""


class SystemClock:
    """Real time. Sleeps in slices so a wall-clock jump or a suspended host is noticed within minutes."""

    SLICE_S = 300.0

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, when: float) -> None:
        while True:
            delay = when - time.time()
            if delay <= 0:
                return
            await asyncio.sleep(min(delay, self.SLICE_S))


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- specs --------------------------------------------------------------------------------


def cron_next(expr: str, after: float) -> float:
    """The first time strictly after `after` that matches `expr` (UTC)."""
    return float(croniter(expr, datetime.fromtimestamp(after, UTC)).get_next(float))


def check_cron(expr: object, now: float) -> str:
    if not isinstance(expr, str) or not expr.strip():
        raise ValueError("cron must be a non-empty cron expression, e.g. '0 9 * * 1-5'")
    text = " ".join(expr.split())
    if len(text) > MAX_CRON_CHARS:
        raise ValueError(f"cron expression is longer than {MAX_CRON_CHARS} characters")
    if text.startswith("@"):
        text = text.lower()
        if text not in CRON_ALIASES:
            raise ValueError(f"unsupported cron alias {expr!r}; use one of {', '.join(sorted(CRON_ALIASES))}")
    elif len(text.split()) != 5:
        raise ValueError(
            f"invalid cron expression {expr!r}: it needs exactly 5 fields (minute hour day-of-month "
            "month day-of-week); second-level schedules are not supported"
        )
    if not croniter.is_valid(text):
        raise ValueError(f"invalid cron expression {expr!r}")
    try:
        cron_next(text, now)
    except (ValueError, KeyError, TypeError) as exc:  # e.g. '0 0 30 2 *' never matches
        raise ValueError(f"cron expression {expr!r} never fires ({exc})") from None
    return text


def check_interval(every_s: object) -> float:
    if isinstance(every_s, bool) or not isinstance(every_s, int | float) or not math.isfinite(every_s):
        raise ValueError("every_s must be a number of seconds")
    if every_s < MIN_INTERVAL_S:
        raise ValueError(f"every_s must be at least {MIN_INTERVAL_S:g} seconds")
    if every_s > MAX_INTERVAL_S:
        raise ValueError(f"every_s must be at most {MAX_INTERVAL_S:g} seconds (366 days)")
    return float(every_s)


def parse_at(at: object, now: float) -> float:
    if not isinstance(at, str) or not at.strip():
        raise ValueError("at must be an ISO 8601 time with a timezone, e.g. 2030-01-31T09:00:00+01:00")
    try:
        when = datetime.fromisoformat(at.strip())
    except ValueError:
        raise ValueError(
            f"at {at!r} is not an ISO 8601 time; use e.g. 2030-01-31T09:00:00+01:00 or …Z"
        ) from None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"at {at!r} needs a timezone, e.g. 2030-01-31T09:00:00Z or +01:00")
    ts = when.timestamp()
    if ts <= now:
        raise ValueError(f"at {at!r} is not in the future (now is {iso(now)})")
    if ts - now > MAX_AHEAD_S:
        raise ValueError("at is more than 5 years ahead")
    return ts


def parse_schedule(
    cron: object, every_s: object, at: object, now: float
) -> tuple[str, str, float, float | None]:
    """(kind, spec, first run, anchor) for exactly one of cron / every_s / at; ValueError otherwise."""
    given = [name for name, value in (("cron", cron), ("every_s", every_s), ("at", at)) if value is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of cron, every_s or at")
    if cron is not None:
        expr = check_cron(cron, now)
        return "cron", expr, cron_next(expr, now), None
    if every_s is not None:
        seconds = check_interval(every_s)
        spec = str(int(seconds)) if seconds.is_integer() else repr(seconds)
        return "interval", spec, now + seconds, now
    when = parse_at(at, now)
    return "once", iso(when) or "", when, None


def check_prompt(prompt: object) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError("prompt must be a non-empty string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"prompt is longer than {MAX_PROMPT_CHARS} characters")
    return prompt.strip()


def next_slot(task: ScheduledTask, slot: float, now: float) -> float | None:
    """The slot after firing `slot` at `now`: None for a one-off; never in the past, never drifting."""
    if task.kind == "once":
        return None
    if task.kind == "cron":
        return cron_next(task.spec, max(slot, now))
    every = float(task.spec)
    anchor = task.anchor if task.anchor is not None else slot
    k = round((slot - anchor) / every) + 1
    if anchor + k * every <= now:  # missed slots (downtime, slow firing): skip to the next one after now
        k = math.floor((now - anchor) / every) + 1
    while anchor + k * every <= now:  # float rounding guard
        k += 1
    return anchor + k * every


def resume_slot(task: ScheduledTask, now: float) -> float:
    """Where a resumed task continues: its next regular slot after now (a late one-off: at once)."""
    if task.kind == "once":
        return max(datetime.fromisoformat(task.spec).timestamp(), now)
    if task.kind == "cron":
        return cron_next(task.spec, now)
    every = float(task.spec)
    anchor = task.anchor if task.anchor is not None else now
    k = max(1, math.floor((now - anchor) / every) + 1)
    while anchor + k * every <= now:
        k += 1
    return anchor + k * every


def parse_task_id(task_id: int | str) -> int | None:
    if isinstance(task_id, bool):
        return None
    if isinstance(task_id, int):
        return task_id if task_id > 0 else None
    text = str(task_id).strip().removeprefix("#")
    return int(text) if text.isdecimal() and len(text) < 19 and int(text) > 0 else None


def describe(task: ScheduledTask) -> dict[str, Any]:
    """A task as agents, the CLI and admin commands see it."""
    return {
        "id": task.id,
        "group": task.folder,
        "prompt": task.prompt,
        "kind": task.kind,
        "spec": task.spec,
        "schedule": task.spec if task.kind != "interval" else f"every {task.spec}s",
        "status": task.status,
        "next_run": iso(task.next_run_at),
        "next_run_at": task.next_run_at,  # epoch seconds, for sorting and "in 5m" displays
        "last_run": iso(task.last_run_at),
        "last_result": task.last_result,
        "created_by": task.created_by,
        "created_at": iso(task.created_at),
    }


# -- the scheduler ------------------------------------------------------------------------

Fire = Callable[[ScheduledTask, TaskRun], Awaitable[None]]


class Scheduler:
    """Implements `gateway.agent_services.TaskBook`; authorization happened before any call lands here."""

    def __init__(self, store: Store, fire: Fire | None = None, clock: Clock | None = None) -> None:
        self._store = store
        self._fire = fire
        self.clock: Clock = clock or SystemClock()
        self._due: dict[int, float] = {}  # active task id -> next_run_at
        self._changed = asyncio.Event()
        self._parked = asyncio.Event()
        self._armed_for: float | None = None
        self._loop: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._fire is None:
            raise RuntimeError("a scheduler without a fire callback can edit tasks but not run them")
        await self.reload()
        self._loop = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await loop

    async def reload(self) -> None:
        """Re-read every active task from the database and re-arm (the CLI changed something)."""
        self._due = {
            t.id: t.next_run_at
            for t in await self._store.tasks(statuses=("active",))
            if t.next_run_at is not None
        }
        self._changed.set()

    def next_due(self) -> float | None:
        """When the earliest active task is due (for /status), or None."""
        return min(self._due.values(), default=None)

    async def settle(self) -> None:
        """Wait until nothing is due and the timer is armed for the future (tests use this)."""
        while True:
            if (
                self._parked.is_set()
                and not self._changed.is_set()
                and (self._armed_for is None or self._armed_for > self.clock.now())
            ):
                return
            await asyncio.sleep(0.001)

    # -- TaskBook ----------------------------------------------------------------------

    async def schedule(
        self,
        folder: str,
        prompt: str,
        *,
        cron: str | None = None,
        every_s: float | None = None,
        at: str | None = None,
        created_by: str,
    ) -> dict[str, Any]:
        text = check_prompt(prompt)
        now = self.clock.now()
        kind, spec, first, anchor = parse_schedule(cron, every_s, at, now)
        if len(await self._store.tasks(folder, ("active", "paused"))) >= MAX_TASKS_PER_GROUP:
            raise ValueError(
                f"group {folder!r} already has {MAX_TASKS_PER_GROUP} tasks; cancel some before adding more"
            )
        task_id = await self._store.add_task(folder, text, kind, spec, first, anchor, created_by, now)
        log.info("task %d scheduled for %s by %s: %s %s", task_id, folder, created_by, kind, spec)
        self._arm(task_id, first)
        task = await self._store.task(task_id)
        assert task is not None
        return describe(task)

    async def list(self, folder: str | None, *, include_finished: bool = False) -> list[dict[str, Any]]:
        statuses: Iterable[str] | None = None if include_finished else ("active", "paused")
        return [describe(t) for t in await self._store.tasks(folder, statuses)]

    async def group_of(self, task_id: int | str) -> str | None:
        number = parse_task_id(task_id)
        task = None if number is None else await self._store.task(number)
        return None if task is None else task.folder

    async def update(self, task_id: int | str, action: str) -> dict[str, Any]:
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
        number = parse_task_id(task_id)
        task = None if number is None else await self._store.task(number)
        if task is None:
            raise ValueError(f"no task {task_id!r}")
        if action == "pause" and task.status != "paused":
            if task.status != "active":
                raise ValueError(f"task {task.id} is {task.status}; only an active task can be paused")
            await self._store.set_task_status(task.id, "paused", None)
            self._disarm(task.id)
        elif action == "resume" and task.status != "active":
            if task.status != "paused":
                raise ValueError(f"task {task.id} is {task.status}; only a paused task can be resumed")
            when = resume_slot(task, self.clock.now())
            await self._store.set_task_status(task.id, "active", when)
            self._arm(task.id, when)
        elif action == "cancel" and task.status != "cancelled":
            await self._store.set_task_status(task.id, "cancelled", None)
            self._disarm(task.id)
        log.info("task %d: %s", task.id, action)
        fresh = await self._store.task(task.id)
        assert fresh is not None
        return describe(fresh)

    # -- run log -----------------------------------------------------------------------

    async def run_finished(self, run: ClaimedRun, text: str | None, error: str | None) -> None:
        """`RunExecutor` finished a run: log it against every task firing whose message it answered."""
        task_ids = await self._store.finish_task_runs_of_run(
            run.run_id, [m.id for m in run.messages], text, error
        )
        for task_id in task_ids:
            log.info("task %d: run %d finished (error: %s)", task_id, run.run_id, error)

    async def runs(self, task_id: int) -> builtins.list[TaskRun]:
        return await self._store.task_runs(task_id)

    # -- the timer ---------------------------------------------------------------------

    def _arm(self, task_id: int, when: float) -> None:
        self._due[task_id] = when
        self._changed.set()

    def _disarm(self, task_id: int) -> None:
        self._due.pop(task_id, None)
        self._changed.set()

    async def _run(self) -> None:
        while True:
            self._changed.clear()  # before reading `_due`: a change after this line wakes the park
            now = self.clock.now()
            due = sorted((when, task_id) for task_id, when in self._due.items() if when <= now)
            if due:
                for _, task_id in due:
                    await self._fire_safely(task_id)
                continue
            self._armed_for = self.next_due()
            await self._park(self._armed_for)

    async def _park(self, until: float | None) -> None:
        """Sleep until the earliest slot or until something changed, whichever comes first."""
        waiters: list[asyncio.Future[Any]] = [asyncio.ensure_future(self._changed.wait())]
        if until is not None:
            waiters.append(asyncio.ensure_future(self.clock.sleep_until(until)))
        self._parked.set()
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._parked.clear()
            for waiter in waiters:
                waiter.cancel()

    async def _fire_safely(self, task_id: int) -> None:
        try:
            await self._fire_due(task_id)
        except Exception:
            log.exception("task %d: firing failed; trying again in %gs", task_id, RETRY_AFTER_FAILURE_S)
            if task_id in self._due:
                self._due[task_id] = self.clock.now() + RETRY_AFTER_FAILURE_S

    async def _fire_due(self, task_id: int) -> None:
        task = await self._store.task(task_id)  # re-read: the CLI may have paused or cancelled it
        now = self.clock.now()
        if task is None or task.status != "active" or task.next_run_at is None:
            self._due.pop(task_id, None)
            return
        if task.next_run_at > now:  # moved meanwhile (e.g. resumed from the CLI)
            self._due[task_id] = task.next_run_at
            return
        slot = task.next_run_at
        if now - slot > 1:
            log.warning("task %d: slot %s was missed; running it once now", task.id, iso(slot))
        firing = await self._store.start_task_run(task.id, slot, now)
        if firing.status == "running":  # else: a replay after a crash, and that run already ended
            assert self._fire is not None
            try:
                await self._fire(task, firing)
            except Exception as exc:
                log.warning("task %d could not be started: %s", task.id, exc)
                await self._store.finish_task_run(firing.id, None, f"could not start: {exc}", 0.0)
        following = next_slot(task, slot, self.clock.now())
        if await self._store.advance_task(task.id, slot, following, now) and following is not None:
            self._due[task.id] = following
            return
        fresh = await self._store.task(task.id)  # done, or changed by someone else meanwhile
        if fresh is not None and fresh.status == "active" and fresh.next_run_at is not None:
            self._due[task.id] = fresh.next_run_at
        else:
            self._due.pop(task.id, None)


# -- the gateway's way of running a task ----------------------------------------------------


def task_message(task: ScheduledTask, firing: TaskRun, chat_id: str, channel: str) -> InboundMessage:
    """The synthetic chat message carrying a task's prompt; its id is unique per task and slot."""
    return InboundMessage(
        chat_id=chat_id,
        external_id=f"task:{task.id}:{round(firing.scheduled_for * 1000)}",
        sender_id=SENDER_ID,
        sender_name=f"scheduled task {task.id}",
        text=task.prompt,
        timestamp=time.time(),
        channel=channel,
    )


class ChatLauncher:
    """Runs a due task like a message: a pending message in the group's chat, then wake its lane.

    The answer reaches the chat through the normal outbox. A replay after a crash inserts
    nothing new (the message id is unique per task and slot).
    """

    def __init__(
        self,
        store: Store,
        group_by_folder: Callable[[str], Group | None],
        channel_name_for: Callable[[str], str | None],
        wake: Callable[[str], None],
    ) -> None:
        self._store = store
        self._group_by_folder = group_by_folder
        self._channel_name_for = channel_name_for
        self._wake = wake

    async def __call__(self, task: ScheduledTask, firing: TaskRun) -> None:
        group = self._group_by_folder(task.folder)
        if group is None:
            raise LookupError(f"group {task.folder!r} is not registered")
        channel = self._channel_name_for(group.chat_id) or SENDER_ID
        message = task_message(task, firing, group.chat_id, channel)
        await self._store.ingest(message, "pending")
        await self._store.link_task_run(firing.id, message.chat_id, message.external_id)
        self._wake(group.folder)
