"""Turning stored chat messages into the text an agent sees.

Chat text is untrusted: any member of a non-main group may try prompt injection.
Messages are therefore wrapped as data in `<messages>` and escaped so that no text
(`</message>`, `</messages>`, a forged `sender=` attribute, control characters) can
close or imitate the structure around it. The agent's system prompt says that
everything inside `<messages>` is data, not instructions.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from core.models import StoredMessage

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _clean(text: str) -> str:
    return _CONTROL.sub("\ufffd", text)


def _attr(value: str) -> str:
    """Always double-quoted, so the model sees one consistent shape."""
    return '"' + escape(_clean(value), {'"': "&quot;"}) + '"'


def render_message(message: StoredMessage) -> str:
    when = datetime.fromtimestamp(message.timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (
        f"<message sender={_attr(message.sender_name)} time={_attr(when)}>"
        f"{escape(_clean(message.text))}</message>"
    )


def build_prompt(messages: list[StoredMessage]) -> str:
    """The user turn for one run: every message of the batch, oldest first."""
    body = "\n".join(render_message(m) for m in messages)
    return f"<messages>\n{body}\n</messages>"
