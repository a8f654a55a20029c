"""Token counts read out of an upstream's JSON, for every provider's meter.

The upstream is untrusted input: a count is a non-negative JSON integer, never a bool (JSON
`true` is an int in Python) or a float, and a negative one is read as 0 rather than letting a
response lower what a group has spent. Gemini's JSON mapping may send int64 fields as strings,
so its meter also accepts a short string of ASCII digits.
"""

from __future__ import annotations

from collections.abc import Mapping

_MAX_DIGITS = 18  # fits an int64, far beyond any real count


def token_count(value: object, *, digit_string: bool = False) -> int | None:
    """The count `value` states, or None if it states none."""
    if digit_string and isinstance(value, str) and value.isascii() and value.isdigit():
        return int(value) if len(value) <= _MAX_DIGITS else None
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if value >= 0 else 0


def merge_counts(
    into: dict[str, int], obj: Mapping[str, object], fields: Mapping[str, str], *, digit_string: bool = False
) -> bool:
    """Copy each of `fields` (upstream name -> our key) that `obj` states; True if any was there.

    Present fields win over earlier ones: streams repeat cumulative counts, the last is right.
    """
    got = False
    for name, key in fields.items():
        value = token_count(obj.get(name), digit_string=digit_string)
        if value is not None:
            into[key] = value
            got = True
    return got
