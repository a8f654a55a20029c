"""The mount allowlist (`mount-allowlist.json` in the config dir): its format and its loading.

It lives in the config dir, which is never mounted into any container, so an agent cannot
widen its own view; it is read again at every sandbox start. Every problem — missing,
unreadable, not a regular file, world-writable, someone else's, too large, duplicate JSON keys,
bad JSON, an unknown or wrong-typed field — is an `AllowlistError` whose message says why and
how to fix it, and means no extra mounts at all: nothing crashes, nothing falls back to allowing.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from groups.mount_names import DEFAULT_BLOCKED_PATTERNS, is_path_pattern, skeleton

ALLOWLIST_FILE = "mount-allowlist.json"
MAX_ALLOWLIST_BYTES = 1 << 20
MAX_HOST_PATH = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class AllowedRoot(_Strict):
    path: str = Field(min_length=1, max_length=MAX_HOST_PATH)
    allow_read_write: bool = False
    description: str = Field("", max_length=1000)

    @field_validator("path")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("must not contain NUL")
        if not is_path_pattern(value):
            raise ValueError("must be an absolute path or start with ~ (e.g. ~/projects)")
        return value


class Allowlist(_Strict):
    allowed_roots: list[AllowedRoot] = Field(max_length=256)
    blocked_patterns: list[str] = Field(default_factory=list, max_length=1024)
    non_main_read_only: bool = True

    @field_validator("blocked_patterns")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for value in values:
            if "\0" in value or len(value) > MAX_HOST_PATH:
                raise ValueError(f"invalid pattern {value[:80]!r}")
            if is_path_pattern(value):
                continue
            if not skeleton(value) or "/" in value:
                raise ValueError(f"pattern {value!r} must be a non-empty name (no '/') or an absolute/~ path")
        return values

    def patterns(self) -> tuple[str, ...]:
        """The defaults merged with the allowlist's own patterns (defaults can never be removed)."""
        extra = [p for p in self.blocked_patterns if p not in DEFAULT_BLOCKED_PATTERNS]
        return DEFAULT_BLOCKED_PATTERNS + tuple(extra)


class AllowlistError(Exception):
    """The allowlist is missing or unusable; the message says why and how to fix it."""


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    seen: dict[str, object] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def load_allowlist(path: Path) -> Allowlist:
    """Read and validate the allowlist; every problem is an `AllowlistError` (never a crash)."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise AllowlistError(
            f"no mount allowlist at {path}: extra mounts are disabled "
            "(copy mount-allowlist.example.json there to enable them)"
        ) from None
    except OSError as exc:
        raise AllowlistError(f"cannot read the mount allowlist {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise AllowlistError(f"the mount allowlist {path} is not a regular file")
    if info.st_mode & 0o002:
        raise AllowlistError(f"the mount allowlist {path} is world-writable; run `chmod 600 {path}`")
    if info.st_uid not in (0, os.getuid()):
        raise AllowlistError(f"the mount allowlist {path} is owned by uid {info.st_uid}, not by this user")
    if info.st_size > MAX_ALLOWLIST_BYTES:
        raise AllowlistError(f"the mount allowlist {path} is larger than {MAX_ALLOWLIST_BYTES} bytes")
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except OSError as exc:
        raise AllowlistError(f"cannot read the mount allowlist {path}: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise AllowlistError(f"the mount allowlist {path} is not valid JSON: {exc}") from None
    try:
        return Allowlist.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or '(top level)'}: {item['msg']}"
            for item in exc.errors()
        )
        raise AllowlistError(f"invalid mount allowlist {path}: {problems}") from None
