"""Photos and documents sent in a registered Telegram group, saved to that group's inbox.

The inbox is a host-owned directory outside the group folder, mounted read-only into the
sandbox at `/workspace/inbox`: the agent cannot plant a link or a FIFO where we write. The
file is fetched into memory, bounded by `max_bytes` at every step Telegram gives a size
(the message, the file record, the bytes themselves), and handed to the gateway's writer
(`GroupInbox`), which writes it with O_EXCL|O_NOFOLLOW all the same. The file name comes from
the sender: only `[A-Za-z0-9._-]` survive, behind the message id.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from telegram import Message

from channels.base import GroupInbox

log = logging.getLogger("channels.telegram")


async def save_attachment(
    bot: Any, message: Message, inbox: GroupInbox, chat_id: str, max_bytes: int
) -> str | None:
    """A line for the message text saying what happened to its attachment; None if it has none."""
    if not (message.photo or message.document):
        return None
    if message.document is not None:
        item: Any = message.document
        original = message.document.file_name or "document"
    else:
        item, original = message.photo[-1], "photo.jpg"
    try:
        save = inbox(chat_id)
    except OSError as exc:
        return f"[attachment {original!r} not saved: {exc.strerror or exc}]"
    if save is None:
        return None
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", original).strip("._") or "file"
    name = f"{message.message_id}-{safe}"[:120]
    too_big = f"[attachment {original!r} not saved: larger than {max_bytes} bytes]"
    if item.file_size is not None and item.file_size > max_bytes:
        return too_big
    try:
        remote = await bot.get_file(item.file_id)
        if remote.file_size is not None and remote.file_size > max_bytes:
            return too_big
        data = bytes(await remote.download_as_bytearray())
        if len(data) > max_bytes:
            return too_big
        seen_as = await save(name, data)
    except Exception as exc:
        log.warning("telegram: could not save attachment: %s", type(exc).__name__)
        return f"[attachment {original!r} could not be saved]"
    return f"[attachment saved: {seen_as}]"
