"""The bot's command menu in Telegram (`setMyCommands`), registered only when it changed.

Every gateway start would otherwise call `setMyCommands`, which Telegram rate-limits per bot;
a hash of (bot id, menu) kept in the data dir says whether the menu registered last time is
still the one the gateway offers. The menu is a convenience: a failure is a warning, never
fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from telegram import BotCommand

log = logging.getLogger("channels.telegram")

COMMANDS_STATE_FILE = "telegram-commands.sha256"


async def sync_commands(bot: Any, commands: Sequence[tuple[str, str]], data_dir: Path | None) -> None:
    """`setMyCommands` only when the list differs from the one last registered (hash on disk)."""
    digest = hashlib.sha256(json.dumps([bot.id, list(commands)], sort_keys=True).encode()).hexdigest()
    state = data_dir / COMMANDS_STATE_FILE if data_dir is not None else None
    if state is not None and state.exists() and state.read_text().strip() == digest:
        return
    try:
        await bot.set_my_commands([BotCommand(n, d) for n, d in commands])
    except Exception as exc:  # the menu is a convenience; never fatal
        log.warning("telegram: setMyCommands failed: %s", type(exc).__name__)
        return
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(digest + "\n")
