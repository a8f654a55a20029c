"""`clawgate tasks …`: list, pause, resume and cancel scheduled tasks from the shell.

Works on the gateway's database directly (safe while the gateway runs: SQLite WAL), then
tells a running gateway to reload its timers through the control socket.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import click

from core import paths


def _with_scheduler[T](action: Callable[[Any], Awaitable[T]]) -> T:
    from core.paths import DATABASE
    from gateway.scheduler import Scheduler
    from gateway.store import Store

    async def go() -> T:
        store = await Store.open(paths.data_dir() / DATABASE)
        try:
            return await action(Scheduler(store))
        finally:
            await store.close()

    return asyncio.run(go())


def _short(text: str | None, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


@click.group("tasks")
def tasks_cli() -> None:
    """Scheduled tasks (cron, interval, one-off) of all groups."""


@tasks_cli.command("list")
@click.argument("group", required=False)
@click.option("--all", "show_all", is_flag=True, help="Also show cancelled and finished tasks.")
def tasks_list(group: str | None, show_all: bool) -> None:
    """List tasks, optionally only those of GROUP (its folder name)."""
    rows = _with_scheduler(lambda s: s.list(group, include_finished=show_all))
    if not rows:
        click.echo("no tasks" + (f" for group {group!r}" if group else ""))
        return
    click.echo(f"{'ID':>5}  {'GROUP':<14} {'STATUS':<9} {'SCHEDULE':<22} {'NEXT RUN (UTC)':<21} PROMPT")
    for t in rows:
        click.echo(
            f"{t['id']:>5}  {_short(t['group'], 14):<14} {t['status']:<9} {_short(t['schedule'], 22):<22} "
            f"{t['next_run'] or '-':<21} {_short(t['prompt'], 50)}"
        )
        if t["last_result"]:
            click.echo(f"{'':>7}last run {t['last_run'] or '?'}: {_short(t['last_result'], 90)}")


@tasks_cli.command("runs")
@click.argument("task_id", type=int)
@click.option("-n", "limit", default=20, show_default=True, help="How many of the latest runs to show.")
def tasks_runs(task_id: int, limit: int) -> None:
    """Show the run log of TASK_ID: when, how long, result or error."""
    from gateway.scheduler import iso

    runs = _with_scheduler(lambda s: s.runs(task_id))
    if not runs:
        click.echo(f"task {task_id} has not run yet (or does not exist)")
        return
    for r in runs[-limit:]:
        took = "-" if r.duration is None else f"{r.duration:.1f}s"
        detail = r.error if r.error else r.result
        click.echo(f"{iso(r.scheduled_for)}  {r.status:<7} {took:>8}  {_short(detail, 80)}")


def _change(action: str, task_id: str) -> None:
    from gateway.control_client import notify_gateway

    try:
        task = _with_scheduler(lambda s: s.update(task_id, action))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"task {task['id']} ({task['group']}): {task['status']}, next run {task['next_run'] or '-'}")
    if notify_gateway("tasks"):
        click.echo("the running gateway picked up the change")
    else:
        click.echo("no running gateway answered; the change applies when it starts")


@tasks_cli.command("pause")
@click.argument("task_id")
def tasks_pause(task_id: str) -> None:
    """Pause TASK_ID (it keeps its schedule and can be resumed)."""
    _change("pause", task_id)


@tasks_cli.command("resume")
@click.argument("task_id")
def tasks_resume(task_id: str) -> None:
    """Resume TASK_ID; its next run is computed from now (missed runs are not made up)."""
    _change("resume", task_id)


@tasks_cli.command("cancel")
@click.argument("task_id")
def tasks_cancel(task_id: str) -> None:
    """Cancel TASK_ID for good."""
    _change("cancel", task_id)
