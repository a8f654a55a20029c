"""proxy/metering.py on Ollama's native API: NDJSON streams and one-object answers of `/api/chat`,
`/api/generate` and `/api/embed`, fed in arbitrary pieces, and what a hostile or broken upstream
sends instead: cut streams, garbage, endless or huge lines, counts in the wrong places."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy import meter_estimate as estimate
from proxy import metering
from proxy.metering import Meter, Usage, meter_body
from tests.fakes.model_payloads import Tokens
from tests.fakes.ollama_payloads import ollama_embed_json, ollama_json, ollama_ndjson

T = Tokens(input=2_613, output=290)
WANT = (2_613, 290, 0, 0)


def counts(usage: Usage | None) -> tuple[int, int, int, int]:
    assert usage is not None
    return usage.input_tokens, usage.output_tokens, usage.cache_read_tokens, usage.cache_write_tokens


def random_pieces(body: bytes, seed: int) -> list[int]:
    rng = random.Random(seed)
    sizes, left = [], len(body)
    while left > 0:
        size = min(left, rng.choice((1, 2, 3, 7, 64, 200, 4096)))
        sizes.append(size)
        left -= size
    return sizes


def fed(
    body: bytes, pieces: list[int], *, status: int = 200, request_model: str = ""
) -> tuple[Usage | None, int]:
    """`body` fed in `pieces`; the Usage and the offset of the byte that completed it (-1: at finish)."""
    meter = Meter("ollama", sse=False, status=status, request_model=request_model)
    got: list[tuple[Usage, int]] = []
    pos = 0
    for size in pieces:
        usage = meter.feed(body[pos : pos + size])
        pos += size
        if usage is not None:
            got.append((usage, pos))
    end = meter.finish()
    if end is not None:
        got.append((end, -1))
    assert meter.finish() is None  # once
    assert len(got) <= 1, got
    return got[0] if got else (None, 0)


SHAPES = {
    "chat streamed": ollama_ndjson(T, "chat", "llama3.2"),
    "chat json": ollama_json(T, "chat", "llama3.2"),
    "generate streamed": ollama_ndjson(T, "generate", "llama3.2"),
    "generate json": ollama_json(T, "generate", "llama3.2"),
    "chat crlf": ollama_ndjson(T, "chat", "llama3.2").replace(b"\n", b"\r\n"),
}


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("seed", range(12))
def test_every_shape_in_any_pieces_reports_what_the_model_did(shape: str, seed: int) -> None:
    body = SHAPES[shape]
    usage, at = fed(body, random_pieces(body, seed), request_model="asked-for")
    assert counts(usage) == WANT and usage is not None and usage.complete
    assert usage.provider == "ollama" and usage.model == "llama3.2"  # the answer's model wins
    if shape.endswith("streamed"):  # known from the chunk that ends the final line, before the client has it
        assert at == len(body)


def test_embed_counts_its_prompt_as_input() -> None:
    usage = meter_body("ollama", ollama_embed_json(Tokens(input=8)), sse=False)
    assert usage == Usage("ollama", "all-minilm", 8, 0, 0, 0, True)


def test_a_final_object_without_counts_at_all_is_zero_tokens() -> None:
    """Ollama omits a count that is 0; a call that evaluated nothing is not invented spend."""
    usage = meter_body("ollama", ollama_ndjson(Tokens()), sse=False, request_model="llama3.2")
    assert usage is not None and usage.total_tokens == 0 and usage.model == "llama3.2"
    assert usage.complete  # the done line ended it: not a cut, nothing estimated
    load = b'{"model":"llama3.2","created_at":"x","response":"","done":true,"done_reason":"load"}'
    meter = Meter("ollama", sse=False, request_bytes=600)
    assert meter.feed(load) is None
    assert meter.finish() == Usage("ollama", "llama3.2", 0, 0, 0, 0, True)


def test_only_output_counted_when_the_prompt_came_from_the_cache() -> None:
    usage = meter_body("ollama", ollama_ndjson(Tokens(output=5)), sse=False)
    assert counts(usage) == (0, 5, 0, 0) and usage is not None and usage.complete


@pytest.mark.parametrize("cut", [1, 40, -400, -30, -2])
def test_a_cut_stream_counts_what_it_showed_as_incomplete(cut: int) -> None:
    body = ollama_ndjson(T, "chat", "qwen3:8b")
    part = body[:cut] if cut > 0 else body[: len(body) + cut]
    usage, _ = fed(part, random_pieces(part, cut % 7), request_model="asked-for")
    assert usage is not None and not usage.complete
    # the counts come only in the final line, which never ended: estimated from what passed
    assert usage.input_tokens == 0  # no request body here
    assert (usage.output_tokens > 0) == (b'"content"' in part)
    # the model named by the first whole line, else the request's
    assert usage.model == ("asked-for" if cut > 0 else "qwen3:8b")


def test_a_final_line_without_its_line_end_still_counts() -> None:
    body = ollama_ndjson(T)[:-1]  # the stream ended right after the final object
    usage, at = fed(body, random_pieces(body, 3))
    assert counts(usage) == WANT and usage is not None and usage.complete and at == -1


def test_counts_on_an_object_that_says_it_is_not_done_are_taken_but_do_not_end_the_call() -> None:
    early = b'{"model":"m","done":false,"prompt_eval_count":1,"eval_count":1}\n'
    body = early + ollama_ndjson(T, model="m")
    assert counts(meter_body("ollama", body, sse=False)) == WANT
    usage = meter_body("ollama", early, sse=False)
    assert usage is not None and counts(usage) == (1, 1, 0, 0) and not usage.complete


@pytest.mark.parametrize(
    "body",
    [
        b'{not json}\n{"prompt_eval_count": [1]}\n42\n"str"\nnull\n[1, 2]\n',
        b'{"prompt_eval_count": "5", "eval_count": 1.5, "done": true}\n',  # strings and floats are not counts
        b'{"prompt_eval_count": true, "eval_count": false}\n',
        b"\x00\xff" * 1000,
        b'{"eval_count": 5' + b"[" * 5000 + b"]" * 5000 + b"}\n",  # too deep to parse
        b'data: {"prompt_eval_count": 5}\n\n',  # SSE where NDJSON was expected
        b'{"response":"\\"eval_count\\": 999, \\"prompt_eval_count\\": 999"}\n',  # the model's text
        b"",
    ],
)
def test_garbage_never_raises_and_yields_no_invented_counts(body: bytes) -> None:
    for seed in range(3):
        usage, _ = fed(body, random_pieces(body, seed), request_model="llama3.2")
        # no count is taken from it (999 is the model's text); what passed is estimated
        assert usage is None or (
            not usage.complete and usage.total_tokens == usage.output_tokens <= estimate.tokens_of(len(body))
        ), usage


def test_garbage_lines_before_the_final_one_do_not_hide_it() -> None:
    body = b'{"eval_count": {bad}}\n\x00\xff"unclosed\n' + ollama_ndjson(T)
    usage, _ = fed(body, random_pieces(body, 5))
    assert counts(usage) == WANT and usage is not None and usage.complete


def test_an_error_answer_is_no_call() -> None:
    assert meter_body("ollama", b'{"error":"model \\"x\\" not found"}', sse=False, status=404) is None


def test_negative_counts_are_zero() -> None:
    usage = meter_body(
        "ollama", b'{"model":"m","done":true,"prompt_eval_count":-5,"eval_count":7}', sse=False
    )
    assert counts(usage) == (0, 7, 0, 0)


def test_a_huge_final_line_is_read_from_its_ends_with_bounded_memory() -> None:
    """A non-streamed generate repeats the whole answer and its token context before the counts;
    model output that spells a count's key inside the text cannot stand in for the real one."""
    text = ('"eval_count": 1, ' * 10 + "word ") * (metering.MAX_EVENT // 60)
    obj = json.loads(ollama_json(T, "generate", "qwen3:8b", text=text))
    obj["context"] = list(range(60_000))
    obj = {k: v for k, v in obj.items() if k not in ("prompt_eval_count", "eval_count")}
    obj.update(prompt_eval_count=T.input, eval_count=T.output)  # last, as Ollama's struct orders them
    body = json.dumps(obj, separators=(",", ":")).encode()
    assert len(body) > 2 * metering.MAX_EVENT
    meter = Meter("ollama", sse=False)
    for i in range(0, len(body), 65536):
        meter.feed(body[i : i + 65536])
        kept = len(meter._data.head) + len(meter._data.tail)
        assert kept <= (metering.MAX_EVENT if meter._data.whole else metering.HEAD + metering.TAIL + 65536)
    usage = meter.finish()
    assert usage == Usage("ollama", "qwen3:8b", T.input, T.output, 0, 0, True)
    # The same at once (a buffered body): the kept head still names the model.
    assert meter_body("ollama", body, sse=False) == usage


def test_a_huge_line_whose_counts_were_cut_off_counts_its_bytes() -> None:
    body = b'{"model":"m","response":"' + b"x" * (3 * metering.MAX_EVENT) + b'","done":true\n'
    usage = meter_body("ollama", body, sse=False)
    assert usage is not None and not usage.complete
    assert usage.output_tokens == estimate.tokens_of(len(body) - 1)  # the line, not its end


def test_an_endless_line_or_stream_stays_bounded() -> None:
    meter = Meter("ollama", sse=False)
    for _ in range(64):
        meter.feed(b"y" * 65536)  # one endless line: head + tail only
    assert len(meter._data.head) + len(meter._data.tail) <= metering.HEAD + metering.TAIL + 65536
    assert meter.finish() == Usage("ollama", "", 0, estimate.tokens_of(64 * 65536), 0, 0, False)
    meter = Meter("ollama", sse=False)
    line = b'{"model":"m","created_at":"x","message":{"role":"assistant","content":"hi"},"done":false}\n'
    for _ in range(20_000):
        meter.feed(line)
    assert meter._data.size == 0
    assert meter.finish() == Usage("ollama", "m", 0, 20_000, 0, 0, False)  # a token per line


def test_after_the_final_line_nothing_more_is_read() -> None:
    body = ollama_ndjson(T) + b'{"done":true,"prompt_eval_count":99999,"eval_count":99999}\n'
    usage, at = fed(body, [len(body)])
    assert counts(usage) == WANT and at == len(body)


@settings(max_examples=200, deadline=None)
@given(
    junk=st.lists(st.binary(max_size=300).filter(lambda b: b"\n" not in b), max_size=5),
    cuts=st.lists(st.integers(min_value=1, max_value=400), max_size=60),
)
def test_any_junk_lines_and_any_pieces_leave_the_final_counts_exact(
    junk: list[bytes], cuts: list[int]
) -> None:
    """Whatever lines come before it (half-written JSON, binary, a count spelled inside a string)
    and however the bytes are cut, the final line's counts are read exactly, once."""
    body = b"".join(line + b"\n" for line in junk) + ollama_ndjson(T)
    usage, _ = fed(body, [*cuts, len(body)])
    counted_junk = any(b'eval_count"' in line for line in junk)
    if (
        not counted_junk
    ):  # junk that happens to be a whole object with counts would be read, like Ollama's own
        assert counts(usage) == WANT and usage is not None and usage.complete
