"""How deep a JSON text nests, measured before any parser sees it.

`json.loads` recurses once per `[`/`{`: a hostile text of 100,000 brackets ends in a
`RecursionError` (or, at other depths, a limit that differs between Python versions) instead
of a clear refusal. Every place that parses JSON from a sandbox, a request body or an RPC
answer checks the nesting first with this one function: IPC lines, held-request body
conditions, NEAR call arguments shown to the owner.
"""

from __future__ import annotations

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SQUARE = bytes.maketrans(b"{}", b"[]")  # depth does not care which kind of bracket


def _skeleton(line: bytes) -> bytes:
    """The brackets of `line` outside JSON strings, all as `[`/`]`; only C-speed bytes methods.

    Escapes go first (escaped backslashes paired left to right, as a JSON lexer pairs them,
    then escaped quotes), so every quote left delimits a string: the even pieces between
    quotes are outside strings.
    """
    text = line.replace(b"\\\\", b"").replace(b'\\"', b"")
    return b"".join(text.split(b'"')[::2]).translate(_SQUARE, _NOT_BRACKETS)


def nesting_exceeds(line: bytes, limit: int) -> bool:
    """True if the JSON text in `line` nests arrays/objects more than `limit` deep.

    Explicit and cheap even for a hostile 256 KiB line: on the bracket skeleton, each pass
    removes the innermost `[]` pairs, so a pair still standing after `limit` passes holds
    something more than `limit` deep. What is left then holds no matched pair, only
    unmatched brackets, whose depth the removals did not change; a short walk measures it
    (it stops at the first one too deep or at a stray `]`, which `json.loads` reports).
    """
    if line.count(b"[") + line.count(b"{") <= limit:
        return False
    skeleton = _skeleton(line)
    for _ in range(limit):
        reduced = skeleton.replace(b"[]", b"")
        if len(reduced) == len(skeleton):
            break
        skeleton = reduced
    else:
        if b"[]" in skeleton:
            return True
    depth = 0
    for byte in skeleton:
        depth += 1 if byte == 0x5B else -1  # ord("[")
        if depth > limit:
            return True
        if depth < 0:
            return False
    return False
