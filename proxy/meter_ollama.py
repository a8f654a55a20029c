"""What the meter needs to know about Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`).

Pure; used by proxy/metering.py for the "ollama" endpoint (classified in proxy/spend_paths.py).
Ollama answers a streamed call (its default) as NDJSON — one compact JSON object per line,
`application/x-ndjson` — and a `"stream": false` call as one compact JSON object; both are read
line by line (`Lines`), whatever the content type says, and only the current line is kept (in
the meter's bounded `Capture`: whole up to a cap, past it its first and last bytes). JSON
cannot hold a raw newline inside a string, so a line end is always an object's end in NDJSON.

The counts: `prompt_eval_count` (input: the prompt tokens evaluated) and `eval_count` (output),
top-level fields that Ollama puts only on the final object (`"done": true`; omitted when 0).
`/api/embed` answers one object with `prompt_eval_count` and no `done`. So an object carrying a
count ends the call, unless it says `"done": false`; and a whole line saying `"done": true` with
no count at all (a model load, `/api/generate` with an empty prompt) ends it at zero tokens,
which is not a cut (`done_without_counts`). Ollama reports no cache reads or writes
(a prompt prefix it reuses from its KV cache is simply not evaluated again, so not counted).

A final line too large to keep whole (a non-streamed `/api/generate` repeats the whole answer
and its token `context`, the counts come last) is read from its kept tail (`rebuilt_counts`):
the last `"prompt_eval_count": <n>` and `"eval_count": <n>`. A count's key cannot be forged by
model output: inside a JSON string every quote is escaped, and a string value is never followed
by a colon.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from proxy.meter_capture import Capture, Keys
from proxy.meter_counts import merge_counts

KEYS = Keys("eval_count", "model", marker=b'eval_count"')  # the marker is in both counts' keys
FIELDS = {"prompt_eval_count": "input_tokens", "eval_count": "output_tokens"}
_DONE = re.compile(rb'"done"\s*:\s*true')
_IN_TAIL = {name: re.compile(rb'"' + name.encode() + rb'"\s*:\s*(\d{1,18})(?![\d.eE])') for name in FIELDS}


def take(counts: dict[str, int], obj: dict[str, Any]) -> bool:
    """Merge an object's counts into the meter's (present fields win); True if it carried any."""
    got = merge_counts(counts, obj, FIELDS)
    if got:
        counts.setdefault("input_tokens", 0)
        counts.setdefault("output_tokens", 0)
        counts["cache_read_tokens"] = counts["cache_write_tokens"] = 0
    return got


def is_final(obj: dict[str, Any]) -> bool:
    """Whether an object that carried counts ends the call (see the module docstring)."""
    return obj.get("_rebuilt") is True or obj.get("done") is not False


def done_without_counts(line: Capture) -> bool:
    """A whole line that ends the call and carries no count (see the module docstring)."""
    if line.has_usage or not line.whole or _DONE.search(line.head) is None:
        return False
    obj = line.parse()
    return obj is not None and obj.get("done") is True


def rebuilt_counts(obj: dict[str, Any], tail: bytes) -> None:
    """A line too large to parse: its counts, read from the kept tail, go into the rebuilt `obj`."""
    for name, pattern in _IN_TAIL.items():
        found = list(pattern.finditer(tail))
        if found:
            obj[name] = int(found[-1].group(1))


class Lines:
    """Splits a response into lines as bytes arrive: each line's bytes go to `sink` (in as many
    pieces as they came), and `done()` is called at its end; it returns True when nothing more
    needs reading. Keeps no bytes itself."""

    def __init__(self, sink: Callable[[bytes], None], done: Callable[[], bool]) -> None:
        self.sink, self.done = sink, done

    def add(self, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                if start < len(data):
                    self.sink(data[start:])
                return
            if end > start:
                self.sink(data[start:end])
            if self.done():
                return
            start = end + 1
