"""Reading hostile request lines: a real `asyncio.StreamReader`, bounded in bytes, time and nesting."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.json_nesting import nesting_exceeds
from gateway.ipc_reader import ReadError, loads, read_line


def feed(limit: int, *chunks: bytes, eof: bool = False) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=limit)
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


async def read(reader: asyncio.StreamReader, limit: int = 1024, line_s: float = 5, idle_s: float = 5) -> Any:
    return await read_line(reader, max_line_bytes=limit, line_timeout_s=line_s, idle_timeout_s=idle_s)


async def test_lines_come_out_whole_and_eof_is_none() -> None:
    reader = feed(1024, b'{"id": 1}\n\n{"id"', b": 2}\n", eof=True)
    assert await read(reader) == b'{"id": 1}\n'
    assert await read(reader) == b"\n"
    assert await read(reader) == b'{"id": 2}\n'
    assert await read(reader) is None


async def test_a_line_cut_off_by_eof_is_dropped() -> None:
    assert await read(feed(1024, b'{"id": 1', eof=True)) is None


async def test_an_overlong_line_is_refused_while_it_is_still_arriving() -> None:
    reader = feed(1024, b"x" * 1500)  # no newline yet, and the peer is still sending
    with pytest.raises(ReadError) as err:
        await read(reader)
    assert err.value.code == "too_large"


async def test_a_line_just_over_the_cap_with_its_newline_is_refused() -> None:
    with pytest.raises(ReadError) as err:
        await read(feed(1024, b"x" * 1024 + b"\n"))
    assert err.value.code == "too_large"
    assert await read(feed(1024, b"x" * 1023 + b"\n")) == b"x" * 1023 + b"\n"


async def test_a_half_sent_line_times_out_from_its_first_byte() -> None:
    reader = feed(1024, b'{"id": 1, "method": "log"')
    with pytest.raises(ReadError) as err:
        await read(reader, line_s=0.05)
    assert err.value.code == "line_timeout"


async def test_a_silent_connection_times_out_as_idle() -> None:
    with pytest.raises(ReadError) as err:
        await read(feed(1024), idle_s=0.05)
    assert err.value.code == "idle_timeout"


def test_hundred_thousand_nested_brackets_are_refused_before_parsing() -> None:
    for line in (b"[" * 100_000 + b"\n", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, b"[" * 7 + b"]" * 7):
        with pytest.raises(ReadError) as err:
            loads(line, 6)
        assert err.value.code == "too_deep"


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"\xff\xfe\n",
        b'{"a": "unterminated\n',
        b"]]]]]]]]]]\n",
        # found by tests/fuzz: int() refuses > 4300 digits with a plain ValueError, which escaped
        # the handler and closed the connection without a reply
        b'{"id": ' + b"9" * 5000 + b', "method": "status"}\n',
    ],
)
def test_garbage_is_bad_json(line: bytes) -> None:
    with pytest.raises(ReadError) as err:
        loads(line, 6)
    assert err.value.code == "bad_json"


def test_brackets_inside_strings_do_not_count() -> None:
    text = '[[[[[[[[ \\" \\\\" ]]]' + "\\" * 3 + '"'
    line = json.dumps({"id": 1, "method": "log", "params": {"message": text}}).encode()
    assert not nesting_exceeds(line, 6)
    assert loads(line, 6)["params"]["message"] == text  # type: ignore[index]


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


_tricky_text = st.text(alphabet='[]{}"\\ab\n\u00e9', max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _tricky_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_tricky_text, inner, max_size=3),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(value=_json, ascii_only=st.booleans(), limit=st.integers(1, 8))
def test_nesting_check_agrees_with_the_parsed_depth(value: object, ascii_only: bool, limit: int) -> None:
    line = json.dumps(value, ensure_ascii=ascii_only).encode()
    assert nesting_exceeds(line, limit) == (_depth(value) > limit)
