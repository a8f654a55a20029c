"""Recorded-shape model responses (Anthropic Messages; OpenAI Chat Completions, Responses, legacy
Completions and Embeddings; Gemini generateContent and both streamGenerateContent shapes).

Shapes follow what the providers send today (field order and extra fields included: cache
breakdowns, service tiers, `usage: null` on every chat chunk, `sequence_number`s, pings), with
the token counts a test chooses, so metering is tested against the real layouts. Used by the
metering unit tests, the fake model server and the vault benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Tokens:
    """What the model server reports. `input` excludes cached tokens (Anthropic's convention)."""

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0  # Anthropic only; OpenAI has no cache-write count


def _sse(event: str | None, data: dict[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()


# -- Anthropic Messages --


def anthropic_usage(t: Tokens) -> dict[str, Any]:
    return {
        "input_tokens": t.input,
        "cache_creation_input_tokens": t.cache_write,
        "cache_read_input_tokens": t.cache_read,
        "cache_creation": {"ephemeral_5m_input_tokens": t.cache_write, "ephemeral_1h_input_tokens": 0},
        "output_tokens": t.output,
        "service_tier": "standard",
    }


def anthropic_json(t: Tokens, model: str = "claude-sonnet-4-5-20250929", text: str = "Hello!") -> bytes:
    return json.dumps(
        {
            "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": anthropic_usage(t),
        }
    ).encode()


def anthropic_sse(
    t: Tokens,
    model: str = "claude-sonnet-4-5-20250929",
    words: list[str] | None = None,
    full_final_usage: bool = False,
) -> bytes:
    """A Messages stream. `full_final_usage`: message_delta repeats input/cache (newer API)."""
    start_usage = {**anthropic_usage(t), "output_tokens": 1}
    out = [
        _sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_01VhyMyVd2ySJc3BiTu1VYjc",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
        ),
        _sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        _sse("ping", {"type": "ping"}),
    ]
    for word in words or ["Hello", " there", ", how", " can I", " help?"]:
        out.append(
            _sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": word}},
            )
        )
    out.append(_sse("content_block_stop", {"type": "content_block_stop", "index": 0}))
    final: dict[str, Any] = {"output_tokens": t.output}
    if full_final_usage:
        final = {
            "input_tokens": t.input,
            "cache_creation_input_tokens": t.cache_write,
            "cache_read_input_tokens": t.cache_read,
            "output_tokens": t.output,
        }
    out.append(
        _sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": final,
            },
        )
    )
    out.append(_sse("message_stop", {"type": "message_stop"}))
    return b"".join(out)


# -- OpenAI Chat Completions --


def chat_usage(t: Tokens) -> dict[str, Any]:
    prompt = t.input + t.cache_read
    return {
        "prompt_tokens": prompt,
        "completion_tokens": t.output,
        "total_tokens": prompt + t.output,
        "prompt_tokens_details": {"cached_tokens": t.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def chat_json(t: Tokens, model: str = "gpt-4o-2024-08-06", text: str = "Hello!") -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
            "object": "chat.completion",
            "created": 1741570283,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text, "refusal": None, "annotations": []},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": chat_usage(t),
            "service_tier": "default",
            "system_fingerprint": "fp_fc9f1d7035",
        }
    ).encode()


def chat_sse(t: Tokens, model: str = "gpt-4o-mini-2024-07-18", words: list[str] | None = None) -> bytes:
    """A chat stream with `stream_options.include_usage`: `usage: null` until the last chunk."""

    def chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-123",
            "object": "chat.completion.chunk",
            "created": 1694268190,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_44709d6fcb",
            "choices": choices,
            "usage": usage,
        }

    def delta(d: dict[str, Any], finish: str | None = None) -> list[dict[str, Any]]:
        return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish}]

    out = [_sse(None, chunk(delta({"role": "assistant", "content": "", "refusal": None}), None))]
    for word in words or ["Hello", " there", ", how", " can I", " help?"]:
        out.append(_sse(None, chunk(delta({"content": word}), None)))
    out.append(_sse(None, chunk(delta({}, "stop"), None)))
    out.append(_sse(None, chunk([], chat_usage(t))))
    out.append(_sse(None, "[DONE]"))
    return b"".join(out)


# -- OpenAI Responses --


def responses_usage(t: Tokens) -> dict[str, Any]:
    prompt = t.input + t.cache_read
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": t.cache_read},
        "output_tokens": t.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + t.output,
    }


def _response(t: Tokens | None, model: str, text: str, status: str) -> dict[str, Any]:
    output = (
        [
            {
                "type": "message",
                "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ]
        if text
        else []
    )
    return {
        "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
        "object": "response",
        "created_at": 1741476542,
        "status": status,
        "error": None,
        "incomplete_details": None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": True,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": responses_usage(t) if t is not None else None,
        "user": None,
        "metadata": {},
    }


def responses_json(t: Tokens, model: str = "gpt-4.1-2025-04-14", text: str = "Hello!") -> bytes:
    return json.dumps(_response(t, model, text, "completed")).encode()


def responses_background(
    status: str = "queued", model: str = "gpt-5-2025-08-07", instructions: str | None = None
) -> bytes:
    """A `background: true` Response as first answered: queued (or in progress), no usage yet;
    OpenAI puts `background` right after `status`, before the echoed instructions."""
    queued = _response(None, model, "", status)
    head = {k: queued.pop(k) for k in ("id", "object", "created_at", "status")}
    return json.dumps({**head, "background": True, **queued, "instructions": instructions}).encode()


def responses_sse(
    t: Tokens, model: str = "gpt-4.1-2025-04-14", words: list[str] | None = None, text_pad: str = ""
) -> bytes:
    """A Responses stream; `text_pad` makes `response.completed` as large as a long answer's."""
    words = words or ["Hello", " there", ", how", " can I", " help?"]
    text = "".join(words) + text_pad
    seq = iter(range(10_000))
    item_id = "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b"

    def ev(kind: str, **fields: Any) -> bytes:
        return _sse(kind, {"type": kind, "sequence_number": next(seq), **fields})

    out = [
        ev("response.created", response=_response(None, model, "", "in_progress")),
        ev("response.in_progress", response=_response(None, model, "", "in_progress")),
        ev(
            "response.output_item.added",
            output_index=0,
            item={
                "id": item_id,
                "type": "message",
                "status": "in_progress",
                "content": [],
                "role": "assistant",
            },
        ),
        ev(
            "response.content_part.added",
            item_id=item_id,
            output_index=0,
            content_index=0,
            part={"type": "output_text", "annotations": [], "text": ""},
        ),
    ]
    for word in [*words, text_pad] if text_pad else words:
        out.append(
            ev("response.output_text.delta", item_id=item_id, output_index=0, content_index=0, delta=word)
        )
    out.append(ev("response.output_text.done", item_id=item_id, output_index=0, content_index=0, text=text))
    out.append(ev("response.completed", response=_response(t, model, text, "completed")))
    return b"".join(out)


# -- OpenAI legacy Completions and Embeddings --


def completions_usage(t: Tokens) -> dict[str, Any]:
    return {"prompt_tokens": t.input, "completion_tokens": t.output, "total_tokens": t.input + t.output}


def completions_json(t: Tokens, model: str = "gpt-3.5-turbo-instruct", text: str = "Hello!") -> bytes:
    return json.dumps(
        {
            "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
            "object": "text_completion",
            "created": 1589478378,
            "model": model,
            "system_fingerprint": "fp_44709d6fcb",
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "length"}],
            "usage": completions_usage(t),
        }
    ).encode()


def completions_sse(
    t: Tokens, model: str = "gpt-3.5-turbo-instruct", words: list[str] | None = None, usage: bool = True
) -> bytes:
    """A legacy completions stream; the usage chunk (empty `choices`) only with `include_usage`."""

    def chunk(choices: list[dict[str, Any]], tokens: Tokens | None) -> dict[str, Any]:
        return {
            "id": "cmpl-7iA7iJjj8V2zOkCGvWF2hAkDWBQZe",
            "object": "text_completion",
            "created": 1690759702,
            "choices": choices,
            "model": model,
            "system_fingerprint": "fp_44709d6fcb",
            "usage": completions_usage(tokens) if tokens is not None else None,
        }

    out = []
    for word in words or ["\n\n", "This", " is", " a", " test"]:
        out.append(
            _sse(None, chunk([{"text": word, "index": 0, "logprobs": None, "finish_reason": None}], None))
        )
    out.append(
        _sse(None, chunk([{"text": "", "index": 0, "logprobs": None, "finish_reason": "length"}], None))
    )
    if usage:
        out.append(_sse(None, chunk([], t)))
    out.append(_sse(None, "[DONE]"))
    return b"".join(out)


def embeddings_json(
    t: Tokens, model: str = "text-embedding-3-small", vectors: int = 2, dims: int = 8
) -> bytes:
    """An embeddings answer: the vectors first, then `model` and `usage` (input tokens only)."""
    data = [
        {
            "object": "embedding",
            "index": i,
            "embedding": [round(0.001 * (i + d) - 0.0123, 7) for d in range(dims)],
        }
        for i in range(vectors)
    ]
    usage = {"prompt_tokens": t.input, "total_tokens": t.input}
    return json.dumps({"object": "list", "data": data, "model": model, "usage": usage}).encode()


def anthropic_error() -> bytes:
    return json.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    ).encode()


# -- Google Gemini (native API) --


def gemini_usage(t: Tokens, *, done: bool = True, share: float = 1.0) -> dict[str, Any]:
    """`usageMetadata` reporting `t`: a third of the output as thinking, a fifth of the input as
    tool-use prompt, the cache read inside `promptTokenCount` (as Gemini counts it).

    `done=False`: an earlier chunk's cumulative counts, `share` of the output so far.
    """
    tool = t.input // 5
    thoughts = t.output // 3
    candidates = int((t.output - thoughts) * share)
    prompt = t.input - tool + t.cache_read
    usage: dict[str, Any] = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts + tool,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt}],
        "thoughtsTokenCount": thoughts,
    }
    if tool:
        usage["toolUsePromptTokenCount"] = tool
    if t.cache_read:
        usage["cachedContentTokenCount"] = t.cache_read
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": t.cache_read}]
    if not done:
        del usage["promptTokensDetails"]
    return usage


def _gemini_chunk(text: str, usage: dict[str, Any], model: str, finish: bool) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish:
        candidate["finishReason"] = "STOP"
    return {
        "candidates": [candidate],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": "mQ8uafLwNKmBvdIPqv3R6Ac",
    }


def gemini_json(t: Tokens, model: str = "gemini-2.5-flash", text: str = "Hello!") -> bytes:
    """A generateContent answer: candidates, then `usageMetadata`, then `modelVersion`."""
    return json.dumps(_gemini_chunk(text, gemini_usage(t), model, True), indent=2).encode()


def _gemini_chunks(t: Tokens, model: str, words: list[str] | None) -> list[dict[str, Any]]:
    words = words or ["Hello", " there", ", how", " can I", " help?"]
    last = len(words) - 1
    return [
        _gemini_chunk(
            word, gemini_usage(t, done=i == last, share=(i + 1) / len(words)), model, finish=i == last
        )
        for i, word in enumerate(words)
    ]


def gemini_sse(t: Tokens, model: str = "gemini-2.5-flash", words: list[str] | None = None) -> bytes:
    """streamGenerateContent?alt=sse: one `data:` per chunk, CRLF line ends, cumulative usage."""
    return b"".join(
        b"data: " + json.dumps(c, separators=(",", ":")).encode() + b"\r\n\r\n"
        for c in _gemini_chunks(t, model, words)
    )


def gemini_json_stream(t: Tokens, model: str = "gemini-2.5-flash", words: list[str] | None = None) -> bytes:
    """streamGenerateContent without alt=sse: ONE JSON array whose elements arrive over time."""
    return (
        b"["
        + b"\r\n,\r\n".join(json.dumps(c, indent=2).encode() for c in _gemini_chunks(t, model, words))
        + b"]"
    )
