"""What every section of `config.toml` shares: strictness, and the error a user has to fix.

Every section forbids unknown keys and is frozen, so a typo stops startup with a message that
names the key, and nothing changes a loaded config behind the gateway's back.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")
_HTTP_URL = re.compile(r"^https?://[^/\s]+")


class ConfigError(Exception):
    """A configuration problem a user has to fix; the message names the key."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def http_url(value: str, example: str) -> str:
    """`value` without trailing slashes, if it is an http(s) URL with a host; else ValueError."""
    if not _HTTP_URL.match(value):
        raise ValueError(f"must be an http:// or https:// URL, e.g. {example}")
    return value.rstrip("/")
