"""Known secret values cut out of every text the process prints or logs.

Libraries do not keep our secrets to themselves: python-telegram-bot puts the bot token
in every Bot API URL and in its `InvalidToken` message ("The token `…` was rejected"),
and an exception's traceback repeats whatever its message and locals said. Scanning for
credential *formats* (proxy/leaks.py) cannot catch a token whose format is unknown, so
the values this process actually holds (every `SecretStr` of the loaded config) are
registered here and replaced by value — in log records, tracebacks included, and in
the one line a failed start-up prints.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections.abc import Iterable

from pydantic import BaseModel, SecretStr

REDACTED = "[redacted]"
_MIN_LENGTH = 6  # shorter "secrets" would blank out ordinary words; the config rejects none this short

_lock = threading.Lock()
_values: tuple[str, ...] = ()


def register(values: Iterable[str]) -> None:
    """Add secret values; their plain and URL-encoded forms are redacted from then on."""
    global _values
    forms = set(_values)
    for value in values:
        if len(value) >= _MIN_LENGTH:
            forms.update({value, urllib.parse.quote(value, safe=""), urllib.parse.quote(value)})
    with _lock:
        _values = tuple(sorted(forms, key=len, reverse=True))  # a longer form before its own prefix


def register_config(config: BaseModel) -> None:
    """Every `SecretStr` anywhere in a (nested) config model."""
    register(_secret_values(config))


def _secret_values(node: object) -> Iterable[str]:
    if isinstance(node, SecretStr):
        yield node.get_secret_value()
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            yield from _secret_values(getattr(node, name))
    elif isinstance(node, list | tuple | set | frozenset):
        for item in node:
            yield from _secret_values(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _secret_values(item)


def scrub(text: str) -> str:
    """`text` with every registered secret value replaced by `[redacted]`."""
    for value in _values:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def one_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one safe line: its type and the first line of its message, scrubbed.

    The type stays because a bare message ("All connection attempts failed") does not say
    which layer failed; only the first line, because continuation lines (a vault log tail,
    a Slack response dump) belong in the log file, not on an operator's terminal.
    """
    message = str(exc).strip().splitlines()[0].strip() if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    text = scrub(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RedactingFormatter(logging.Formatter):
    """A formatter whose output (message, arguments and traceback alike) passes `scrub`."""

    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))
