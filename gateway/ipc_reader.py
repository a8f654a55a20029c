"""Reading one request from a hostile peer: bounded in bytes, in time and in JSON nesting.

The bytes are bounded while they arrive, not after: the server's `StreamReader` is created
with `limit=max_line_bytes`, so `readuntil` gives up as soon as that many bytes are buffered
without a newline (the reader pauses the socket at twice the limit, so a connection never
holds much more than that). A line must also *finish* within `line_timeout_s` of its first
byte, so a half-sent line is dropped after a while instead of pinning its memory, and a
connection that sends nothing for `idle_timeout_s` is closed.

The nesting is bounded before `json.loads` ever sees the line: a line of 100,000 `[` would
otherwise end in a `RecursionError` from the decoder instead of a clear refusal.
"""

from __future__ import annotations

import asyncio
import json

from core.json_nesting import nesting_exceeds


class ReadError(Exception):
    """The line (or the connection) is refused; `code` goes into the error response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


async def read_line(
    reader: asyncio.StreamReader, *, max_line_bytes: int, line_timeout_s: float, idle_timeout_s: float
) -> bytes | None:
    """The next newline-terminated line, or None when the peer closed the connection.

    Raises `ReadError` (`idle_timeout`, `line_timeout`, `too_large`); the caller then
    answers once and closes the connection, since the stream is no longer in sync.
    """
    try:
        async with asyncio.timeout(idle_timeout_s):
            first = await reader.read(1)
    except TimeoutError:
        raise ReadError("idle_timeout", f"no request for {idle_timeout_s:g}s; connection closed") from None
    if not first:
        return None
    if first == b"\n":
        return first
    try:
        async with asyncio.timeout(line_timeout_s):
            rest = await reader.readuntil(b"\n")
    except TimeoutError:
        raise ReadError(
            "line_timeout", f"a request line must arrive within {line_timeout_s:g}s of its first byte"
        ) from None
    except asyncio.LimitOverrunError:
        raise ReadError("too_large", f"request line longer than {max_line_bytes} bytes") from None
    except asyncio.IncompleteReadError:
        return None  # the peer went away in the middle of a line
    if len(first) + len(rest) > max_line_bytes:
        raise ReadError("too_large", f"request line longer than {max_line_bytes} bytes")
    return first + rest


def loads(line: bytes, max_depth: int) -> object:
    """Parse one request line; `ReadError` (`too_deep`, `bad_json`) instead of any decoder failure."""
    if nesting_exceeds(line, max_depth):
        raise ReadError("too_deep", f"request nesting exceeds {max_depth} levels")
    try:
        return json.loads(line)
    except (UnicodeDecodeError, ValueError):  # ValueError: also a number past int's 4300 digits
        raise ReadError("bad_json", "request is not valid JSON") from None
    except RecursionError:  # unreachable after the check above; kept so no traceback ever escapes
        raise ReadError("too_deep", f"request nesting exceeds {max_depth} levels") from None
