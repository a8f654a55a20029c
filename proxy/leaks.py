"""Leak detection: is a credential about to leave, in a request or in an agent's message?

One scanner, two users:

- The vault (`LeakAddon`, in the vault process) scans what a container SENDS — URL (path and
  query, raw and URL-decoded), header values and the request body (bytes, scanned lossily:
  a regex over raw bytes is the latin-1 view, plus the URL-decoded form) — for every stored
  secret value and for well-known credential formats. It runs before the vault injects its
  own credentials (headers first, in `requestheaders`, before `VaultAddon`; the body in
  `request`, where only the body is scanned), so injection can never trip it. A hit is
  answered 403 with a body naming the pattern, and the gateway is told once per
  (group, pattern) so it can notify the main chat.
- The gateway scans every agent message before it enters the outbox and redacts hits
  (`redact`). The gateway never decrypts secrets, so it only knows the *formats*; matching
  stored values is the vault's job (a value can only reach an agent through the vault's
  egress, where it is blocked).

Hits are reported by pattern NAME only; a value is never returned, logged or echoed.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote_to_bytes

from proxy.notices import GatewayNotices

if TYPE_CHECKING:
    from mitmproxy import connection, http

log = logging.getLogger("clawgate.vault.leaks")

MIN_STORED_VALUE = 8  # shorter stored values would match innocent traffic
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58)}
_LB = r"(?<![A-Za-z0-9_\-])"  # not in the middle of a longer token

# (name, regex source). Order matters: the first alternative matching at a position wins,
# so `sk-ant-` is named Anthropic before the generic OpenAI-style `sk-`.
FORMATS: list[tuple[str, str]] = [
    ("NEAR ed25519 secret key", r"ed25519:[1-9A-HJ-NP-Za-km-z]{80,90}(?![1-9A-HJ-NP-Za-km-z])"),
    ("Anthropic API key", _LB + r"sk-ant-[A-Za-z0-9_\-]{20,}"),
    ("OpenAI-style API key", _LB + r"sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("GitHub token", _LB + r"(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("Slack token", _LB + r"xox[baprse]-[A-Za-z0-9\-]{10,}"),
    ("AWS access key id", r"(?<![A-Z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])"),
    (
        "AWS secret access key",
        r"(?i:aws)[A-Za-z0-9_\-\"' ]{0,30}(?i:secret)[A-Za-z0-9_\-\"' ]{0,30}[:=]\s*[\"']?"
        r"[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])",
    ),
]

_GROUP_NAMES = [f"p{i}" for i in range(len(FORMATS))]
_NAME_OF = {g: name for g, (name, _) in zip(_GROUP_NAMES, FORMATS, strict=True)}
_COMBINED = "|".join(f"(?P<{g}>{src})" for g, (_, src) in zip(_GROUP_NAMES, FORMATS, strict=True))
_RE_BYTES = re.compile(_COMBINED.encode())
_RE_TEXT = re.compile(_COMBINED)
_NEAR = _NAME_OF["p0"]


def b58decode_len(s: str) -> int | None:
    """Length in bytes of the base58 string's value (None if not base58)."""
    n = 0
    for c in s:
        i = _B58_INDEX.get(c)
        if i is None:
            return None
        n = n * 58 + i
    zeros = len(s) - len(s.lstrip("1"))
    return zeros + (n.bit_length() + 7) // 8


def _confirm(group: str, match: str) -> bool:
    if _NAME_OF[group] == _NEAR:
        return b58decode_len(match.split(":", 1)[1]) == 64  # public keys are 32 bytes
    return True


def _first_format(text: str | bytes) -> str | None:
    matches: Iterator[re.Match[str]] | Iterator[re.Match[bytes]] = (
        _RE_TEXT.finditer(text) if isinstance(text, str) else _RE_BYTES.finditer(text)
    )
    for m in matches:
        group = m.lastgroup
        assert group is not None
        found = m.group(0)
        if _confirm(group, found if isinstance(found, str) else found.decode("ascii", "ignore")):
            return _NAME_OF[group]
    return None


def _decoded_forms(data: bytes) -> list[bytes]:
    forms = [data]
    if b"%" in data or b"+" in data:
        with contextlib.suppress(Exception):
            unq = unquote_to_bytes(data.replace(b"+", b" "))
            if unq != data:
                forms.append(unq)
    if b"\x00" in data:  # UTF-16 text inside a binary body
        forms.append(data.replace(b"\x00", b""))
    return forms


class LeakScanner:
    """Pure and fast: one combined regex pass plus a substring test per stored value."""

    def __init__(self, secrets: Iterable[tuple[str, str]] = ()) -> None:
        self._values: list[tuple[str, bytes]] = []
        self.set_secrets(secrets)

    @property
    def longest_value(self) -> int:
        """Length of the longest stored value (how much overlap a streaming scan needs)."""
        return max((len(v) for _, v in self._values), default=0)

    def set_secrets(self, secrets: Iterable[tuple[str, str]]) -> None:
        """`(name, value)` pairs of stored secrets; very short values are ignored."""
        values: list[tuple[str, bytes]] = []
        for name, value in secrets:
            if value and len(value) >= MIN_STORED_VALUE and value.strip().lower() != "placeholder":
                values.append((f"stored secret {name}", value.encode("utf-8")))
        self._values = values

    def scan_bytes(self, data: bytes) -> str | None:
        """The name of the first credential pattern found in `data`, or None."""
        if not data:
            return None
        for form in _decoded_forms(data):
            for name, value in self._values:
                if value in form:
                    return name
            found = _first_format(form)
            if found is not None:
                return found
        return None

    def scan_text(self, text: str) -> str | None:
        return self.scan_bytes(text.encode("utf-8", "surrogateescape"))

    def scan_request(
        self, url: str, headers: Iterable[tuple[str, str]] = (), body: bytes | None = None
    ) -> str | None:
        """URL (path + query) and header values first, then the body; returns a pattern name."""
        head = "\n".join([url, *(f"{k}: {v}" for k, v in headers)])
        return self.scan_text(head) or (self.scan_bytes(body) if body else None)


def redact(text: str) -> tuple[str, list[str]]:
    """Agent text with every known credential format replaced by `[redacted: <pattern>]`."""
    names: list[str] = []

    def sub(m: re.Match[str]) -> str:
        group = m.lastgroup
        assert group is not None
        if not _confirm(group, m.group(0)):
            return m.group(0)
        names.append(_NAME_OF[group])
        return f"[redacted: {_NAME_OF[group]}]"

    return _RE_TEXT.sub(sub, text), names


# -- the vault side: a mitmproxy addon ---------------------------------------------------------


def _refusal(pattern: str) -> str:
    return (
        f"clawgate vault: blocked: this request contained a credential ({pattern}).\n"
        "Requests must not carry secrets; the vault adds the real credentials itself.\n"
        "The owner has been notified.\n"
    )


@dataclass
class LeakEvent:
    group: str
    pattern: str


class LeakAddon:
    """Registered BEFORE `VaultAddon`, so it sees what the container sent, not what we inject."""

    def __init__(
        self, group_of: Callable[[connection.Client], str | None], gateway_socket: Path | None = None
    ) -> None:
        self.scanner = LeakScanner()
        self._group_of = group_of  # VaultAddon.group_of(client) -> group | None
        self.notices = GatewayNotices(gateway_socket)
        self.events: list[LeakEvent] = []

    def set_secrets(self, secrets: Iterable[tuple[object, str]]) -> None:
        self.scanner.set_secrets((getattr(info, "name", str(info)), value) for info, value in secrets)

    def _block(self, flow: http.HTTPFlow, pattern: str) -> None:
        from mitmproxy import http

        flow.response = http.Response.make(
            403, _refusal(pattern), {"Content-Type": "text/plain; charset=utf-8"}
        )
        self.report(flow, pattern)

    def report(self, flow: http.HTTPFlow, pattern: str) -> None:
        """Audit and tell the owner (once per group and pattern); the caller stops the request."""
        group = self._group_of(flow.client_conn) or "?"
        flow.metadata["clawgate.refusal"] = f"leak: {pattern}"
        log.warning("vault[%s]: blocked request to %s: contained %s", group, flow.request.host, pattern)
        self.events.append(LeakEvent(group, pattern))
        self.notices.once(("leak", group, pattern), {"op": "leak", "group": group, "pattern": pattern})

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        req = flow.request
        url = f"{req.host} {req.path}"  # the host too: `<secret>.attacker.example` is a leak
        found = self.scanner.scan_request(url, req.headers.items(multi=True))
        if found is not None:
            self._block(flow, found)

    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        body = flow.request.raw_content  # content-encoded bodies are scanned as sent
        if body:
            found = self.scanner.scan_bytes(body)
            if found is None and flow.request.headers.get("content-encoding"):
                with contextlib.suppress(Exception):
                    decoded = flow.request.get_content(strict=False)
                    found = self.scanner.scan_bytes(decoded) if decoded else None
            if found is not None:
                self._block(flow, found)
