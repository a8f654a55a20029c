"""proxy/metering.py against recorded-shape bodies of both providers, streamed and not.

Streams are fed whole, split at every byte offset, one byte at a time, cut short, mangled and
compressed; memory stays bounded for a hostile stream that never ends a line or an event.
"""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from proxy import metering
from proxy.metering import Meter, Usage, ensure_stream_usage, meter_body, request_model
from proxy.spend_paths import Endpoint, model_endpoint
from tests.fakes.model_payloads import (
    Tokens,
    anthropic_error,
    anthropic_json,
    anthropic_sse,
    chat_json,
    chat_sse,
    completions_json,
    completions_sse,
    embeddings_json,
    responses_json,
    responses_sse,
)

T = Tokens(input=1234, output=567, cache_read=8901, cache_write=234)
T_OPENAI = Tokens(input=1234, output=567, cache_read=8901)
T_PLAIN = Tokens(input=1234, output=567)  # legacy completions report no cached tokens
T_EMBED = Tokens(input=4321)  # embeddings: input only


def expected(provider: str, model: str, t: Tokens, complete: bool = True) -> Usage:
    return Usage(provider, model, t.input, t.output, t.cache_read, t.cache_write, complete)


CASES = [
    ("anthropic", anthropic_sse(T), expected("anthropic", "claude-sonnet-4-5-20250929", T)),
    (
        "anthropic",
        anthropic_sse(T, full_final_usage=True),
        expected("anthropic", "claude-sonnet-4-5-20250929", T),
    ),
    ("openai-chat", chat_sse(T_OPENAI), expected("openai", "gpt-4o-mini-2024-07-18", T_OPENAI)),
    ("openai-responses", responses_sse(T_OPENAI), expected("openai", "gpt-4.1-2025-04-14", T_OPENAI)),
    ("openai-completions", completions_sse(T_PLAIN), expected("openai", "gpt-3.5-turbo-instruct", T_PLAIN)),
]


def test_model_endpoint() -> None:
    assert model_endpoint("POST", "/v1/messages") == "anthropic"
    assert model_endpoint("post", "/v1/messages?beta=true") == "anthropic"
    assert model_endpoint("POST", "/v1/chat/completions") == "openai-chat"
    assert model_endpoint("POST", "/v1/responses") == "openai-responses"
    assert model_endpoint("POST", "/v1/responses/") == "openai-responses"
    assert model_endpoint("GET", "/v1/messages") is None
    assert model_endpoint("POST", "/v1/messages/count_tokens") is None
    assert model_endpoint("POST", "/v1/models") is None
    assert model_endpoint("POST", "/api/v1/messages") is None
    assert model_endpoint("POST", "/v1/completions") == "openai-completions"
    assert model_endpoint("POST", "/v1/embeddings?x=1") == "openai-embeddings"
    assert model_endpoint("POST", "/v1/%63hat/completions") == "openai-chat"  # escapes cannot hide a call
    assert model_endpoint("POST", "/v1/messages/batches") is None  # unmeterable, not metered


def test_legacy_completions_stream_without_include_usage_is_incomplete_and_rewritten() -> None:
    """Like chat: without `include_usage` the stream has no counts, which is why the vault asks."""
    meter = Meter("openai-completions", sse=True, request_model="gpt-3.5-turbo-instruct", request_bytes=90)
    assert meter.feed(completions_sse(T_PLAIN, usage=False)) is None
    got = meter.finish()  # counted from what passed (proxy/meter_estimate.py): 6 text events
    assert got == Usage("openai", "gpt-3.5-turbo-instruct", 30, 9, 0, 0, False)  # 3 bytes a token, 1 at least
    body = json.dumps({"model": "gpt-3.5-turbo-instruct", "prompt": "hi", "stream": True}).encode()
    rewritten = ensure_stream_usage(body)
    assert rewritten is not None and json.loads(rewritten)["stream_options"] == {"include_usage": True}


def test_embeddings_answer_larger_than_the_cap_is_still_metered() -> None:
    """Thousands of vectors: only head and tail are kept; usage is in the tail, and `model`
    (after the vectors) comes from the request then."""
    body = embeddings_json(T_EMBED, model="text-embedding-3-large", vectors=400, dims=512)
    assert len(body) > metering.MAX_JSON
    meter = Meter("openai-embeddings", sse=False, request_model="text-embedding-3-large")
    for i in range(0, len(body), 65536):
        assert meter.feed(body[i : i + 65536]) is None
    assert meter.finish() == expected("openai", "text-embedding-3-large", T_EMBED)
    # An error answer carries no usage and costs nothing.
    error = b'{"error": {"message": "bad", "type": "invalid_request_error"}}'
    assert meter_body("openai-embeddings", error, sse=False, status=400) is None


@pytest.mark.parametrize(
    ("endpoint", "body", "want"),
    [
        ("anthropic", anthropic_json(T), expected("anthropic", "claude-sonnet-4-5-20250929", T)),
        ("openai-chat", chat_json(T_OPENAI), expected("openai", "gpt-4o-2024-08-06", T_OPENAI)),
        ("openai-responses", responses_json(T_OPENAI), expected("openai", "gpt-4.1-2025-04-14", T_OPENAI)),
        (
            "openai-completions",
            completions_json(T_PLAIN),
            expected("openai", "gpt-3.5-turbo-instruct", T_PLAIN),
        ),
        (
            "openai-embeddings",
            embeddings_json(T_EMBED),
            expected("openai", "text-embedding-3-small", T_EMBED),
        ),
    ],
)
def test_json_bodies(endpoint: Endpoint, body: bytes, want: Usage) -> None:
    assert meter_body(endpoint, body, sse=False) == want
    # chunk by chunk (a chunked or large JSON body streams): the same
    meter = Meter(endpoint, sse=False)
    for i in range(0, len(body), 7):
        assert meter.feed(body[i : i + 7]) is None
    assert meter.finish() == want
    assert meter.finish() is None  # once


@pytest.mark.parametrize(("endpoint", "body", "want"), CASES)
def test_streams_whole_and_usage_comes_with_its_chunk(endpoint: Endpoint, body: bytes, want: Usage) -> None:
    meter = Meter(endpoint, sse=True)
    assert meter.feed(body) == want
    assert meter.finish() is None
    # The chunk carrying the final usage event is the one that returns it: nothing before.
    events = body.split(b"\n\n")
    meter = Meter(endpoint, sse=True)
    got = [meter.feed(e + b"\n\n") for e in events[:-1]]
    index = next(i for i, u in enumerate(got) if u is not None)
    assert got[index] == want
    final_event = events[index]
    assert (
        b"message_delta" in final_event or b'"usage":{' in final_event or b"response.completed" in final_event
    )


@pytest.mark.parametrize(("endpoint", "body", "want"), CASES)
def test_streams_split_at_every_offset(endpoint: Endpoint, body: bytes, want: Usage) -> None:
    for cut in range(1, len(body)):
        meter = Meter(endpoint, sse=True)
        got = [meter.feed(body[:cut]), meter.feed(body[cut:]), meter.finish()]
        assert [u for u in got if u is not None] == [want], cut


@pytest.mark.parametrize(("endpoint", "body", "want"), CASES)
def test_streams_byte_by_byte_and_crlf(endpoint: Endpoint, body: bytes, want: Usage) -> None:
    for variant in (body, body.replace(b"\n", b"\r\n"), body.replace(b"\n", b"\r")):
        meter = Meter(endpoint, sse=True)
        got = [meter.feed(variant[i : i + 1]) for i in range(len(variant))]
        got.append(meter.finish())
        assert [u for u in got if u is not None] == [want]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    body = anthropic_sse(T).replace(b"\n", b"\r\n")
    for cut in [i + 1 for i in range(len(body)) if body[i : i + 1] == b"\r"]:
        meter = Meter("anthropic", sse=True)
        got = [meter.feed(body[:cut]), meter.feed(body[cut:]), meter.finish()]
        assert [u for u in got if u is not None] == [expected("anthropic", "claude-sonnet-4-5-20250929", T)]


def test_comments_multiline_data_and_no_space_after_colon() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 4}}
    body = (
        b": keep-alive\n\n"
        b'data:{"id":"x","model":"gpt-4o",\n'
        b'data: "choices":[],\n'
        b"data: " + json.dumps({"usage": usage})[1:].encode() + b"\n"
        b": a comment inside the event\n"
        b"\n"
        b"data: [DONE]\n\n"
    )
    assert Meter("openai-chat", sse=True).feed(body) == Usage("openai", "gpt-4o", 6, 3, 4, 0, True)


@pytest.mark.parametrize(("endpoint", "body", "want"), CASES)
def test_cut_stream_gives_what_was_seen(endpoint: Endpoint, body: bytes, want: Usage) -> None:
    final_at = body.index(b"message_delta" if endpoint == "anthropic" else b'"usage":{')
    final_at = body.rfind(b"\n\n", 0, final_at)
    meter = Meter(endpoint, sse=True, request_model="asked-for", request_bytes=3000)
    assert meter.feed(body[:final_at]) is None
    got = meter.finish()
    assert got is not None and got.complete is False
    assert got.model == want.model  # named by the chunks / message_start / response.created
    if endpoint == "anthropic":  # message_start's input and cache counts were seen: they stand
        assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (
            want.input_tokens,
            want.cache_read_tokens,
            want.cache_write_tokens,
        )
    else:  # nothing was stated: the request body's 3000 bytes, 3 to a token
        assert (got.input_tokens, got.cache_read_tokens, got.cache_write_tokens) == (1000, 0, 0)
    assert got.output_tokens >= 5  # five words passed, a token at least for each


def test_cut_inside_the_final_event_is_incomplete() -> None:
    body = chat_sse(T_OPENAI)
    cut = body.index(b'"usage":{') + 20
    meter = Meter("openai-chat", sse=True)
    assert meter.feed(body[:cut]) is None
    got = meter.finish()
    assert got is not None and not got.complete and got.output_tokens >= 5  # the words that passed


def test_last_event_without_blank_line_still_counts() -> None:
    body = anthropic_sse(T)
    body = body[: body.index(b"event: message_stop")].rstrip(b"\n")
    meter = Meter("anthropic", sse=True)
    assert meter.feed(body) is None  # message_delta not yet terminated
    assert meter.finish() == expected("anthropic", "claude-sonnet-4-5-20250929", T)


def test_garbage_never_raises() -> None:
    bodies = [
        b"",
        b"\x00\xff" * 1000,
        b"data: {not json\n\n",
        b'data: {"usage": "lots"}\n\n',
        b'data: {"usage": {"prompt_tokens": -5, "completion_tokens": true}}\n\n',
        b'data: {"usage": {"prompt_tokens": 1e9999}}\n\n',
        b"data: " + b"[" * 100_000 + b"\n\n",
        b'data: {"type":"message_delta","usage":{"output_tokens":"12"}}\n\n',
        anthropic_sse(T)[::-1],
    ]
    for endpoint in ("anthropic", "openai-chat", "openai-responses"):
        for body in bodies:
            for sse in (True, False):
                usage = meter_body(endpoint, body, sse=sse)  # type: ignore[arg-type]
                assert usage is None or all(
                    isinstance(v, int) and v >= 0
                    for v in (usage.input_tokens, usage.output_tokens, usage.cache_read_tokens)
                )


def test_negative_and_non_integer_counts_are_not_counted() -> None:
    body = b'{"model":"m","usage":{"input_tokens":-5,"output_tokens":2.5,"cache_read_input_tokens":true}}'
    assert meter_body("anthropic", body, sse=False) == Usage("anthropic", "m", 0, 0, 0, 0, True)


def test_ok_body_without_usage_is_an_incomplete_call_and_errors_are_not_calls() -> None:
    assert meter_body("anthropic", b'{"model":"m"}', sse=False, request_model="req") == Usage(
        "anthropic", "m", 0, 5, 0, 0, False
    )  # a body without usage counts its bytes (13, 3 to a token) as output
    assert meter_body("anthropic", anthropic_error(), sse=False, status=529) is None
    assert meter_body("anthropic", b"", sse=True, request_model="req") == Usage(
        "anthropic", "req", 0, 0, 0, 0, False
    )


def test_model_falls_back_to_the_request_and_is_bounded() -> None:
    body = b'{"usage":{"input_tokens":1,"output_tokens":2}}'
    assert meter_body("anthropic", body, sse=False, request_model="claude-x").model == "claude-x"  # type: ignore[union-attr]
    long_model = anthropic_json(T, model="m" * 500)
    assert meter_body("anthropic", long_model, sse=False).model == "m" * 100  # type: ignore[union-attr]
    assert request_model(b'{"max_tokens": 5, "model": "gpt-4o", "messages": []}') == "gpt-4o"
    assert request_model(b"not json") == ""


def test_huge_final_event_keeps_usage_in_bounded_memory() -> None:
    """A Responses `response.completed` repeats the whole answer; a long one overflows the cap."""
    pad = "word " * (metering.MAX_EVENT // 4)
    body = responses_sse(T_OPENAI, text_pad=pad)
    meter = Meter("openai-responses", sse=True)
    got = []
    for i in range(0, len(body), 65536):
        got.append(meter.feed(body[i : i + 65536]))
        assert len(meter._data.head) + len(meter._data.tail) <= metering.MAX_EVENT + 65536
        assert len(meter._line) <= metering.MAX_LINE + 65536
    got.append(meter.finish())
    assert [u for u in got if u is not None] == [expected("openai", "gpt-4.1-2025-04-14", T_OPENAI)]


def test_huge_json_body_keeps_head_and_tail() -> None:
    body = anthropic_json(T, text="x" * (metering.MAX_JSON + 100))
    meter = Meter("anthropic", sse=False)
    for i in range(0, len(body), 1 << 20):
        meter.feed(body[i : i + (1 << 20)])
    assert len(meter._data.head) <= metering.HEAD and len(meter._data.tail) <= metering.TAIL
    assert meter.finish() == expected("anthropic", "claude-sonnet-4-5-20250929", T)


def test_hostile_stream_without_line_ends_stays_bounded() -> None:
    meter = Meter("anthropic", sse=True)
    for _ in range(64):
        meter.feed(b"x" * 65536)  # one endless non-data line: dropped
    assert len(meter._line) <= metering.MAX_LINE
    meter = Meter("anthropic", sse=True)
    meter.feed(b"data: ")
    for _ in range(64):
        meter.feed(b"y" * 65536)  # one endless data line: head + tail only
    assert len(meter._line) <= metering.MAX_LINE
    assert len(meter._data.head) + len(meter._data.tail) <= metering.HEAD + metering.TAIL + 65536
    got = meter.finish()  # an event too large to keep whole counts all its bytes
    assert got == Usage("anthropic", "", 0, -(-64 * 65536 // 3), 0, 0, False)


def test_endless_stream_of_events_stays_bounded() -> None:
    meter = Meter("openai-chat", sse=True)
    event = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'
    for _ in range(20_000):
        meter.feed(event)
    assert meter._data.size == 0 and not meter._line


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "deflate-raw"])
def test_compressed_responses_are_metered(encoding: str) -> None:
    body = anthropic_sse(T)
    if encoding == "gzip":
        data = gzip.compress(body)
    elif encoding == "deflate":
        data = zlib.compress(body)
    else:
        c = zlib.compressobj(wbits=-15)
        data = c.compress(body) + c.flush()
        encoding = "deflate"
    meter = Meter("anthropic", sse=True, encoding=encoding)
    got = [meter.feed(data[i : i + 5]) for i in range(0, len(data), 5)] + [meter.finish()]
    assert [u for u in got if u is not None] == [expected("anthropic", "claude-sonnet-4-5-20250929", T)]


def test_unknown_encoding_is_incomplete() -> None:
    meter = Meter("anthropic", sse=True, encoding="br")
    assert meter.undecodable
    assert meter.feed(b"\x8b\x00garbage") is None
    assert meter.finish() == Usage("anthropic", "", 0, 3, 0, 0, False)  # its 9 bytes, 3 to a token


def test_ensure_stream_usage() -> None:
    plain = b'{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    out = ensure_stream_usage(plain)
    assert out is not None
    assert json.loads(out) == {**json.loads(plain), "stream_options": {"include_usage": True}}
    off = b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false,"x":1},"messages":[]}'
    assert json.loads(ensure_stream_usage(off) or b"")["stream_options"] == {"include_usage": True, "x": 1}
    bad = b'{"model":"gpt-4o","stream":true,"stream_options":"no"}'
    assert json.loads(ensure_stream_usage(bad) or b"")["stream_options"] == {"include_usage": True}
    # A duplicate key cannot smuggle "false" past the rewrite: the parsed (last) value is replaced.
    dup = b'{"stream":true,"stream_options":{"include_usage":true},"stream_options":{"include_usage":false}}'
    assert json.loads(ensure_stream_usage(dup) or b"")["stream_options"] == {"include_usage": True}
    unchanged = [
        b'{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}',
        b'{"model":"gpt-4o","stream":false}',
        b'{"model":"gpt-4o"}',
        b'{"stream":true, broken',
        b"[1, 2]",
        b'"stream": true',
        b"\xff\xfe" + b'"stream":true',
        b"",
    ]
    for body in unchanged:
        assert ensure_stream_usage(body) is None, body
