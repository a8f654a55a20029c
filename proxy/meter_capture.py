"""The bounded buffer the meter keeps one event or body in (proxy/metering.py).

A model response is untrusted input and can be long, so the meter never holds a whole one: an
event or body is kept whole up to a cap, past it only its first `HEAD` and last `TAIL` bytes. The
providers put the usage object after the content (Anthropic, OpenAI: `usage`; Gemini:
`usageMetadata`, followed by `modelVersion`), so from those two ends a too-large object is
rebuilt as `{model, usage}` without parsing the middle. Which keys are looked for is the
provider's (`Keys`); nothing here knows a provider's field names beyond that.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

HEAD = 16 * 1024
TAIL = 128 * 1024
_TYPE = re.compile(rb'"type"\s*:\s*"([A-Za-z0-9_.]{1,100})"')


@dataclass(frozen=True)
class Keys:
    """A provider's names for the usage object and the model, as bytes patterns."""

    usage: str  # e.g. "usage", "usageMetadata"
    model: str  # e.g. "model", "modelVersion"
    model_at_end: bool = False  # Gemini: `modelVersion` follows `usageMetadata`, in the tail
    marker: bytes = b""  # the substring test, if not the quoted `usage` (Ollama: two count keys)
    key: bytes = field(init=False)  # `"usage"`: a substring test before anything is parsed
    model_key: bytes = field(init=False)  # `"model"`, likewise
    usage_obj: re.Pattern[bytes] = field(init=False)
    model_value: re.Pattern[bytes] = field(init=False)

    def __post_init__(self) -> None:
        quoted = re.escape(json.dumps(self.usage).encode())
        object.__setattr__(self, "key", self.marker or json.dumps(self.usage).encode())
        object.__setattr__(self, "usage_obj", re.compile(quoted + rb"\s*:\s*\{"))
        object.__setattr__(self, "model_key", json.dumps(self.model).encode())
        model = re.escape(self.model_key)
        object.__setattr__(self, "model_value", re.compile(model + rb'\s*:\s*"((?:[^"\\]|\\.){1,200})"'))


OPENAI_KEYS = Keys("usage", "model")  # Anthropic's too
GEMINI_KEYS = Keys("usageMetadata", "modelVersion", model_at_end=True)


class Capture:
    """Bytes of one event or body: whole up to `cap`, else its first HEAD and last TAIL bytes."""

    __slots__ = ("cap", "keys", "head", "tail", "size", "has_usage", "_carry")

    def __init__(self, cap: int, keys: Keys = OPENAI_KEYS) -> None:
        self.cap = cap
        self.keys = keys
        self.head = bytearray()
        self.tail = bytearray()  # only used once `size` passed `cap`
        self.size = 0
        self.has_usage = False
        self._carry = b""  # last bytes, so the usage key split across appends is still seen

    def add(self, data: bytes) -> None:
        if not data:
            return
        key = self.keys.key
        if not self.has_usage and (key in data or key in self._carry + data[: len(key)]):
            self.has_usage = True
        self._carry = (self._carry + data[-len(key) :])[-len(key) :]  # also across tiny pieces
        was_whole = self.size <= self.cap
        self.size += len(data)
        if self.size <= self.cap:
            self.head += data
            return
        if (
            was_whole
        ):  # just overflowed: keep HEAD (also of a first piece over the cap), the rest starts the tail
            self.head += data
            self.tail = self.head[HEAD:]
            del self.head[HEAD:]
        else:
            self.tail += data
        if len(self.tail) > TAIL:
            del self.tail[: len(self.tail) - TAIL]

    @property
    def whole(self) -> bool:
        return self.size <= self.cap

    def clear(self) -> None:
        self.head.clear()
        self.tail.clear()
        self.size = 0
        self.has_usage = False
        self._carry = b""

    def parse(self) -> dict[str, Any] | None:
        """The JSON object: parsed whole, or (too large) rebuilt as {type, model, usage} from head/tail.

        A rebuilt object carries `_rebuilt: True`; its model is the head's (Gemini's: the tail's
        last, else the head's).
        """
        if self.whole:
            try:
                obj = json.loads(bytes(self.head))
            except (ValueError, UnicodeDecodeError, RecursionError):
                return None
            return obj if isinstance(obj, dict) else None
        found: dict[str, Any] = {"_rebuilt": True}
        head, tail = bytes(self.head), bytes(self.tail)
        kind = _TYPE.search(head[:256])
        if kind is not None:
            found["type"] = kind.group(1).decode()
        models = [self.keys.model_value.search(head)]
        if self.keys.model_at_end:
            models[:0] = list(self.keys.model_value.finditer(tail))[-1:]
        for m in models:
            if m is not None:
                with contextlib.suppress(ValueError):
                    found[self.keys.model] = json.loads(b'"' + m.group(1) + b'"')
                break
        usage = last_object(tail, self.keys.usage_obj)
        if usage is not None:
            found[self.keys.usage] = usage
        return found


def last_object(data: bytes, pattern: re.Pattern[bytes]) -> dict[str, Any] | None:
    """The last `"<key>": {...}` object in `data` (`pattern` ends at its `{`) that parses."""
    decoder = json.JSONDecoder()
    text = data.decode("utf-8", "replace")
    for m in reversed(list(pattern.finditer(data))):
        # Offsets in bytes and text agree only for ASCII; re-find in the decoded text instead.
        start = len(data[: m.end() - 1].decode("utf-8", "replace"))
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None
