"""proxy/meter_estimate.py through the meter: a call cut before its final usage, at every byte of a
recorded stream of each provider shape, is never counted below what it showed, and counts output
as soon as any content passed (the attack: hang up every stream just before its usage event)."""

from __future__ import annotations

import pytest

from proxy import meter_estimate as estimate
from proxy.metering import Meter, Usage, provider_of
from proxy.spend_paths import Endpoint
from tests.fakes.model_payloads import (
    Tokens,
    anthropic_sse,
    chat_sse,
    completions_sse,
    gemini_json_stream,
    gemini_sse,
    responses_sse,
)
from tests.fakes.ollama_payloads import ollama_ndjson

T = Tokens(input=1234, output=567, cache_read=89, cache_write=23)
T_OPENAI = Tokens(input=1234, output=567, cache_read=89)
REQUEST_BYTES = 3001  # 1001 tokens, 3 bytes to one, rounded up
WORDS = ["Hello", " there", ", how", " can I", " help you", " today?"]

# endpoint, SSE?, the recorded stream, the first content the client could read
SHAPES: list[tuple[Endpoint, bool, bytes, bytes]] = [
    ("anthropic", True, anthropic_sse(T, words=WORDS), b'"text":"'),
    ("openai-chat", True, chat_sse(T_OPENAI, words=WORDS), b'"content":"'),
    ("openai-responses", True, responses_sse(T_OPENAI, words=WORDS), b'"delta":"'),
    ("openai-completions", True, completions_sse(T_OPENAI, words=WORDS), b'"text":"'),
    ("ollama", False, ollama_ndjson(T, "chat", words=WORDS), b'"content":"'),
    ("ollama", False, ollama_ndjson(T, "generate", words=WORDS), b'"response":"'),
    ("gemini", True, gemini_sse(T, words=WORDS), b'"text":"'),
    ("gemini", False, gemini_json_stream(T, words=WORDS), b'"text": "'),
]


def cut_at(endpoint: Endpoint, sse: bool, body: bytes, n: int) -> tuple[Usage | None, dict[str, int]]:
    """The Usage of a call whose response stopped after `n` bytes, and the counts it stated."""
    meter = Meter(endpoint, sse=sse, request_bytes=REQUEST_BYTES)
    usage = meter.feed(body[:n]) or meter.finish()
    return usage, dict(meter.counts)


@pytest.mark.parametrize(
    ("endpoint", "sse", "body", "content"), SHAPES, ids=[f"{s[0]}-{i}" for i, s in enumerate(SHAPES)]
)
def test_a_cut_at_every_byte_counts_at_least_what_was_seen_and_output_once_content_passed(
    endpoint: Endpoint, sse: bool, body: bytes, content: bytes
) -> None:
    first_content = body.index(content) + len(content)
    outputs = []
    for n in range(len(body) + 1):
        usage, seen = cut_at(endpoint, sse, body, n)
        assert usage is not None, n
        if usage.complete:  # the final usage passed: exactly what the model reported, no estimate
            assert n > first_content
            continue
        for key in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
            assert getattr(usage, key) >= seen.get(key, 0), (n, key)
        if "input_tokens" not in seen:  # no input stated yet: the request body's size counts
            assert usage.input_tokens == 1001, n
        if n >= first_content:
            assert usage.output_tokens > 0, n
        outputs.append(usage.output_tokens)
    assert outputs == sorted(outputs)  # more relayed never counts less
    assert outputs[-1] >= len(WORDS)  # a token at least per content event that passed


def test_the_whole_stream_is_exact_and_not_estimated() -> None:
    meter = Meter("openai-chat", sse=True, request_bytes=REQUEST_BYTES)
    usage = meter.feed(chat_sse(T_OPENAI))
    assert usage == Usage("openai", "gpt-4o-mini-2024-07-18", 1234, 567, 89, 0, True)


@pytest.mark.parametrize("endpoint", ["anthropic", "openai-chat", "openai-responses", "ollama", "gemini"])
def test_a_call_with_no_response_byte_counts_its_request(endpoint: Endpoint) -> None:
    for sse in (True, False):
        meter = Meter(endpoint, sse=sse, request_bytes=REQUEST_BYTES, request_model="m")
        assert meter.finish() == Usage(provider_of(endpoint), "m", 1001, 0, 0, 0, False)


def test_divisor_and_compressed_requests() -> None:
    assert estimate.tokens_of(0) == 0 and estimate.tokens_of(1) == 1 and estimate.tokens_of(4000) == 1334
    assert estimate.request_tokens(4000) == 1334
    assert estimate.request_tokens(4000, encoded=True) == 4000  # its text is several times longer


def test_model_text_cannot_forge_content_keys_or_counts() -> None:
    """The text a model writes is a JSON string: its quotes are escaped, so a key spelled inside it
    is part of that one string's bytes, never a second content value or a count."""
    forged = '"content":"' + "x" * 3000 + '", "usage": {"prompt_tokens": 1}'
    body = chat_sse(T_OPENAI, words=[forged])
    cut = body.rfind(b"\n\n", 0, body.index(b'"usage":{')) + 2
    usage, _ = cut_at("openai-chat", True, body, cut)
    assert usage is not None and not usage.complete
    assert usage.input_tokens == 1001  # no prompt_tokens taken from the text
    escaped = len(forged.replace('"', '\\"'))
    assert estimate.tokens_of(escaped) <= usage.output_tokens <= estimate.tokens_of(escaped) + 3


def test_an_upstream_garbage_body_counts_its_bytes_and_an_error_answer_nothing() -> None:
    meter = Meter("openai-chat", sse=False, request_bytes=300)
    assert meter.feed(b"<html>" + b"x" * 594) is None
    assert meter.finish() == Usage("openai", "", 100, 200, 0, 0, False)
    meter = Meter("openai-chat", sse=False, status=500, request_bytes=300)
    meter.feed(b'{"error": {"message": "overloaded"}}')
    assert meter.finish() is None
