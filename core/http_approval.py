"""Owner approval of chosen HTTP requests: the settings, and the body condition they may carry.

`[vault.approval]` says how long the vault holds a request for the owner's decision and how
long the "Allow for N minutes" button lets the same kind of request through. `[[vault.policy]]`
entries name requests (host, path, methods, groups, optionally a body condition) that need
the owner's approval even when no credential is involved; a secret's injection rule can
require it too (`clawgate vault add … --approve`, proxy/rules.py). The vault holds such a
request (proxy/holds.py) and the gateway asks in the main chat (gateway/http_approvals.py).

A body condition narrows an entry to some bodies, so an owner can approve a transfer of
money but not every read. It is deliberately small and bounded, because the body is the
hostile sandbox's input:

- `contains = "text"` without `pointer`: the raw body (bytes, UTF-8) contains the text.
- `pointer = "/a/0/b"` (RFC 6901) with `equals = <string|number|bool>`: the body is JSON and
  the value there equals it (type-strict: `1` is not `"1"`, `true` is not `1`).
- `pointer` with `contains = "text"`: the value there is a string containing the text, or an
  array with an element equal to it.

Only the first `MAX_EVAL_BYTES` of a body are looked at and JSON deeper than `MAX_DEPTH` is
not parsed. When the condition cannot be evaluated (a larger body, a body that is not JSON
where a pointer is asked for, nesting too deep) it counts as MET: the request is held and the
owner decides, never silently forwarded.
"""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from core.config_base import Section
from core.json_nesting import nesting_exceeds

MAX_EVAL_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_POINTER = 256
MAX_NEEDLE = 256
_METHOD = re.compile(r"^[A-Za-z]{1,20}$")
_GROUP = re.compile(r"^(\*|[A-Za-z0-9_.-]{1,64})$")

Scalar = str | int | float | bool


class BodyCondition(Section):
    """Which bodies of a matching request need approval (see the module doc)."""

    pointer: str | None = Field(None, description="RFC 6901 JSON pointer, e.g. /amount or /items/0/to")
    equals: Scalar | None = Field(None, description="the value at `pointer` equals this")
    contains: str | None = Field(None, description="substring of the body, or of the value at `pointer`")

    @field_validator("pointer")
    @classmethod
    def _pointer(cls, value: str | None) -> str | None:
        if value is not None and (
            len(value) > MAX_POINTER or (value and not value.startswith("/")) or "\0" in value
        ):
            raise ValueError(f"{value!r} is not a JSON pointer like /amount (at most {MAX_POINTER} chars)")
        return value

    @field_validator("contains")
    @classmethod
    def _needle(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value) <= MAX_NEEDLE:
            raise ValueError(f"must be 1-{MAX_NEEDLE} characters")
        return value

    @model_validator(mode="after")
    def _one_test(self) -> BodyCondition:
        if (self.equals is None) == (self.contains is None):
            raise ValueError("give exactly one of equals or contains")
        if self.equals is not None and self.pointer is None:
            raise ValueError("equals needs a pointer (the JSON value to compare)")
        return self

    def met(self, body: bytes) -> bool:
        """True if the body satisfies the condition OR cannot be evaluated (then the owner decides)."""
        if len(body) > MAX_EVAL_BYTES:
            return True
        if self.pointer is None:
            assert self.contains is not None
            return self.contains.encode() in body
        found, value = _resolve(body, self.pointer)
        if not found:
            return value is _UNKNOWN  # absent: not met; unparsable: met
        if self.equals is not None:
            return _same(value, self.equals)
        if isinstance(value, str):
            return self.contains is not None and self.contains in value
        if isinstance(value, list):
            return any(_same(item, self.contains) for item in value)
        return False

    def describe(self) -> str:
        where = f"body{self.pointer}" if self.pointer is not None else "body"
        if self.equals is not None:
            return f"{where} == {json.dumps(self.equals)}"
        return f"{where} contains {json.dumps(self.contains)}"


_UNKNOWN = object()


def _same(a: object, b: object) -> bool:
    """JSON equality without Python's `True == 1`."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    return type(a) is type(b) and a == b


def _resolve(body: bytes, pointer: str) -> tuple[bool, object]:
    """(True, value) at `pointer`; (False, None) if absent; (False, _UNKNOWN) if unparsable."""
    try:
        if nesting_exceeds(body, MAX_DEPTH):  # before json.loads, whose recursion it could exhaust
            return False, _UNKNOWN
        doc = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False, _UNKNOWN
    if pointer == "":
        return True, doc
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, dict) and token in doc:
            doc = doc[token]
        elif isinstance(doc, list) and token.isascii() and token.isdigit() and int(token) < len(doc):
            if len(token) > 1 and token.startswith("0"):
                return False, None
            doc = doc[int(token)]
        else:
            return False, None
    return True, doc


class VaultPolicyEntry(Section):
    """One `[[vault.policy]]` entry: requests (host, path, methods, groups, body) the owner approves.

    Host and path use the injection rules' syntax (proxy/rules.py), checked when the vault
    loads its policy.
    """

    host: str = Field(description="api.example.com, *.example.com or host:port")
    path: str = Field("/*", description="/a/b, /a/*, /repos/*/pulls")
    methods: list[str] = Field(default_factory=list, description="empty: any method")
    groups: list[str] = Field(default_factory=list, description='group folders; empty or "*": every group')
    approve: bool = Field(False, description="hold matching requests until the owner approves")
    body: BodyCondition | None = None

    @field_validator("methods")
    @classmethod
    def _methods(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _METHOD.fullmatch(value):
                raise ValueError(f"{value!r} is not an HTTP method like POST")
        return sorted({v.upper() for v in values})

    @field_validator("groups")
    @classmethod
    def _groups(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _GROUP.fullmatch(value):
                raise ValueError(f"{value!r} is not a group folder name")
        return values


class VaultApprovalConfig(Section):
    """`[vault.approval]`: holding requests for the owner's decision (proxy/holds.py)."""

    timeout_s: float = Field(
        120, gt=0, le=3600, description="how long a held request waits for the owner; then 403"
    )
    allow_for_minutes: float = Field(
        10, ge=0, le=1440, description='the "Allow for N minutes" button; 0 = no such button'
    )
    max_held_per_group: int = Field(
        4, ge=1, le=100, description="requests of one group held at once; more are answered 429"
    )
    max_prompts_per_minute: int = Field(
        10, ge=1, le=600, description="prompts one group may cause per minute; more are answered 429"
    )


Decision = Literal["approved", "denied", "expired"]
