"""The channels `clawgate run` connects, built from the config, and what the gateway hands them.

A channel adapter knows its chat service, `channels/base.py` and `core`, nothing of the gateway
or of group folders (tests/unit/test_layering.py keeps it so). What it needs from them is
passed in here as plain data and callbacks: the command menu (`gateway.commands.menu`), how to
save a registered group's attachment (`GroupInboxes`) and what to do when a chat migrates.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path

from channels.base import Channel, SaveAttachment
from channels.console import ConsoleChannel
from core.config import Config
from gateway import commands
from gateway.registry import GroupRegistry
from groups import groupfs
from groups.folders import INBOX_IN_SANDBOX, group_dirs

OnMigrate = Callable[[str, str], Awaitable[None]]


def inbox_writer(data_dir: Path, folder: str) -> SaveAttachment:
    """Saves attachments into one group's inbox: the host-owned dir mounted read-only at
    `/workspace/inbox`, written through `groups.groupfs` with O_EXCL|O_NOFOLLOW."""
    inbox = group_dirs(data_dir, folder).inbox

    async def save(name: str, data: bytes) -> str:
        # FileExistsError: the same update delivered again, and the file is ours already.
        with contextlib.suppress(FileExistsError):
            await groupfs.awrite_bytes(inbox, name, data, mode=0o644, exclusive=True, create_root=True)
        return f"{INBOX_IN_SANDBOX}/{name}"

    return save


class GroupInboxes:
    """A channel's `group_inbox`: the attachment writer of a registered group's chat."""

    def __init__(
        self, registry: GroupRegistry, refusal: Callable[[str], OSError | None], data_dir: Path
    ) -> None:
        self._registry = registry
        self._refusal = refusal  # DiskGuard.refusal: over quota or the disk nearly full
        self._data_dir = data_dir

    def __call__(self, chat_id: str) -> SaveAttachment | None:
        group = self._registry.for_chat(chat_id)
        if group is None:
            return None
        refusal = self._refusal(group.folder)
        if refusal is not None:
            raise refusal
        return inbox_writer(self._data_dir, group.folder)


def default_channels(
    config: Config,
    config_dir: Path,
    data_dir: Path,
    *,
    input_closed: asyncio.Event,
    group_inbox: GroupInboxes,
    on_migrate: OnMigrate,
) -> list[Channel]:
    """The enabled channels; Slack and Telegram are imported only when enabled (heavy libraries)."""
    channels: list[Channel] = []
    if config.console.enabled:
        channels.append(
            ConsoleChannel(config.console.main_chat, config.assistant_name, on_eof=input_closed.set)
        )
    if config.slack.enabled:
        from channels.slack import SlackChannel

        channels.append(SlackChannel(config.slack, config.assistant_name))
    if config.telegram.enabled:
        from channels.telegram import TelegramChannel

        channels.append(
            TelegramChannel.from_config(
                config.telegram,
                config.assistant_name,
                data_dir,
                config_dir=config_dir,
                group_inbox=group_inbox,
                on_migrate=on_migrate,
                commands=commands.menu(),
            )
        )
    return channels
