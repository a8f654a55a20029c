"""proxy/metering.py on Google's Gemini API: the three response shapes (one JSON object, SSE with
`?alt=sse`, the streamed JSON array without it), fed in arbitrary pieces, and what a hostile or
broken upstream sends instead: cut streams, garbage, huge elements, absurd counts."""

from __future__ import annotations

import gzip
import json
import random

import pytest

from proxy import meter_estimate as estimate
from proxy import metering
from proxy.meter_gemini import JsonArray
from proxy.metering import Meter, Usage, meter_body
from tests.fakes.model_payloads import Tokens, gemini_json, gemini_json_stream, gemini_sse

T = Tokens(input=12_345, output=678, cache_read=9_000)
WANT = (12_345, 678, 9_000, 0)


def counts(usage: Usage | None) -> tuple[int, int, int, int]:
    assert usage is not None
    return usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens


def fed(
    body: bytes,
    *,
    sse: bool,
    pieces: list[int] | None = None,
    status: int = 200,
    request_model: str = "",
    encoding: str = "",
) -> Usage | None:
    """`body` fed in the given piece sizes (then the rest), the way the vault relays it."""
    meter = Meter("gemini", sse=sse, status=status, request_model=request_model, encoding=encoding)
    got: list[Usage] = []
    pos = 0
    for size in pieces or []:
        usage = meter.feed(body[pos : pos + size])
        pos += size
        if usage is not None:
            got.append(usage)
    for usage in (meter.feed(body[pos:]), meter.finish(), meter.finish()):
        if usage is not None:
            got.append(usage)
    assert len(got) <= 1  # reported once
    return got[0] if got else None


def random_pieces(body: bytes, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes, left = [], len(body)
    while left > 0:
        size = rng.choice([1, 2, 3, 7, 64, 500])
        sizes.append(size)
        left -= size
    return sizes


@pytest.mark.parametrize("shape", ["json", "sse", "array"])
def test_every_shape_reports_what_the_model_did(shape: str) -> None:
    body = {"json": gemini_json, "sse": gemini_sse, "array": gemini_json_stream}[shape](T)
    for seed in range(20):
        usage = fed(body, sse=shape == "sse", pieces=random_pieces(body, seed), request_model="from-path")
        assert counts(usage) == WANT, seed
        assert usage is not None and usage.complete and usage.provider == "gemini"
        assert usage.model == "gemini-2.5-flash"  # modelVersion beats the path's model


def test_the_usage_fields_add_up_as_google_bills_them() -> None:
    chunk = {
        "candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}],
        "usageMetadata": {
            "promptTokenCount": 1000,  # includes the 300 cached
            "cachedContentTokenCount": 300,
            "candidatesTokenCount": 50,
            "thoughtsTokenCount": 200,  # billed as output
            "toolUsePromptTokenCount": 40,  # input on top of the prompt
            "totalTokenCount": 1290,
        },
        "modelVersion": "models/gemini-2.5-pro",
    }
    usage = meter_body("gemini", json.dumps(chunk).encode(), sse=False)
    assert counts(usage) == (740, 250, 300, 0)
    assert usage is not None and usage.model == "gemini-2.5-pro" and usage.total_tokens == 1290


def test_in_a_stream_the_last_cumulative_usage_wins_and_a_missing_field_keeps_its_value() -> None:
    def chunk(usage: dict[str, object], finish: bool = False) -> bytes:
        candidate: dict[str, object] = {"content": {"parts": [{"text": "w"}]}}
        if finish:
            candidate["finishReason"] = "STOP"
        data = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": "gemini-2.0-flash"}
        return b"data: " + json.dumps(data).encode() + b"\r\n\r\n"

    body = (
        chunk({"promptTokenCount": 100, "thoughtsTokenCount": 30, "totalTokenCount": 130})
        + chunk({"promptTokenCount": 100, "candidatesTokenCount": 5, "thoughtsTokenCount": 30})
        + chunk({"promptTokenCount": 100, "candidatesTokenCount": 17}, finish=True)  # thoughts left out
    )
    usage = fed(body, sse=True)
    assert counts(usage) == (100, 47, 0, 0) and usage is not None and usage.complete


def test_a_stream_cut_before_its_last_chunk_counts_what_it_showed_as_incomplete() -> None:
    for shape, body in (("sse", gemini_sse(T)), ("array", gemini_json_stream(T))):
        cut = body[: body.rindex(b"finishReason") - 50]
        usage = fed(cut, sse=shape == "sse", pieces=random_pieces(cut, 1))
        assert usage is not None and not usage.complete, shape
        assert usage.input_tokens == WANT[0] and 0 < usage.output_tokens < WANT[1], shape
    # the whole array but for its closing bracket: every chunk seen, yet not known to be the end
    whole = gemini_json_stream(T)
    usage = fed(whole[:-1], sse=False)
    assert counts(usage) == WANT and usage is not None and not usage.complete
    # an SSE stream whose last chunk never says it finished
    usage = fed(gemini_sse(T).replace(b',"finishReason":"STOP"', b""), sse=True)
    assert counts(usage) == WANT and usage is not None and not usage.complete


def test_a_blocked_prompt_is_a_complete_answer() -> None:
    data = {
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 77, "totalTokenCount": 77},
        "modelVersion": "gemini-2.5-flash",
    }
    usage = fed(b"[" + json.dumps(data).encode() + b"]", sse=False)
    assert counts(usage) == (77, 0, 0, 0) and usage is not None and usage.complete


@pytest.mark.parametrize(
    "usage_metadata",
    [
        {"promptTokenCount": -5, "candidatesTokenCount": 3},  # negative: 0
        {"promptTokenCount": True, "candidatesTokenCount": 3},  # a bool is not a count
        {"promptTokenCount": 2.5, "candidatesTokenCount": 3},
        {"promptTokenCount": "NaN", "candidatesTokenCount": 3},
        {"promptTokenCount": None, "candidatesTokenCount": 3},
        {"promptTokenCount": "1e9", "candidatesTokenCount": 3},
    ],
)
def test_absurd_counts_are_not_read_as_counts(usage_metadata: dict[str, object]) -> None:
    body = json.dumps({"usageMetadata": usage_metadata, "modelVersion": "m"}).encode()
    assert counts(meter_body("gemini", body, sse=False)) == (0, 3, 0, 0)


def test_cached_tokens_never_exceed_the_prompt() -> None:
    body = json.dumps({"usageMetadata": {"promptTokenCount": 10, "cachedContentTokenCount": 99}}).encode()
    assert counts(meter_body("gemini", body, sse=False)) == (0, 0, 10, 0)


def test_strings_and_nesting_inside_elements_do_not_confuse_the_array_reader() -> None:
    tricky = {
        "candidates": [
            {
                "content": {"parts": [{"text": 'a "quoted" ] } [ { , \\ back\\slash \\" ]'}]},
                "finishReason": "STOP",
                "citations": [[{"x": [1, [2, {"y": "}"}]]}]],
            }
        ],
        "usageMetadata": {"promptTokenCount": 11, "candidatesTokenCount": 22},
        "modelVersion": "gemini-2.5-flash-lite",
    }
    body = b"  \r\n[" + json.dumps(tricky, indent=1).encode() + b"\r\n]\n"
    for seed in range(30):
        usage = fed(body, sse=False, pieces=random_pieces(body, seed))
        assert counts(usage) == (11, 22, 0, 0) and usage is not None and usage.complete, seed
        assert usage.model == "gemini-2.5-flash-lite"


@pytest.mark.parametrize(
    "body",
    [
        b'[{not json}, {"usageMetadata": [1]}, 42, "str", null, [1, 2]]',
        b"]]]}}}[[[",
        b"\x00\xff" * 1000,
        b'[{"usageMetadata": {"promptTokenCount": 5}' + b"[" * 5000 + b"]" * 5000 + b"}]",  # too deep
        b"[" + b'{"a":"' * 10,
        b'data: {"usageMetadata": {"promptTokenCount": 5}}',  # SSE where JSON was expected
        b"",
    ],
)
def test_garbage_never_raises_and_yields_no_invented_counts(body: bytes) -> None:
    for sse in (False, True) if not body.startswith(b"data:") else (False,):
        usage = fed(body, sse=sse, pieces=random_pieces(body, 3), request_model="gemini-2.5-flash")
        # no count is taken from it; a body that is no stream of chunks counts its bytes as output
        assert usage is None or (
            not usage.complete and usage.total_tokens == usage.output_tokens <= estimate.tokens_of(len(body))
        ), (sse, usage)


def test_garbage_before_a_good_element_does_not_hide_it() -> None:
    good = json.loads(gemini_json(T))
    body = b'[{"usageMetadata": {bad}},\r\n' + json.dumps(good).encode() + b"]"
    usage = fed(body, sse=False, pieces=random_pieces(body, 5))
    assert counts(usage) == WANT and usage is not None and usage.complete


def test_a_huge_element_is_read_from_its_ends_with_bounded_memory() -> None:
    pad = ["word " * (metering.MAX_EVENT // 4)]
    body = gemini_json_stream(T, words=["Hi", *pad, " end"])
    meter = Meter("gemini", sse=False)
    for i in range(0, len(body), 65536):
        meter.feed(body[i : i + 65536])
        assert len(meter._data.head) + len(meter._data.tail) <= metering.MAX_JSON + 65536
    usage = meter.finish()
    assert counts(usage) == WANT and usage is not None and usage.complete
    assert usage.model == "gemini-2.5-flash"  # modelVersion comes after the usage: from the tail
    sse = gemini_sse(T, words=["Hi", *pad])
    usage = fed(sse, sse=True, pieces=[65536] * (len(sse) // 65536))
    assert counts(usage) == WANT and usage is not None and usage.complete


def test_an_endless_string_costs_bounded_memory() -> None:
    meter = Meter("gemini", sse=False)
    meter.feed(b'[{"candidates": "')
    for _ in range(200):
        meter.feed(b"x" * 65536)
    assert len(meter._data.head) <= metering.HEAD and len(meter._data.tail) <= metering.TAIL
    usage = meter.finish()  # an element cut short, too large to keep whole: all its bytes count
    assert usage is not None and not usage.complete
    assert usage.total_tokens == usage.output_tokens == estimate.tokens_of(17 + 200 * 65536 - 1)


def test_no_model_version_falls_back_to_the_paths_model() -> None:
    body = json.dumps({"usageMetadata": {"promptTokenCount": 3}}).encode()
    usage = meter_body("gemini", body, sse=False, request_model="gemini-2.0-flash")
    assert usage is not None and usage.model == "gemini-2.0-flash"


def test_gzip_and_errors() -> None:
    body = gemini_json_stream(T)
    usage = fed(gzip.compress(body), sse=False, pieces=[10, 10, 10], encoding="gzip")
    assert counts(usage) == WANT
    error = json.dumps({"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}}).encode()
    assert fed(error, sse=False, status=429) is None
    assert fed(b"[" + error + b"]", sse=False, status=429) is None


def test_the_array_reader_alone() -> None:
    elements: list[bytes] = []
    current = bytearray()

    def done() -> None:
        elements.append(bytes(current))
        current.clear()

    reader = JsonArray(current.extend, done)
    body = b' [ {"a": "}"} , 1, "s]", {"b": [{"c": "\\""}]}, [{"no": 1}] ] trailing {"x": 1}'
    for i in range(len(body)):
        reader.add(body[i : i + 1])
    assert [json.loads(e) for e in elements] == [{"a": "}"}, {"b": [{"c": '"'}]}]
    assert reader.closed
    not_array = JsonArray(current.extend, done)
    not_array.add(b"  \n")
    assert not not_array.closed
    not_array.add(b'{"a": 1}')
    assert not_array.closed and not not_array.started
