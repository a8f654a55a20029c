"""Recorded-shape answers of Ollama's native API (`/api/chat`, `/api/generate`, `/api/embed`,
the legacy `/api/embeddings`), as `ollama serve` sends them: compact JSON (Go's encoder), a
stream as NDJSON whose final object (`"done": true`) alone carries `prompt_eval_count` (input)
and `eval_count` (output) among its durations; `/api/generate` also repeats its token
`context`. `Tokens.input`/`.output` are what the model server reports; Ollama has no cache counts.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.model_payloads import Tokens

NDJSON = "application/x-ndjson"
CREATED = "2026-12-02T12:00:00.123456789Z"


def _line(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _metrics(t: Tokens) -> dict[str, Any]:
    out: dict[str, Any] = {"total_duration": 4883583458, "load_duration": 1334875}
    if t.input:  # omitempty, like Ollama's Go struct
        out.update(prompt_eval_count=t.input, prompt_eval_duration=342546000)
    if t.output:
        out.update(eval_count=t.output, eval_duration=4535599000)
    return out


def _chunk(kind: str, model: str, text: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "created_at": CREATED}
    if kind == "chat":
        body["message"] = {"role": "assistant", "content": text}
    else:
        body["response"] = text
    return body


def _final(kind: str, t: Tokens, model: str, text: str, context: int) -> dict[str, Any]:
    final = {**_chunk(kind, model, text), "done": True, "done_reason": "stop"}
    if kind == "generate":
        final["context"] = list(range(1, context + 1))
    return {**final, **_metrics(t)}


def ollama_json(t: Tokens, kind: str = "chat", model: str = "llama3.2", text: str = "Hello!") -> bytes:
    """A `"stream": false` answer: one object, no line end."""
    return _line(_final(kind, t, model, text, 40))[:-1]


def ollama_ndjson(
    t: Tokens,
    kind: str = "chat",
    model: str = "llama3.2",
    words: list[str] | None = None,
    context: int = 40,
) -> bytes:
    """A streamed answer (Ollama's default): a line per token, then the final object."""
    lines = [_line({**_chunk(kind, model, w), "done": False}) for w in words or ["Hel", "lo", "!"]]
    return b"".join(lines) + _line(_final(kind, t, model, "", context))


def ollama_embed_json(t: Tokens, model: str = "all-minilm", inputs: int = 2) -> bytes:
    body: dict[str, Any] = {"model": model, "embeddings": [[0.010071029, -0.0017594862]] * inputs}
    body.update(total_duration=14143917, load_duration=1019500)
    if t.input:
        body["prompt_eval_count"] = t.input
    return json.dumps(body, separators=(",", ":")).encode()


def ollama_embeddings_json() -> bytes:
    """The legacy `/api/embeddings`: a vector, no counts."""
    return b'{"embedding":[0.5670403838157654,0.009260174818336964]}'


def ollama_error(message: str = "model 'nope' not found") -> bytes:
    return json.dumps({"error": message}).encode()
