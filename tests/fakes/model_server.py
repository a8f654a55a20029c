"""A scripted Anthropic-/OpenAI-compatible model server on loopback.

It speaks the real wire format (POST /v1/messages, POST /v1/chat/completions) and
records every request, so tests can assert what reached "the model" — for example
which API key the vault injected. A request with `"stream": true` to /v1/messages is
answered as Server-Sent Events (message_start, content_block_start/delta/stop,
message_delta, message_stop) built from the same scripted message, which is what the
Claude Code CLI asks for (`POST /v1/messages?beta=true`). Whatever else a client sends
(a `role: "system"` message, `thinking`, `context_management`, `metadata`, query strings)
is recorded and otherwise ignored.

`recorded_answer` (used as a `default` or pushed as a scripted `Raw`) answers in the recorded
shapes of tests/fakes/model_payloads.py (Gemini's by the path's `:verb` and `alt=sse`) and
tests/fakes/ollama_payloads.py (Ollama's native `/api/…`, NDJSON unless `"stream": false`),
streamed or not as the request asks, with the token
counts the test chooses: for metering tests, what "the model reported" is then known exactly.
Like the real API, a chat completions stream carries usage only when the request set
`stream_options.include_usage`.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from tests.fakes import model_payloads as shapes
from tests.fakes import ollama_payloads as ollama


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def last_user_text(body: dict[str, Any]) -> str:
    for message in reversed(body.get("messages", [])):
        if message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            return content
        texts = [b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"]
        if texts:
            return "\n".join(texts)
    return ""


def anthropic_text(text: str) -> dict[str, Any]:
    return {
        "id": "msg_fake",
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": [{"type": "text", "text": text}],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def openai_text(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
    }


def anthropic_tool_use(
    name: str, args: dict[str, Any], text: str = "", call_id: str = "toolu_fake"
) -> dict[str, Any]:
    """An assistant message asking for one tool call (optionally after some text)."""
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": call_id, "name": name, "input": args})
    return {
        "id": "msg_fake_tool",
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": content,
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }


def _sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def sse_events(message: dict[str, Any]) -> list[bytes]:
    """The Messages streaming events that deliver `message` (text and tool_use blocks)."""
    usage = message.get("usage") or {"input_tokens": 1, "output_tokens": 1}
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": usage.get("input_tokens", 1), "output_tokens": 1}
    events = [_sse("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        if kind == "tool_use":
            opening = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block.get("input") or {})}
        else:
            opening = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block.get("text", "")}
        events.append(
            _sse(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opening},
            )
        )
        events.append(
            _sse("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
        )
        events.append(_sse("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": message.get("stop_reason", "end_turn"), "stop_sequence": None},
                "usage": {"output_tokens": usage.get("output_tokens", 1)},
            },
        )
    )
    events.append(_sse("message_stop", {"type": "message_stop"}))
    return events


@dataclass(frozen=True)
class Raw:
    """A response sent byte for byte: SSE bodies are written in `pieces`, flushed one by one.

    `hang_at`: only the body's first `hang_at` bytes are sent, then the server waits (at most
    `HANG_S`) for the other side to hang up — a stream whose final usage event never comes
    while the client is still there to cut it. `hang_at=-1`: not even the status line is sent.
    """

    status: int
    content_type: str
    body: bytes
    pieces: int = 1
    hang_at: int | None = None


HANG_S = 10.0


def recorded_answer(record: Recorded, tokens: shapes.Tokens, model: str | None = None) -> Raw:
    """The provider's real response shape for this request, reporting `tokens`."""
    body = record.body
    stream = body.get("stream") is True
    kw = {"model": model} if model else {}
    path = record.path.split("?")[0].lower().replace("%3a", ":")
    native = _ollama_answer(re.sub("/+", "/", unquote(path)).rstrip("/"), body, tokens, model)
    if native is not None:
        return native
    if path.endswith(":generatecontent"):
        return Raw(200, "application/json", shapes.gemini_json(tokens, **kw))
    if path.endswith(":streamgeneratecontent"):
        if "alt=sse" in record.path:
            return Raw(200, "text/event-stream", shapes.gemini_sse(tokens, **kw), pieces=7)
        # a streamed JSON array: no length, sent in pieces like the API's chunked answer
        return Raw(200, "application/json", shapes.gemini_json_stream(tokens, **kw), pieces=9)
    if record.path.split("?")[0].endswith("/chat/completions"):
        if not stream:
            return Raw(200, "application/json", shapes.chat_json(tokens, **kw))
        data = shapes.chat_sse(tokens, **kw)
        options = body.get("stream_options")
        if not (isinstance(options, dict) and options.get("include_usage") is True):
            # without include_usage the API sends no usage chunk at all
            events = data.split(b"\n\n")
            data = b"\n\n".join(e for e in events if b'"usage":{' not in e)
        return Raw(200, "text/event-stream", data, pieces=7)
    if record.path.split("?")[0].endswith("/v1/completions"):
        if not stream:
            return Raw(200, "application/json", shapes.completions_json(tokens, **kw))
        options = body.get("stream_options")
        usage = isinstance(options, dict) and options.get("include_usage") is True
        return Raw(200, "text/event-stream", shapes.completions_sse(tokens, usage=usage, **kw), pieces=5)
    if record.path.split("?")[0].endswith("/v1/embeddings"):
        return Raw(200, "application/json", shapes.embeddings_json(tokens, **kw))
    if record.path.split("?")[0].endswith("/responses"):
        if not stream:
            return Raw(200, "application/json", shapes.responses_json(tokens, **kw))
        return Raw(200, "text/event-stream", shapes.responses_sse(tokens, **kw), pieces=7)
    if not stream:
        return Raw(200, "application/json", shapes.anthropic_json(tokens, **kw))
    return Raw(200, "text/event-stream", shapes.anthropic_sse(tokens, **kw), pieces=7)


def _ollama_answer(path: str, body: dict[str, Any], tokens: shapes.Tokens, model: str | None) -> Raw | None:
    """Ollama's native API: streamed (NDJSON, its default) unless `"stream": false`."""
    kind = path.rsplit("/", 1)[-1]
    if not path.endswith(("/api/chat", "/api/generate", "/api/embed", "/api/embeddings")):
        return None
    if kind == "embeddings":
        return Raw(200, "application/json", ollama.ollama_embeddings_json())
    if kind == "embed":
        return Raw(
            200, "application/json", ollama.ollama_embed_json(tokens, **({"model": model} if model else {}))
        )
    name = model or str(body.get("model") or "llama3.2")
    if body.get("stream") is False:
        return Raw(200, "application/json; charset=utf-8", ollama.ollama_json(tokens, kind, name))
    return Raw(200, ollama.NDJSON, ollama.ollama_ndjson(tokens, kind, name), pieces=7)


Responder = Callable[[Recorded], "tuple[int, dict[str, Any]] | Raw"]


class FakeModelServer:
    """`responses` are served in order; when they run out, `default` answers (echo by default)."""

    def __init__(self, default: Responder | None = None) -> None:
        self.requests: list[Recorded] = []
        self.responses: deque[tuple[int, dict[str, Any]] | Raw] = deque()
        self.default = default or self._echo
        self.busy_s = 0.0  # time spent answering (benchmarks subtract the model's own time)
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                began = time.perf_counter()
                try:
                    self._answer()
                finally:
                    with server._lock:
                        server.busy_s += time.perf_counter() - began

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                if "chunked" in self.headers.get("transfer-encoding", "").lower():
                    raw = self._read_chunked()
                try:
                    body = json.loads(raw or b"{}")
                except (ValueError, RecursionError):  # not JSON, not UTF-8 (a gzipped body), too deep
                    body = {"_raw": raw.decode("utf-8", "replace")}
                record = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with server._lock:
                    server.requests.append(record)
                    scripted = server.responses.popleft() if server.responses else None
                answer = scripted or server.default(record)
                if isinstance(answer, Raw):
                    self._raw(answer)
                    return
                status, payload = answer
                if status == 200 and body.get("stream") is True and payload.get("type") == "message":
                    self.send_response(200)
                    self.send_header("content-type", "text/event-stream")
                    self.send_header("cache-control", "no-cache")
                    self.send_header("connection", "close")
                    self.end_headers()
                    for event in sse_events(payload):
                        self.wfile.write(event)
                    self.wfile.flush()
                    self.close_connection = True
                    return
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _read_chunked(self) -> bytes:
                body = b""
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return body
                    body += self.rfile.read(size)
                    self.rfile.readline()

            def _raw(self, answer: Raw) -> None:
                if answer.hang_at == -1:
                    self._hang()
                    return
                self.send_response(answer.status)
                self.send_header("content-type", answer.content_type)
                if answer.content_type == "text/event-stream" or answer.pieces > 1:
                    self.send_header("cache-control", "no-cache")
                    self.send_header("connection", "close")
                    self.end_headers()
                    body = answer.body[: answer.hang_at] if answer.hang_at is not None else answer.body
                    size = max(1, -(-len(body) // answer.pieces))
                    for i in range(0, len(body), size):
                        self.wfile.write(body[i : i + size])
                        self.wfile.flush()
                    if answer.hang_at is not None:
                        self._hang()
                    self.close_connection = True
                    return
                self.send_header("content-length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            def _hang(self) -> None:
                self.connection.settimeout(HANG_S)
                with contextlib.suppress(OSError):
                    self.rfile.read(1)  # returns when the vault hangs up (or at HANG_S)
                self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802
                server.requests.append(Recorded("GET", self.path, dict(self.headers.items()), {}))
                data = b'{"ok": true}'
                self.send_response(200)
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.host_port = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.host_port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @staticmethod
    def _echo(record: Recorded) -> tuple[int, dict[str, Any]]:
        text = "echo: " + " ".join(last_user_text(record.body).split())[-300:]
        if record.path.endswith("/chat/completions"):
            return 200, openai_text(text)
        return 200, anthropic_text(text)

    def __enter__(self) -> FakeModelServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
