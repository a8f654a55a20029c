"""Telegram chat ids and where a reply to one goes.

Chat ids are `tg:<chat id>` (negative for groups, `-100…` for supergroups), which is
what `/chatid` answers and what a group is registered under. Forum topics: inbound
messages keep the plain `tg:<chat id>` (so a registered supergroup hears all of its
topics) and the channel remembers the topic of the latest message from a person in
each chat; a reply to `tg:<chat id>` goes to that topic. `tg:<chat id>:<thread id>`
addresses one topic explicitly. A group that becomes a supergroup changes its chat id;
replies to the old id go to the new one.

Kept apart from the channel because both of its directions share this memory: inbound
messages write it (topics, migrations), every send reads it, and a send that finds a
migration (`ChatMigrated`) writes it too. The ids come from the gateway's registry and
from Telegram, so `parse_chat_id` is strict.
"""

from __future__ import annotations

import re

PREFIX = "tg:"


def parse_chat_id(chat_id: str) -> tuple[int, int | None]:
    """`tg:<chat>` or `tg:<chat>:<thread>` → (chat, thread or None); ValueError otherwise."""
    if not chat_id.startswith(PREFIX):
        raise ValueError(f"not a Telegram chat id: {chat_id!r}")
    parts = chat_id[len(PREFIX) :].split(":")
    if len(parts) not in (1, 2) or not all(re.fullmatch(r"-?\d+", p) for p in parts):
        raise ValueError(f"not a Telegram chat id: {chat_id!r} (expected tg:<chat id>[:<topic id>])")
    return int(parts[0]), int(parts[1]) if len(parts) == 2 else None


class ChatRoutes:
    """The topic of the latest human message per chat, and the group→supergroup migrations seen."""

    def __init__(self) -> None:
        self._threads: dict[int, int] = {}  # chat → topic of the latest human message
        self._migrated: dict[int, int] = {}

    def current(self, chat: int) -> int:
        """The chat's id now (its supergroup's, if it migrated)."""
        return self._migrated.get(chat, chat)

    def target(self, chat_id: str) -> tuple[int, int | None]:
        """(chat, topic) a message to `chat_id` goes to; ValueError for a malformed id."""
        chat, thread = parse_chat_id(chat_id)
        chat = self.current(chat)
        return chat, thread if thread is not None else self._threads.get(chat)

    def heard(self, chat: int, thread: int | None) -> None:
        """A person wrote in `chat`, in topic `thread` (None: outside any topic)."""
        if thread:
            self._threads[chat] = thread
        else:
            self._threads.pop(chat, None)

    def migrate(self, old: int, new: int) -> bool:
        """Record that `old` became `new`; False when this migration was already known."""
        if self._migrated.get(old) == new:
            return False
        self._migrated[old] = new
        if old in self._threads:
            self._threads[new] = self._threads.pop(old)
        return True
