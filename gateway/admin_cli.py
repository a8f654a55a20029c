"""The admin commands' CLI twins: `clawgate groups register|unregister`, `clawgate dlq …`, `clawgate status`.

Like `gateway.tasks_cli`, they work on the gateway's database directly (safe while the
gateway runs: SQLite WAL) and then tell a running gateway through the control socket
(`notify_gateway`), so the change takes effect at once; without a gateway it applies at
the next start. `status` asks the running gateway; without one it reports what the
database knows.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import click

from core import paths
from core.config import AGENT_RUNTIMES
from core.senders import SENDER_POLICIES

if TYPE_CHECKING:  # imported where used: the CLI starts without loading the store
    from gateway.store import Store


def _with_store[T](action: Callable[[Store], Awaitable[T]]) -> T:
    from core.paths import DATABASE
    from gateway.store import Store

    async def go() -> T:
        store = await Store.open(paths.data_dir() / DATABASE)
        try:
            return await action(store)
        finally:
            await store.close()

    return asyncio.run(go())


def _announce(what: str) -> None:
    from gateway.control_client import notify_gateway

    if notify_gateway(what):
        click.echo("the running gateway picked up the change")
    else:
        click.echo("no running gateway answered; the change applies when it starts")


def _one_line(text: str, width: int = 120) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


# -- groups ---------------------------------------------------------------------------------


def _check_chat_id(chat_id: str) -> str:
    from gateway.registry import validate_chat_id

    try:
        return validate_chat_id(chat_id)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


def _check_trigger(trigger: str) -> str:
    if not trigger.startswith("@") or len(trigger) < 2 or any(c.isspace() for c in trigger):
        raise click.ClickException(f"invalid trigger {trigger!r}: use @ and a word, e.g. --trigger @Andy")
    return trigger


@click.command("register")
@click.argument("chat_id")
@click.argument("name")
@click.option(
    "--trigger", default=None, help="The word that makes the assistant answer (default: @<assistant_name>)."
)
@click.option("--no-trigger", "no_trigger", is_flag=True, help="Answer every message in the chat.")
@click.option(
    "--runtime",
    type=click.Choice(AGENT_RUNTIMES),
    default=None,
    help="The group's agent runtime (default: [agent] runtime).",
)
@click.option(
    "--senders",
    type=click.Choice(SENDER_POLICIES),
    default=None,
    help="Who may trigger the assistant; default: members with --members, else "
    "[groups] default_sender_policy.",
)
@click.option("--members", default=None, help="Allowed sender ids, comma-separated, e.g. tg:1,slack:U123.")
def groups_register(
    chat_id: str,
    name: str,
    trigger: str | None,
    no_trigger: bool,
    runtime: str | None,
    senders: str | None,
    members: str | None,
) -> None:
    """Register CHAT_ID (see /chatid) as a group whose folder is NAME."""
    from core import config as config_mod
    from core.models import Group
    from core.senders import parse_sender_list, validate_policy
    from gateway.registry import GroupRegistry
    from groups.folders import validate_folder

    _check_chat_id(chat_id)
    try:
        validate_folder(name)
        listed = parse_sender_list(members) if members is not None else ()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if trigger is not None:
        _check_trigger(trigger)
    try:
        config = config_mod.load(paths.config_dir()) if trigger is None or senders is None else None
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    trigger = trigger or (config.default_trigger if config else "")
    policy = validate_policy(
        senders or ("members" if listed else config.groups.default_sender_policy if config else "open")
    )

    async def register(store: Store) -> None:
        registry = GroupRegistry(store)
        await registry.load()
        group = Group(name, chat_id, name, trigger, not no_trigger, False, runtime=runtime, senders=policy)
        await registry.register(group, listed, "cli")

    try:
        _with_store(register)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    how = "no trigger" if no_trigger else "trigger " + trigger
    if policy != "open" or listed:  # `open` is how every group behaved before policies
        how += f", senders {policy}" + (f": {', '.join(listed)}" if listed else "")
    click.echo(f"registered {name} for {chat_id} ({how})")
    _announce("groups")


@click.command("set")
@click.argument("name")
@click.option(
    "--runtime",
    type=click.Choice([*AGENT_RUNTIMES, "default"]),
    default=None,
    help="The group's agent runtime; default: follow [agent] runtime.",
)
@click.option(
    "--senders", type=click.Choice(SENDER_POLICIES), default=None, help="Who may trigger the assistant."
)
def groups_set(name: str, runtime: str | None, senders: str | None) -> None:
    """Change a registered group's settings (its running container restarts on the next message)."""
    from gateway.group_settings import set_group
    from gateway.registry import GroupRegistry

    if runtime is None and senders is None:
        raise click.UsageError("nothing to change: give --runtime and/or --senders")

    async def update(store: Store) -> str:
        registry = GroupRegistry(store)
        await registry.load()
        return await set_group(registry, name, runtime, senders)

    try:
        done = _with_store(update)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(done)
    _announce("groups")


@click.command("unregister")
@click.argument("name")
def groups_unregister(name: str) -> None:
    """Unregister the group NAME (its folder and files are kept)."""
    from gateway.registry import GroupRegistry

    async def unregister(store: Store) -> bool:
        registry = GroupRegistry(store)
        await registry.load()
        return await registry.unregister(name)

    try:
        found = _with_store(unregister)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if not found:
        raise click.ClickException(f"no registered group {name!r} (see `clawgate groups list`)")
    click.echo(f"unregistered {name} (its folder is kept)")
    _announce("groups")


# -- dead letters ------------------------------------------------------------------------------


@click.group("dlq")
def dlq_cli() -> None:
    """Dead letters: work that failed for good (retry it or drop it)."""


def _letter_id(text: str) -> int:
    digits = text.strip().removeprefix("#")
    if not digits.isdecimal() or len(digits) > 18 or int(digits) < 1:
        raise click.ClickException(f"invalid dead-letter id {text!r}: a number, see `clawgate dlq list`")
    return int(digits)


@dlq_cli.command("list")
def dlq_list() -> None:
    """List dead letters: id, kind (run = unanswered messages, reply = undelivered reply), reason."""
    letters = _with_store(lambda store: store.dead_letters())
    if not letters:
        click.echo("no dead letters")
        return
    for letter_id, kind, ref, reason in letters:
        click.echo(f"#{letter_id:<5} {kind:<6} {ref:<16} {_one_line(reason)}")


@dlq_cli.command("retry")
@click.argument("letter_id")
def dlq_retry(letter_id: str) -> None:
    """Queue dead letter LETTER_ID again (its messages are answered, or its reply is sent)."""
    number = _letter_id(letter_id)

    async def retry(store: Store) -> str | None:
        letter = await store.dead_letter(number)
        if letter is None:
            return None
        kind, ref, payload = letter
        # The JSON the store wrote for this kind of letter (dead_letter_pending, dead_letter_reply).
        if kind == "run":
            ids = [int(i) for i in cast("list[int | str]", payload.get("message_ids", []))]
            revived = await store.revive_messages(ids)
            await store.drop_dead_letter(number)
            return f"{revived} message(s) of {ref} will be answered again"
        if kind == "reply":
            await store.revive_reply(int(cast("int | str", payload["outbox_id"])))
            await store.drop_dead_letter(number)
            return f"reply {ref} will be sent again"
        raise click.ClickException(f"dead letter #{number} has unknown kind {kind!r}; drop it instead")

    done = _with_store(retry)
    if done is None:
        raise click.ClickException(f"no dead letter #{number} (see `clawgate dlq list`)")
    click.echo(f"dead letter #{number} queued again: {done}")
    _announce("dlq")


@dlq_cli.command("drop")
@click.argument("letter_id")
def dlq_drop(letter_id: str) -> None:
    """Delete dead letter LETTER_ID for good (its messages stay in the history, unanswered)."""
    number = _letter_id(letter_id)
    if not _with_store(lambda store: store.drop_dead_letter(number)):
        raise click.ClickException(f"no dead letter #{number} (see `clawgate dlq list`)")
    click.echo(f"dropped dead letter #{number}")
    _announce("dlq")


# -- status ------------------------------------------------------------------------------------------


@click.command("status")
def status_cli() -> None:
    """What the running gateway reports (/status); without one, what the database knows.

    Exits 1 when no gateway answers, so monitoring and scripts can test `clawgate status`.
    """
    from gateway.control_client import request

    answer = request({"op": "status"})
    if answer and answer.get("ok") and isinstance(answer.get("text"), str):
        click.echo(answer["text"])
        return
    from core.paths import DATABASE

    click.echo("the gateway is not running (no answer on its control socket)")
    if not (paths.data_dir() / DATABASE).exists():
        click.echo("no database yet: run `clawgate run` once")
        sys.exit(1)

    async def offline(store: Store) -> list[str]:
        groups = await store.groups()
        tasks = await store.tasks(statuses=("active",))
        upcoming = sorted(
            ((t.next_run_at, t) for t in tasks if t.next_run_at is not None), key=lambda pair: pair[0]
        )
        lines = [
            f"groups: {len(groups)}" + (" (" + ", ".join(g.folder for g in groups) + ")" if groups else ""),
            f"messages pending: {await store.count_messages('pending')}",
            f"dead letters: {len(await store.dead_letters())}",
            f"active tasks: {len(tasks)}",
        ]
        for next_run_at, task in upcoming[:3]:
            wait = max(0, int(next_run_at - time.time()))
            lines.append(f"next task {task.id} ({task.folder}) in {_age(wait)}")
        return lines

    for line in _with_store(offline):
        click.echo(line)
    sys.exit(1)


def _age(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
