"""The in-memory view of registered groups, loaded from the store and kept in sync with it.

Lookups happen for every inbound message, so they are dictionary reads; writes go
to the store first and only then to memory.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from core.config import AGENT_RUNTIMES
from core.models import Group
from core.senders import validate_policy, validate_sender_id
from gateway.store import Store
from groups.folders import validate_folder

log = logging.getLogger(__name__)

MAX_CHAT_ID = 200


def validate_chat_id(chat_id: str) -> str:
    """`chat_id` unchanged, or ValueError. One rule for `/register`, `clawgate groups register` and
    the dashboard: a chat id no channel can produce (blank, spaces, control characters) would
    register a group that never hears a message."""
    if not chat_id or chat_id != chat_id.strip() or any(c.isspace() or not c.isprintable() for c in chat_id):
        shown = chat_id if len(chat_id) <= 60 else chat_id[:60] + "…"
        raise ValueError(f"invalid chat id {shown!r}: send /chatid in that chat to learn it")
    if len(chat_id) > MAX_CHAT_ID:
        raise ValueError(f"invalid chat id: longer than {MAX_CHAT_ID} characters")
    return chat_id


class GroupRegistry:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._by_chat: dict[str, Group] = {}
        self._by_folder: dict[str, Group] = {}

    async def load(self) -> None:
        groups = await self._store.groups()
        self._by_chat = {g.chat_id: g for g in groups}
        self._by_folder = {g.folder: g for g in groups}

    def for_chat(self, chat_id: str) -> Group | None:
        return self._by_chat.get(chat_id)

    def by_folder(self, folder: str) -> Group | None:
        return self._by_folder.get(folder)

    def all(self) -> list[Group]:
        return list(self._by_folder.values())

    @property
    def main(self) -> Group | None:
        return next((g for g in self._by_folder.values() if g.is_main), None)

    async def register(self, group: Group, members: tuple[str, ...] = (), by: str | None = None) -> None:
        """Register `group`; `members` are its first allowed senders (ids checked by core.senders)."""
        validate_folder(group.folder)
        validate_chat_id(group.chat_id)
        if group.folder in self._by_folder:
            raise ValueError(f"a group with folder {group.folder!r} is already registered")
        if group.chat_id in self._by_chat:
            raise ValueError(f"chat {group.chat_id!r} is already registered")
        if group.is_main and self.main is not None:
            raise ValueError("there is already a main group")
        if group.runtime is not None and group.runtime not in AGENT_RUNTIMES:
            raise ValueError(f"unknown runtime {group.runtime!r}: use one of {', '.join(AGENT_RUNTIMES)}")
        validate_policy(group.senders)
        for sender in members:
            validate_sender_id(sender)
        await self._store.register_group(group, members, by)
        self._by_chat[group.chat_id] = group
        self._by_folder[group.folder] = group

    async def unregister(self, folder: str) -> bool:
        group = self._by_folder.get(folder)
        if group is None:
            return False
        if group.is_main:
            raise ValueError("the main group cannot be unregistered")
        await self._store.unregister_group(folder)
        del self._by_folder[folder]
        self._by_chat.pop(group.chat_id, None)
        return True

    async def move_chat(self, folder: str, chat_id: str) -> Group:
        """Point a group at another chat (main chat moved, Telegram group became a supergroup)."""
        group = self._by_folder.get(folder)
        if group is None:
            raise ValueError(f"no registered group {folder!r}")
        if chat_id in self._by_chat and self._by_chat[chat_id].folder != folder:
            raise ValueError(f"chat {chat_id!r} is already registered")
        await self._store.move_group_chat(folder, chat_id)
        updated = replace(group, chat_id=chat_id)
        self._by_chat.pop(group.chat_id, None)
        self._by_chat[chat_id] = updated
        self._by_folder[folder] = updated
        return updated

    async def ensure_main(self, chat_id: str, trigger: str) -> None:
        """At start: the main group exists and lives in `chat_id` (it moves when the config says so)."""
        main = self.main
        if main is None:
            await self.register(
                Group(
                    folder="main",
                    chat_id=chat_id,
                    name="main",
                    trigger=trigger,
                    requires_trigger=False,
                    is_main=True,
                )
            )
        elif main.chat_id != chat_id:
            log.warning("the main chat moves from %s to %s (config main_chat)", main.chat_id, chat_id)
            await self.move_chat(main.folder, chat_id)

    async def follow_migration(self, old_chat_id: str, new_chat_id: str) -> None:
        """A Telegram group became a supergroup: its registration follows it."""
        group = self.for_chat(old_chat_id)
        if group is not None and self.for_chat(new_chat_id) is None:
            await self.move_chat(group.folder, new_chat_id)
            log.warning("group %s moved from %s to %s", group.folder, old_chat_id, new_chat_id)

    async def set_runtime(self, folder: str, runtime: str | None) -> Group:
        """Choose the group's agent runtime ("builtin" | "claude"; None: the `[agent] runtime` default)."""
        group = self._by_folder.get(folder)
        if group is None:
            raise ValueError(f"no registered group {folder!r}")
        if runtime is not None and runtime not in AGENT_RUNTIMES:
            raise ValueError(f"unknown runtime {runtime!r}: use one of {', '.join(AGENT_RUNTIMES)}")
        await self._store.set_group_runtime(folder, runtime)
        updated = replace(group, runtime=runtime)
        self._by_folder[folder] = updated
        self._by_chat[group.chat_id] = updated
        return updated

    async def set_senders(self, folder: str, policy: str) -> Group:
        """Change who may trigger the group's assistant: open | members | approval (core.senders)."""
        group = self._by_folder.get(folder)
        if group is None:
            raise ValueError(f"no registered group {folder!r}")
        if group.is_main:
            raise ValueError("the main chat is always limited to admins ([admin] users)")
        checked = validate_policy(policy)
        await self._store.set_group_senders(folder, checked)
        updated = replace(group, senders=checked)
        self._by_folder[folder] = updated
        self._by_chat[group.chat_id] = updated
        return updated

    async def set_mounts(self, folder: str, mounts: list[object]) -> Group:
        """Replace a group's extra-mount requests; they are validated against the allowlist at start."""
        group = self._by_folder.get(folder)
        if group is None:
            raise ValueError(f"no registered group {folder!r}")
        from groups.mounts import parse_mount_requests  # the allowlist engineer's module

        requests = tuple(parse_mount_requests(mounts))
        await self._store.set_group_mounts(folder, requests)
        updated = replace(group, extra_mounts=requests)
        self._by_folder[folder] = updated
        self._by_chat[group.chat_id] = updated
        return updated
