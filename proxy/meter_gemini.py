"""What the meter needs to know about Google's Gemini API (`generativelanguage.googleapis.com`).

Pure; used by proxy/metering.py for the "gemini" endpoint (`…/models/<m>:generateContent` and
`:streamGenerateContent`, classified in proxy/spend_paths.py). A response comes in one of three
shapes, every one carrying `usageMetadata` objects and `modelVersion`:

- `generateContent`: one JSON object;
- `streamGenerateContent?alt=sse`: SSE, one object per `data:` line;
- `streamGenerateContent` without `alt=sse`: ONE JSON array whose elements arrive over time
  (`[{…}\\r\\n,\\r\\n{…}]`). `JsonArray` splits it into its elements as bytes pass, keeping only
  the current element (bounded by the meter's `Capture`), never the array.

In a stream every chunk's `usageMetadata` is cumulative, so the last one wins (a field a later
chunk leaves out keeps its earlier value). None of them says it is the last, so a stream's
usage is known only when it ends; it counts as complete when a chunk with usage also carried a
`finishReason` (or a `promptFeedback.blockReason`: the prompt was refused, nothing follows)
and, for the array shape, the array was closed.

Token arithmetic (`counts`): `promptTokenCount` includes the cached part
(`cachedContentTokenCount`), which is billed at the cache price; `toolUsePromptTokenCount`
(tool results fed back, e.g. search) is input on top of it; `thoughtsTokenCount` is billed as
output on top of `candidatesTokenCount`. Gemini reports no cache writes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from proxy.meter_counts import merge_counts

FIELDS = {
    "promptTokenCount": "prompt",
    "cachedContentTokenCount": "cached",
    "candidatesTokenCount": "candidates",
    "thoughtsTokenCount": "thoughts",
    "toolUsePromptTokenCount": "tool",
}
_FINISH = re.compile(rb'"(?:finishReason|blockReason)"\s*:\s*"')


def take(raw: dict[str, int], usage: object) -> bool:
    """Merge one `usageMetadata` into `raw` (present fields win); True if it carried any count."""
    return isinstance(usage, dict) and merge_counts(raw, usage, FIELDS, digit_string=True)


def counts(raw: dict[str, int]) -> dict[str, int]:
    """The meter's four counts from Gemini's fields (see the module docstring)."""
    prompt = raw.get("prompt", 0)
    cached = min(raw.get("cached", 0), prompt)
    return {
        "input_tokens": prompt - cached + raw.get("tool", 0),
        "output_tokens": raw.get("candidates", 0) + raw.get("thoughts", 0),
        "cache_read_tokens": cached,
        "cache_write_tokens": 0,
    }


def is_final(obj: dict[str, Any]) -> bool:
    """Whether a chunk ends the answer: a candidate finished, or the prompt was blocked."""
    if obj.get("_rebuilt"):
        return bool(obj.get("_final"))
    candidates = obj.get("candidates")
    if isinstance(candidates, list) and any(
        isinstance(c, dict) and isinstance(c.get("finishReason"), str) for c in candidates
    ):
        return True
    feedback = obj.get("promptFeedback")
    return isinstance(feedback, dict) and isinstance(feedback.get("blockReason"), str)


def mentions_finish(tail: bytes) -> bool:
    """For a chunk too large to parse: its kept tail names a finish (or block) reason."""
    return _FINISH.search(tail) is not None


def model_name(value: object) -> str:
    """`modelVersion` as the price table knows it (`models/` prefix dropped, if any)."""
    if not isinstance(value, str):
        return ""
    return value.removeprefix("models/")


_OUTSIDE = re.compile(rb'["{}\[\],]')  # structural bytes outside strings
_INSIDE = re.compile(rb'["\\]')  # the bytes that end or escape a string
_WS = b" \t\r\n"


class JsonArray:
    """Splits a streamed top-level JSON array into its object elements as bytes arrive.

    `add(piece)` hands each element's bytes to `sink` (in as many pieces as they came) and
    calls `done()` when an element object ends. Only string/escape state and the nesting depth
    are kept, so memory stays constant whatever the stream; the caller bounds what it keeps of
    an element. Scalars between elements are skipped; malformed input never raises, it just
    yields garbage elements that fail to parse. `closed` once the array's `]` was seen.
    """

    def __init__(self, sink: Callable[[bytes], None], done: Callable[[], None]) -> None:
        self.sink, self.done = sink, done
        self.started = False
        self.closed = False
        self.depth = 0
        self.in_string = False
        self.escape = False
        self.in_element = False

    def add(self, data: bytes) -> None:
        i, n = 0, len(data)
        start = 0  # where the current element's bytes begin in `data`
        while i < n and not self.closed:
            if self.escape:
                self.escape = False
                i += 1
                continue
            if self.in_string:
                m = _INSIDE.search(data, i)
                if m is None:
                    break
                j = m.start()
                if data[j] == 0x5C:  # backslash: the next byte is part of the string
                    self.escape = True
                    i = j + 1
                    continue
                self.in_string = False
                i = j + 1
                continue
            if not self.started:
                stripped = data[i:].lstrip(_WS)
                if not stripped:
                    return
                i = n - len(stripped)
                if data[i] != 0x5B:  # "[": not an array; nothing here is read
                    self.closed = True
                    return
                self.started, self.depth = True, 1
                i += 1
                continue
            m = _OUTSIDE.search(data, i)
            if m is None:
                break
            j, byte = m.start(), data[m.start()]
            i = j + 1
            if byte == 0x22:  # '"'
                self.in_string = True
            elif byte in (0x7B, 0x5B):  # "{" "["
                if self.depth == 1 and byte == 0x7B and not self.in_element:
                    self.in_element, start = True, j
                self.depth += 1
            elif byte in (0x7D, 0x5D):  # "}" "]"
                if self.depth == 1:
                    if byte == 0x5D:
                        self.closed = True
                    continue  # a stray "}" at the top level: ignored
                self.depth -= 1
                if self.depth == 1 and self.in_element:
                    self.sink(data[start : j + 1])
                    self.in_element = False
                    self.done()
        if self.in_element:
            self.sink(data[start:])
