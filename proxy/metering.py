"""Model spend, measured where a sandbox cannot lie about it: in the bytes the vault relays.

Pure (no mitmproxy, no I/O): `proxy/meter_addon.py` feeds it the response bytes of every call to
a model endpoint (`model_endpoint`, from the one path table in proxy/spend_paths.py) as they
pass. What it reads:

- Anthropic Messages (`POST /v1/messages`): a JSON body's `usage`; a stream's
  `message_start.message.usage` (input and cache tokens) then `message_delta.usage` (cumulative,
  final; newer API versions repeat the input and cache counts there, which then win).
- OpenAI Chat Completions (`POST /v1/chat/completions`): a JSON body's `usage`; a stream's last
  chunk (sent only with `stream_options.include_usage`, which `ensure_stream_usage` forces on).
- OpenAI Responses (`POST /v1/responses`): a JSON body's `usage`; a stream's
  `response.completed` (or `.incomplete` / `.failed`) event's `response.usage`.
- OpenAI legacy Completions (`POST /v1/completions`): read exactly like Chat Completions.
- OpenAI Embeddings (`POST /v1/embeddings`): `usage.prompt_tokens`, all input; a huge answer's
  `model` (after the vectors, past `HEAD`) is the request's.
- Gemini (`…/models/<m>:generateContent`, `:streamGenerateContent`): `usageMetadata` of a JSON
  body, of every SSE event, or of every element of the streamed JSON array it sends without
  `alt=sse` (cumulative: the last wins; known only at the end); see proxy/meter_gemini.py.
- Ollama (`/api/chat`, `/api/generate`, `/api/embed`): NDJSON or one JSON object, read line by
  line; the final object's `prompt_eval_count` and `eval_count`; see proxy/meter_ollama.py.

Why incremental and bounded: a stream can be long and the upstream is untrusted input, so the
meter never holds a whole stream. It keeps the unfinished line (up to `MAX_LINE`) and the data of
the current event (up to `MAX_EVENT`; a JSON body likewise up to `MAX_JSON`, so a hostile upstream
costs at most about a MiB per flow); an event larger than that (a Responses `response.completed`
repeats the whole answer) keeps only its first `HEAD` and last `TAIL` bytes, from which `model`
and the last `"usage"` object are still read (the providers put usage after the content;
proxy/meter_capture.py). Only events whose data contains `"usage"` are JSON-parsed at all, so
the text deltas that make up nearly all of a stream cost a substring test (Gemini repeats its
usage in every chunk, so each of its chunks is parsed).

Content encodings: gzip and deflate are decoded, bounded (proxy/meter_decoding.py); any other
encoding yields `complete=False`, estimated from the bytes, and the caller logs it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from proxy import meter_estimate as estimate
from proxy import meter_gemini as gemini
from proxy import meter_ollama as ollama
from proxy.meter_capture import GEMINI_KEYS, HEAD, OPENAI_KEYS, TAIL, Capture
from proxy.meter_counts import token_count
from proxy.meter_decoding import Decoder
from proxy.spend_paths import NATIVE, Endpoint, background_answer

__all__ = ["HEAD", "TAIL", "Meter", "Usage", "ensure_stream_usage", "meter_body", "request_model"]

MAX_LINE = 64 * 1024  # an unfinished SSE line kept whole up to this; past it only `data:` goes on
MAX_EVENT = 1 << 20  # an event's data kept whole up to this; past it: HEAD + TAIL
MAX_JSON = 1 << 20  # a body kept whole up to this (what mitmproxy buffers anyway); past it: HEAD + TAIL
MAX_MODEL = 100

_MODEL = OPENAI_KEYS.model_value
_STREAM_TRUE = re.compile(rb'"stream"\s*:\s*true')


def provider_of(endpoint: Endpoint) -> str:
    return endpoint if endpoint in NATIVE else "openai"


@dataclass(frozen=True)
class Usage:
    """One model call's tokens (SPEND-INTERFACE §2); input excludes the cached part."""

    provider: str
    model: str
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    complete: bool

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens + self.cache_read_tokens + self.cache_write_tokens


def _text(value: object) -> str:
    return value[:MAX_MODEL] if isinstance(value, str) else ""


def request_model(body: bytes) -> str:
    """The `model` a request names (the fallback when a response does not say), cheaply."""
    m = _MODEL.search(body[:HEAD]) or _MODEL.search(body)
    if m is None:
        return ""
    try:
        return _text(json.loads(b'"' + m.group(1) + b'"'))
    except ValueError:
        return ""


def ensure_stream_usage(body: bytes) -> bytes | None:
    """An OpenAI chat (or legacy completions) request body that streams, rewritten to ask for
    usage; None if unchanged.

    Without `stream_options.include_usage` a streamed (chat) completion carries no token counts,
    so a sandbox could hide its spend by how it asks. Bodies that are not a JSON object, or do
    not stream, are left exactly as they are (the upstream answers malformed ones itself).
    """
    if _STREAM_TRUE.search(body) is None:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(obj, dict) or obj.get("stream") is not True:
        return None
    options = obj.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return None
    obj["stream_options"] = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class Meter:
    """Reads one model response's usage as its bytes pass; `feed` then `finish`.

    `feed(chunk)` returns the Usage exactly once, from the chunk that completes it (a stream's
    final usage event), so the caller can act before relaying that chunk. `finish()` ends the
    body (or notes it was cut): it returns the Usage if `feed` has not — without the final usage,
    an over-estimate (proxy/meter_estimate.py), `complete=False` — and None after that, or for a
    non-2xx response that carried no usage (an error answer is not a call that cost anything).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        sse: bool,
        status: int = 200,
        request_model: str = "",
        encoding: str = "",
        request_bytes: int = 0,
        request_encoded: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.sse = sse
        self.ok_status = 200 <= status < 300
        self.model = request_model[:MAX_MODEL]
        self.response_model = ""
        self.counts: dict[str, int] = {}
        self.seen_usage = False
        self.done = False
        self.background = False  # a Responses answer queued in the background (no usage yet)
        # What a call cut before its final usage counts (proxy/meter_estimate.py): input, output
        self.request_tokens, self.relayed = estimate.request_tokens(request_bytes, request_encoded), 0
        self.raw_bytes = 0
        self._content = estimate.content_pattern(endpoint)
        encoding = encoding.strip().lower()
        self._decoder = Decoder(encoding) if encoding and encoding != "identity" else None
        self.undecodable = self._decoder is not None and not self._decoder.ok
        # SSE state
        self._line = bytearray()  # the unfinished line
        # b"data" when a too-long data line is being streamed into _data, b"x" to skip
        self._line_overflow = b""
        self._keys = {"gemini": GEMINI_KEYS, "ollama": ollama.KEYS}.get(endpoint, OPENAI_KEYS)
        self._data = Capture(MAX_EVENT if sse else MAX_JSON, self._keys)
        self._event = ""
        self._has_data = False
        self._pending_cr = False
        # Gemini: its raw usage fields, and the streamed JSON array (see proxy/meter_gemini.py)
        self._gemini: dict[str, int] = {}
        self._array = (
            gemini.JsonArray(self._data.add, self._element) if endpoint == "gemini" and not sse else None
        )
        # Ollama: NDJSON (or one JSON object), a line at a time whatever the content type says
        self._ndjson = ollama.Lines(self._data.add, self._line_end) if endpoint == "ollama" else None

    # -- public --

    def feed(self, chunk: bytes) -> Usage | None:
        if self.done or not chunk:
            return None
        self.raw_bytes += len(chunk)
        if self._decoder is not None:
            if not self._decoder.ok:
                self.undecodable = True
                return None
            pieces = self._decoder.decode(chunk)
            if not self._decoder.ok:
                self.undecodable = True
        else:
            pieces = [chunk]
        for piece in pieces:
            if self._ndjson is not None:
                self._ndjson.add(piece)
            elif self.sse:
                self._feed_sse(piece)
            elif self._array is not None:
                self._array.add(piece)
                if self._array.closed and not self._array.started:  # a JSON object, not an array
                    self._array = None
                    self._data.add(piece)
            else:
                self._data.add(piece)
            if self.done:
                return self._usage(True)
        return None

    def finish(self) -> Usage | None:
        if self.done:
            return None
        self.done = True
        if self._ndjson is not None:
            if self._data.size:  # the last line, without its line end (a JSON body has none)
                self._line_end()
            if self.seen_usage and self._final:
                return self._usage(True)
        elif self.sse:
            if self._line and not self._line_overflow:  # the last line, without its line end
                line = bytes(self._line)
                self._line.clear()
                self._on_line(line)
            if self._data.size or self._has_data:  # an event the stream ended without a blank line for
                self._dispatch()
            if self.done and self.seen_usage and self._final:
                return self._usage(True)
        elif self._array is not None:  # a streamed array: complete only if it was closed
            self.relayed += estimate.capture_tokens(self._content, self._data)  # an element cut short
            self._data.clear()
            if self.seen_usage and self._array.closed:
                return self._usage(True)
        else:
            obj = self._parse(self._data) if self._data.size else None
            if self.endpoint == "openai-responses":
                self.background = background_answer(obj, bytes(self._data.head[:HEAD]))
            self._data.clear()
            if obj is not None:
                self._read_body(obj)
                if self.seen_usage:
                    return self._usage(True)
        if not self.ok_status and not self.seen_usage:
            return None
        return self._usage(False)

    # -- SSE --

    _final = False

    def _feed_sse(self, data: bytes) -> None:
        if self._pending_cr:
            self._pending_cr = False
            if data.startswith(b"\n"):
                data = data[1:]
        if b"\r" in data:
            if data.endswith(b"\r"):
                self._pending_cr = True  # its \n may come in the next chunk: one line end, not two
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        # Fast path: at an event boundary, a whole event without a `"usage": {` object (a text
        # delta, nearly all of a stream) is skipped with a search or two instead of line parsing;
        # only until the response named its model do events naming one still get parsed.
        while data and not self.done:
            end = data.find(b"\n\n")
            if end < 0:
                break
            idle = not (self._line or self._has_data or self._line_overflow or self._event)
            if (
                idle
                and self._keys.usage_obj.search(data, 0, end) is None
                and (self.response_model or data.find(self._keys.model_key, 0, end) < 0)
            ):
                self.relayed += estimate.span_tokens(self._content, data, 0, end)
                data = data[end + 2 :]
                continue
            self._lines(data[: end + 2])
            data = data[end + 2 :]
        if data and not self.done:
            self._lines(data)

    def _lines(self, data: bytes) -> None:
        start = 0
        while not self.done:
            end = data.find(b"\n", start)
            if end < 0:
                self._partial(data[start:])
                return
            piece = data[start:end]
            start = end + 1
            if self._line_overflow:
                if self._line_overflow == b"data":
                    self._data.add(piece)
                self._line_overflow = b""
                continue
            if self._line:
                self._line += piece
                line = bytes(self._line)
                self._line.clear()
            else:
                line = piece
            self._on_line(line)

    def _partial(self, rest: bytes) -> None:
        """An unfinished line: kept up to MAX_LINE; a longer `data:` line streams into the event."""
        if not rest:
            return
        if self._line_overflow:
            if self._line_overflow == b"data":
                self._data.add(rest)
            return
        self._line += rest
        if len(self._line) > MAX_LINE:
            line = bytes(self._line)
            self._line.clear()
            if line.startswith(b"data:"):
                value = line[5:]
                if value.startswith(b" "):
                    value = value[1:]
                self._add_data(value)
                self._line_overflow = b"data"
            else:
                self._line_overflow = b"x"

    def _add_data(self, value: bytes) -> None:
        if self._has_data:
            self._data.add(b"\n")
        self._has_data = True
        self._data.add(value)

    def _on_line(self, line: bytes) -> None:
        if not line:
            self._dispatch()
            return
        if line.startswith(b":"):
            return  # a comment (keep-alive)
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._add_data(value)
        elif name == b"event":
            self._event = value[:100].decode("utf-8", "replace")

    def _dispatch(self) -> None:
        event, capture = self._event, self._data
        self._event, self._has_data = "", False
        self.relayed += estimate.capture_tokens(self._content, capture)
        if capture.has_usage:
            obj = self._parse(capture)
            if obj is not None:
                self._read_event(event, obj)
        capture.clear()

    def _element(self) -> None:
        """One element of a streamed Gemini JSON array is complete."""
        self._dispatch()

    def _line_end(self) -> bool:
        """One line of an Ollama answer is complete; True once the call's counts are known."""
        if self._final:
            return True
        data = self._data
        if (
            not self.response_model
            and not data.has_usage
            and data.whole
            and self._keys.model_key in data.head
        ):
            obj = data.parse()  # until the answer named its model (a cut stream keeps it)
            if obj is not None:
                self._model_from(obj)
        if ollama.done_without_counts(data):  # Ollama omits a count that is 0
            self.seen_usage = self._final = self.done = True
        self._dispatch()
        return self._final

    def _parse(self, capture: Capture) -> dict[str, Any] | None:
        obj = capture.parse()
        if obj is not None and obj.get("_rebuilt") and self.endpoint == "gemini":
            obj["_final"] = gemini.mentions_finish(bytes(capture.tail))
        elif obj is not None and obj.get("_rebuilt") and self.endpoint == "ollama":
            ollama.rebuilt_counts(obj, bytes(capture.tail))
        return obj

    def _read_event(self, event: str, obj: dict[str, Any]) -> None:
        kind = obj.get("type") if isinstance(obj.get("type"), str) else event
        if self.endpoint == "ollama":  # the counts come once, on the final object
            self._model_from(obj)
            if self._take(obj) and ollama.is_final(obj):
                self._final = self.done = True
        elif self.endpoint == "gemini":  # every chunk: cumulative usage, the last wins; no final event
            self._model_from(obj)
            if self._take(obj.get("usageMetadata")) and gemini.is_final(obj):
                self._final = True
        elif self.endpoint == "anthropic":
            if kind == "message_start":
                message = obj.get("message")
                if isinstance(message, dict):
                    self._model_from(message)
                    self._take(message.get("usage"))
            elif kind == "message_delta" and self._take(obj.get("usage")):
                self._final = self.done = True
        elif self.endpoint != "openai-responses":  # chat and legacy completions stream alike
            self._model_from(obj)
            if self._take(obj.get("usage")):
                self._final = self.done = True
        else:
            response = obj if obj.get("_rebuilt") else obj.get("response")
            if kind in ("response.completed", "response.incomplete", "response.failed") and isinstance(
                response, dict
            ):
                self._model_from(response)
                if self._take(response.get("usage")):
                    self._final = self.done = True
            elif isinstance(response, dict):
                self._model_from(response)

    # -- JSON bodies --

    def _read_body(self, obj: dict[str, Any]) -> None:
        self._model_from(obj)
        self._take(obj.get(self._keys.usage))

    # -- usage objects --

    def _model_from(self, obj: dict[str, Any]) -> None:
        raw = obj.get(self._keys.model)
        model = _text(gemini.model_name(raw) if self.endpoint == "gemini" else raw)
        if model:
            self.response_model = model

    def _take(self, usage: object) -> bool:
        """Merge a usage object's counts (present fields win); True if it carried any."""
        if not isinstance(usage, dict):
            return False
        got = False
        if self.endpoint == "ollama":  # the object itself: its counts are top-level fields
            got = ollama.take(self.counts, usage)
        elif self.endpoint == "gemini":
            got = gemini.take(self._gemini, usage)
            self.counts = gemini.counts(self._gemini)
        elif self.endpoint == "anthropic":
            fields = {
                "input_tokens": usage.get("input_tokens"),
                "output_tokens": usage.get("output_tokens"),
                "cache_read_tokens": usage.get("cache_read_input_tokens"),
                "cache_write_tokens": usage.get("cache_creation_input_tokens"),
            }
            for key, raw in fields.items():
                value = token_count(raw)
                if value is not None:
                    self.counts[key] = value
                    got = True
        else:
            chat = self.endpoint != "openai-responses"  # completions and embeddings: chat's names
            prompt = token_count(usage.get("prompt_tokens" if chat else "input_tokens"))
            output = token_count(usage.get("completion_tokens" if chat else "output_tokens"))
            details = usage.get("prompt_tokens_details" if chat else "input_tokens_details")
            cached = token_count(details.get("cached_tokens")) if isinstance(details, dict) else None
            if prompt is not None or output is not None:
                got = True
                cached = min(cached or 0, prompt or 0)
                self.counts["input_tokens"] = (prompt or 0) - cached
                self.counts["output_tokens"] = output or 0
                self.counts["cache_read_tokens"] = cached
                self.counts["cache_write_tokens"] = 0
        self.seen_usage = self.seen_usage or got
        return got

    def _usage(self, complete: bool) -> Usage:
        c = self.counts
        if not complete:  # cut before its final usage: over-approximated (proxy/meter_estimate.py)
            whole_body = not self.sse and self._ndjson is None and not (self._array and self._array.started)
            by_bytes = estimate.tokens_of(self.raw_bytes) if self.undecodable or whole_body else 0
            c = estimate.cut_counts(c, self.request_tokens, max(self.relayed, by_bytes))
        return Usage(
            provider=provider_of(self.endpoint),
            model=self.response_model or self.model,
            input_tokens=c.get("input_tokens", 0),
            output_tokens=c.get("output_tokens", 0),
            cache_read_tokens=c.get("cache_read_tokens", 0),
            cache_write_tokens=c.get("cache_write_tokens", 0),
            complete=complete,
        )


def meter_body(
    endpoint: Endpoint,
    body: bytes,
    *,
    sse: bool,
    status: int = 200,
    request_model: str = "",
    encoding: str = "",
) -> Usage | None:
    """A whole (buffered) response at once: the same reading as feeding it chunk by chunk."""
    meter = Meter(endpoint, sse=sse, status=status, request_model=request_model, encoding=encoding)
    return meter.feed(body) or meter.finish()
