"""What a model call cut before its final usage cost, over-approximated (proxy/metering.py).

Most providers state a call's tokens only at its end: OpenAI Chat Completions and legacy
Completions in the last chunk (input AND output), Responses in `response.completed`, Ollama on
its `done` line; Anthropic gives the input at `message_start` but the output only in the final
`message_delta`. The provider bills everything it generated until the cut, so a sandbox that
hangs up every stream just before its end (or an upstream that breaks) would otherwise be metered
at zero and a hard budget would never shrink. A call that ends without its final usage is
therefore counted as:

- input: what the response stated (Anthropic's `message_start`, Gemini's running counts), else
  the request body the vault relayed, `ceil(bytes / BYTES_PER_TOKEN)` — a compressed body a token
  per byte, since its text is several times longer than its bytes;
- output: the larger of what the response stated and the content relayed before the cut: each
  content-bearing event or line (a text, tool-argument or thinking delta; found with one regex
  over bytes the meter already passes over, never JSON-parsed) counts `ceil(bytes of its
  strings / BYTES_PER_TOKEN)` and at least 1; a cut JSON body (no events) counts all its bytes.

Why `BYTES_PER_TOKEN = 3` over-counts rather than under-counts: Anthropic and OpenAI put about 4
bytes of English (3.5 of code) in a token, and what is counted here is the JSON-escaped bytes of
the whole request (keys, roles, tool schemas and all), so English and code come out 15-50% high;
scripts of 2-3 UTF-8 bytes per character come out near a token per character, which is what
current tokenizers spend on them at most for common text; and the per-event floor of 1 covers
streams that send about a token per event (OpenAI, Ollama). An inline image's base64 is counted
like text, far above what it costs. Refusing a call a little early costs little; spend nobody
counted costs money.

What no estimate here can see: output the provider generates but never streams (OpenAI reasoning
tokens) and input held server-side (a Responses `previous_response_id`); those calls count what
their bytes show.
"""

from __future__ import annotations

import re

from proxy.meter_capture import Capture
from proxy.spend_paths import Endpoint

BYTES_PER_TOKEN = 3

# The string values that carry generated content, per endpoint. A key cannot be forged by model
# output: inside a JSON string every quote is escaped. The closing quote may be missing at the end
# of what was seen (an event cut mid-string still counts what passed).
_VALUE = rb'"\s*:\s*"((?:[^"\\]|\\.)*)(?:"|\Z)'
_KEYS: dict[str, bytes] = {
    "anthropic": rb"text|partial_json|thinking",
    "openai-chat": rb"content|arguments|refusal|reasoning_content|reasoning",
    "openai-completions": rb"text",
    "openai-responses": rb"delta",  # only `*.delta` events; `*.done` ones repeat the text
    "gemini": rb"text",
    "ollama": rb"content|response|thinking",
}
_CONTENT = {name: re.compile(rb'"(?:' + keys + rb")" + _VALUE, re.DOTALL) for name, keys in _KEYS.items()}
_NONE = re.compile(rb"(?!)")  # embeddings: no generated content


def content_pattern(endpoint: Endpoint) -> re.Pattern[bytes]:
    return _CONTENT.get(endpoint, _NONE)


def tokens_of(nbytes: int) -> int:
    """Bytes of text as tokens, rounded up (see the module docstring for the divisor)."""
    return -(-max(0, nbytes) // BYTES_PER_TOKEN)


def span_tokens(pattern: re.Pattern[bytes], data: bytes | bytearray, start: int, end: int) -> int:
    """The output tokens one event of `data[start:end]` shows: 0 if it carries no content."""
    found = False
    size = 0
    for m in pattern.finditer(data, start, end):
        found = True
        size += m.end(1) - m.start(1)
    return max(1, tokens_of(size)) if found else 0


def capture_tokens(pattern: re.Pattern[bytes], capture: Capture) -> int:
    """The same for an event kept in a Capture; one too large to keep whole counts all its bytes."""
    if not capture.size:
        return 0
    if not capture.whole:
        return max(1, tokens_of(capture.size))
    return span_tokens(pattern, capture.head, 0, len(capture.head))


def request_tokens(nbytes: int, encoded: bool = False) -> int:
    """The input a request body of `nbytes` carries at most, roughly (a compressed one: a token per byte)."""
    return max(0, nbytes) if encoded else tokens_of(nbytes)


def cut_counts(seen: dict[str, int], request: int, relayed: int) -> dict[str, int]:
    """The four counts of a call that ended without its final usage: what was seen, raised to the
    estimates where it says less (input only where none was seen at all)."""
    counts = {key: seen.get(key, 0) for key in ("input_tokens", "cache_read_tokens", "cache_write_tokens")}
    if "input_tokens" not in seen:
        counts["input_tokens"] = max(0, request - counts["cache_read_tokens"] - counts["cache_write_tokens"])
    counts["output_tokens"] = max(seen.get("output_tokens", 0), relayed)
    return counts
