"""`clawgate groups allow|block|senders`: the CLI twins of `/allow`, `/block` and `/senders`.

Like the other group commands (gateway/admin_cli.py) they write the gateway's database directly
and then ask a running gateway to reload its groups, which re-reads the sender lists and settles
messages held for a decision (gateway.senders). Sender ids are checked by `core.senders`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from core.senders import SenderState
from gateway.admin_cli import _announce, _with_store
from gateway.sender_queue import held_lines

if TYPE_CHECKING:
    from gateway.store import Store


def _decide(name: str, sender: str, state: SenderState) -> None:
    from core.senders import validate_sender_id

    try:
        validate_sender_id(sender)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None

    async def decide(store: Store) -> None:
        group = next((g for g in await store.groups() if g.folder == name), None)
        if group is None:
            raise ValueError(f"no registered group {name!r} (see `clawgate groups list`)")
        if group.is_main:
            raise ValueError("the main chat is always limited to admins ([admin] users)")
        await store.set_sender(name, sender, state, "cli")

    try:
        _with_store(decide)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if state == "allowed":
        click.echo(f"{name}: {sender} may trigger the assistant")
    else:
        click.echo(f"{name}: {sender} is blocked (their messages are context only)")
    _announce("groups")


@click.command("allow")
@click.argument("name")
@click.argument("sender")
def groups_allow(name: str, sender: str) -> None:
    """Let SENDER (e.g. tg:123456, slack:U0123ABCD; see /whoami) trigger the assistant of group NAME."""
    _decide(name, sender, "allowed")


@click.command("block")
@click.argument("name")
@click.argument("sender")
def groups_block(name: str, sender: str) -> None:
    """Keep SENDER from triggering the assistant of group NAME (their messages stay context only)."""
    _decide(name, sender, "blocked")


@click.command("senders")
@click.argument("name")
def groups_senders(name: str) -> None:
    """Show group NAME's sender policy, its allowed and blocked senders, and who waits (held)."""

    async def show(store: Store) -> list[str] | None:
        group = next((g for g in await store.groups() if g.folder == name), None)
        if group is None:
            return None
        if group.is_main:
            return [f"{name}: admins only ([admin] users)"]
        listed = (await store.group_senders()).get(name, {})
        held = [(sender, count) for _, sender, _, count in await store.held_queue(group.chat_id)]
        return (
            [f"{name}: senders {group.senders}"]
            + [f"  {s} {state}" for s, state in sorted(listed.items())]
            + held_lines(held, None)  # which of them has an open prompt only the gateway knows
        )

    lines = _with_store(show)
    if lines is None:
        raise click.ClickException(f"no registered group {name!r} (see `clawgate groups list`)")
    for line in lines:
        click.echo(line)
