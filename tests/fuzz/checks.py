"""Properties every channel's normalised message must have, whichever platform it came from."""

from __future__ import annotations

import math
import re
from xml.sax.saxutils import unescape

from core.models import InboundMessage, StoredMessage
from gateway.prompt import build_prompt

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WRAPPED = re.compile(
    r'<messages>\n<message sender="([^"<>]*)" time="(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)">([^<>]*)</message>\n'
    r"</messages>",
    re.DOTALL,
)


def assert_well_formed(message: InboundMessage, channel: str) -> None:
    """Typed, storable, and unable to break out of the prompt's `<messages>` wrapper."""
    assert message.channel == channel
    for name in ("chat_id", "external_id", "sender_id", "sender_name", "text", "chat_name"):
        value = getattr(message, name)
        assert isinstance(value, str), (name, value)
        value.encode("utf-8")  # what SQLite stores; a lone surrogate would fail the insert
    assert isinstance(message.timestamp, float | int) and math.isfinite(message.timestamp), message
    assert isinstance(message.is_from_bot, bool)
    stored = StoredMessage(1, message.chat_id, message.sender_name, message.text, message.timestamp, "new")
    prompt = build_prompt([stored])  # raises on a timestamp the prompt cannot show
    match = _WRAPPED.fullmatch(prompt)
    assert match is not None, f"the message broke the prompt wrapper: {prompt[:400]!r}"
    assert not _CONTROL.search(prompt), "a control character reached the prompt"
    assert unescape(match.group(1), {"&quot;": '"'}) == _CONTROL.sub("\ufffd", message.sender_name)
    assert unescape(match.group(3)) == _CONTROL.sub("\ufffd", message.text)
