"""Registered groups (a chat bound to a folder and a sandbox) and each group's session marker.

A group's extra mounts are stored as the JSON of its mount *requests*; they are validated
against the allowlist every time a sandbox starts (groups.mounts), never trusted from here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from typing import Any

from core.config import AGENT_RUNTIMES
from core.models import Group, MountRequest
from core.senders import SenderPolicy, validate_policy
from gateway.store.connection import Database

log = logging.getLogger(__name__)


class GroupStore(Database):
    """The groups and sessions tables."""

    async def register_group(self, group: Group, members: Iterable[str] = (), by: str | None = None) -> None:
        """The group and its first allowed senders (`/register … --members`), in one transaction."""
        now = time.time()
        async with self._transaction():
            await self._conn.execute(
                "INSERT INTO groups (folder, chat_id, name, trigger, requires_trigger, is_main, "
                "extra_mounts, created_at, runtime, senders) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    group.folder,
                    group.chat_id,
                    group.name,
                    group.trigger,
                    int(group.requires_trigger),
                    int(group.is_main),
                    _mounts_to_json(group.extra_mounts),
                    now,
                    group.runtime,
                    group.senders,
                ),
            )
            # A folder registered again starts from its new list, not an old one's leftovers.
            await self._conn.execute("DELETE FROM group_senders WHERE folder = ?", (group.folder,))
            await self._conn.executemany(
                "INSERT INTO group_senders (folder, sender_id, state, decided_by, decided_at) "
                "VALUES (?, ?, 'allowed', ?, ?)",
                [(group.folder, sender, by, now) for sender in members],
            )

    async def move_group_chat(self, folder: str, chat_id: str) -> None:
        await self._write("UPDATE groups SET chat_id = ? WHERE folder = ?", (chat_id, folder))

    async def unregister_group(self, folder: str) -> bool:
        cur = await self._write("DELETE FROM groups WHERE folder = ?", (folder,))
        return cur.rowcount > 0

    async def groups(self) -> list[Group]:
        async with self._conn.execute(
            "SELECT folder, chat_id, name, trigger, requires_trigger, is_main, extra_mounts, runtime, "
            "senders FROM groups ORDER BY is_main DESC, folder"
        ) as cur:
            return [_group(row) for row in await cur.fetchall()]

    async def set_group_mounts(self, folder: str, requests: Iterable[MountRequest]) -> None:
        await self._write(
            "UPDATE groups SET extra_mounts = ? WHERE folder = ?", (_mounts_to_json(requests), folder)
        )

    async def set_group_runtime(self, folder: str, runtime: str | None) -> None:
        """The group's agent runtime; None follows `[agent] runtime`."""
        await self._write("UPDATE groups SET runtime = ? WHERE folder = ?", (runtime, folder))

    async def set_group_senders(self, folder: str, policy: SenderPolicy) -> None:
        """The group's sender policy (core.senders); its allow/block list is kept as it is."""
        await self._write("UPDATE groups SET senders = ? WHERE folder = ?", (policy, folder))

    # -- sessions: a marker per group of its agent session (`/reset` records a new one) ----

    async def set_session(self, folder: str, session_id: str) -> None:
        await self._write(
            "INSERT INTO sessions (folder, session_id, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (folder) DO UPDATE SET session_id = excluded.session_id, "
            "updated_at = excluded.updated_at",
            (folder, session_id, time.time()),
        )

    async def session(self, folder: str) -> str | None:
        async with self._conn.execute("SELECT session_id FROM sessions WHERE folder = ?", (folder,)) as cur:
            row = await cur.fetchone()
        return None if row is None else str(row[0])


def _group(row: Iterable[Any]) -> Group:
    folder, chat_id, name, trigger, requires_trigger, is_main, mounts, runtime, senders = row
    return Group(
        folder,
        chat_id,
        name,
        trigger,
        bool(requires_trigger),
        bool(is_main),
        _mounts_from_json(folder, mounts),
        runtime if runtime in AGENT_RUNTIMES else None,
        _policy(folder, senders),
    )


def _policy(folder: str, value: str) -> SenderPolicy:
    """The stored policy; the schema CHECK admits only known ones, but if not: the strictest."""
    try:
        return validate_policy(value)
    except ValueError:
        log.warning("group %s: unknown sender policy %r; treating it as members", folder, value)
        return "members"


def _mounts_to_json(requests: Iterable[MountRequest]) -> str:
    return json.dumps([MountRequest.from_json(r).to_json() for r in requests])


def _mounts_from_json(folder: str, text: str) -> tuple[MountRequest, ...]:
    """Stored mount requests; old rows hold plain path strings. A malformed entry is dropped (no mount)."""
    try:
        items = json.loads(text or "[]")
    except ValueError:
        log.warning("group %s: unreadable extra_mounts %r; no extra mounts", folder, text[:200])
        return ()
    if not isinstance(items, list):
        log.warning("group %s: extra_mounts is not a list; no extra mounts", folder)
        return ()
    requests = []
    for item in items:
        try:
            requests.append(MountRequest.from_json(item))
        except (TypeError, ValueError) as exc:
            log.warning("group %s: dropping malformed mount request %r: %s", folder, item, exc)
    return tuple(requests)
