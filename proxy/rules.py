"""Injection rules: which request gets which credential, and how. Pure functions only.

A rule matches on
  host     exact `api.example.com`, or `*.example.com` where `*` is exactly ONE label
           (`a.example.com` matches; `example.com` and `a.b.example.com` do not). A pattern
           without a port matches any port; `host:port` only that port.
  path     exact `/a/b`; prefix `/a/*` (matches `/a`, `/a/` and everything below `/a/`, never
           `/ab`); `*` alone as a segment matches exactly one non-empty segment
           (`/repos/*/pulls`). `/*` matches every path. The query string is never matched.
  methods  optional list (`GET`, `POST` …); empty means any method.

Approval: `approve = true` on a rule (`clawgate vault add … --approve`) makes the vault hold
every request the rule applies to until the owner approves it in the main chat; the
credential is added only then (proxy/holds.py; invariant 14). `[[vault.policy]]` entries in
config.toml (core/http_approval.py) name such requests without a credential and may narrow
them with a body condition. An approval rule does not change which rule is most specific.

Actions (what `plan()` returns as an `Edit`; the caller applies it to the real request):
  set_header      header = format(value), overwriting what the client sent
  replace_header  same, but only if the client sent that header
  remove_header   drop the header (no value involved)
  set_query       query parameter `param` = format(value)
  path_template   `format` is a path prefix such as `/bot{value}`: a client path starting with
                  the placeholder form (`/botplaceholder`) has it replaced by the real value

Specificity (the most specific matching rule wins), compared in this order:
  1. exact host over `*.` wildcard host
  2. host pattern with a port over one without
  3. more literal (non-`*`) path segments
  4. exact path over prefix `/…/*`
  5. rule with methods over rule without
Remaining ties go to the secret whose name sorts first, then to the rule listed first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

PLACEHOLDER = "placeholder"
ACTIONS = ("set_header", "replace_header", "remove_header", "set_query", "path_template")
_HEADER_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_METHOD_RE = re.compile(r"^[A-Z]{1,20}$")
_PARAM_RE = re.compile(r"^[A-Za-z0-9_.\-\[\]]{1,128}$")
_LABEL_RE = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")

# name -> (action, header, format, default host)
PRESETS: dict[str, tuple[str, str | None, str, str | None]] = {
    "anthropic": ("set_header", "x-api-key", "{value}", "api.anthropic.com"),
    "anthropic-oauth": ("set_header", "Authorization", "Bearer {value}", "api.anthropic.com"),
    "openai": ("set_header", "Authorization", "Bearer {value}", "api.openai.com"),
    "github": ("set_header", "Authorization", "token {value}", "api.github.com"),
    "generic": ("set_header", "Authorization", "Bearer {value}", None),
}


class RuleError(ValueError):
    """An invalid rule; the message names the field (never contains a secret value)."""


@dataclass(frozen=True)
class Rule:
    host: str
    path: str = "/*"
    methods: tuple[str, ...] = ()
    action: str = "set_header"
    header: str | None = "Authorization"
    format: str = "Bearer {value}"
    param: str | None = None
    approve: bool = False  # hold for the owner's approval before the credential is added

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "host": self.host,
            "path": self.path,
            "action": self.action,
            "format": self.format,
        }
        if self.methods:
            d["methods"] = list(self.methods)
        if self.header is not None:
            d["header"] = self.header
        if self.param is not None:
            d["param"] = self.param
        if self.approve:
            d["approve"] = True
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Rule:
        return make_rule(
            host=str(d["host"]),
            path=str(d.get("path", "/*")),
            methods=[str(m) for m in d.get("methods", [])],
            action=str(d.get("action", "set_header")),
            header=d.get("header"),
            fmt=str(d.get("format", "{value}")),
            param=d.get("param"),
            approve=d.get("approve", False),
        )

    def describe(self) -> str:
        methods = ",".join(self.methods) or "any"
        if self.action in ("set_header", "replace_header"):
            how = f"{self.action} {self.header}: {self.format}"
        elif self.action == "remove_header":
            how = f"remove_header {self.header}"
        elif self.action == "set_query":
            how = f"set_query {self.param}={self.format}"
        else:
            how = f"path_template {self.format}"
        approve = " (owner approves)" if self.approve else ""
        return f"{self.host}{self.path if self.path != '/*' else '/*'} [{methods}] {how}{approve}"


@dataclass(frozen=True)
class Edit:
    """What to change in a request. Empty when the rule does not apply."""

    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = ()
    set_query: dict[str, str] = field(default_factory=dict)
    path: str | None = None

    @property
    def empty(self) -> bool:
        return not (self.set_headers or self.remove_headers or self.set_query or self.path is not None)


# --- validation -------------------------------------------------------------------------------


def normalize_host_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern or pattern != pattern.strip():
        raise RuleError(f"invalid host pattern {pattern!r}")
    p = pattern.lower()
    if p.startswith("["):
        end = p.find("]")
        if end < 0:
            raise RuleError(f"invalid host pattern {pattern!r}: unterminated IPv6 literal")
        name, rest = p[: end + 1], p[end + 1 :]
        port = rest[1:] if rest.startswith(":") else None
        if rest and port is None:
            raise RuleError(f"invalid host pattern {pattern!r}")
    else:
        name, sep, port_s = p.partition(":")
        port = port_s if sep else None
        name = name[:-1] if name.endswith(".") else name
        labels = name.split(".")
        if labels[0] == "*":
            labels = labels[1:]
            if len(labels) < 2:
                raise RuleError(f"invalid host pattern {pattern!r}: `*.` needs a domain like *.example.com")
        if not labels or not all(_LABEL_RE.fullmatch(lbl) for lbl in labels):
            raise RuleError(
                f"invalid host pattern {pattern!r}: use a hostname, optionally starting with `*.`"
            )
    if port is not None:
        # ASCII digits only: str.isdigit() also accepts "²" (int() then raises ValueError) and
        # "４４３" (which int() reads as 443, so one port would have two spellings).
        if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
            raise RuleError(f"invalid host pattern {pattern!r}: port must be 1-65535")
        return f"{name}:{int(port)}"
    return name


def validate_path_pattern(path: str) -> str:
    if not isinstance(path, str) or not path.startswith("/") or any(c in path for c in "?# \r\n\0"):
        raise RuleError(f"invalid path pattern {path!r}: must start with / and have no query or spaces")
    segs = path.split("/")[1:]
    for i, seg in enumerate(segs):
        if "*" in seg and seg != "*":
            raise RuleError(f"invalid path pattern {path!r}: `*` must be a whole segment")
        if seg == "" and i != len(segs) - 1:
            raise RuleError(f"invalid path pattern {path!r}: empty segment")
    return path


def make_rule(
    host: str,
    path: str = "/*",
    methods: Iterable[str] = (),
    action: str = "set_header",
    header: str | None = None,
    fmt: str | None = None,
    param: str | None = None,
    approve: object = False,
) -> Rule:
    """Validate and build a rule; raise RuleError naming the bad field."""
    if not isinstance(approve, bool):
        raise RuleError(f"invalid approve {approve!r}: must be true or false")
    host = normalize_host_pattern(host)
    path = validate_path_pattern(path)
    ms = tuple(sorted({m.upper() for m in methods}))
    for m in ms:
        if not _METHOD_RE.fullmatch(m):
            raise RuleError(f"invalid method {m!r}")
    if action not in ACTIONS:
        raise RuleError(f"invalid action {action!r}: use one of {', '.join(ACTIONS)}")
    if action in ("set_header", "replace_header", "remove_header"):
        header = header or "Authorization"
        if not _HEADER_RE.fullmatch(header):
            raise RuleError(f"invalid header name {header!r}: must be an HTTP token like x-api-key")
    else:
        header = None
    if action == "set_query":
        if not param or not _PARAM_RE.fullmatch(param):
            raise RuleError(f"invalid query parameter {param!r}")
    else:
        param = None
    if fmt is None:
        fmt = {"set_header": "Bearer {value}", "replace_header": "Bearer {value}"}.get(action, "{value}")
    if action == "remove_header":
        fmt = ""
    else:
        if fmt.count("{value}") != 1:
            raise RuleError("invalid format: it must contain {value} exactly once, e.g. 'Bearer {value}'")
        rest = fmt.replace("{value}", "")
        if "{" in rest or "}" in rest or any(c in rest for c in "\r\n\0"):
            raise RuleError("invalid format: only {value} may appear in braces; no control characters")
        if action == "path_template" and (not fmt.startswith("/") or "?" in fmt or "#" in fmt):
            raise RuleError("invalid path template: it must start with / like /bot{value}")
    return Rule(host, path, ms, action, header, fmt, param, approve)


def preset_rule(preset: str, host: str | None = None, path: str = "/*", methods: Iterable[str] = ()) -> Rule:
    try:
        action, header, fmt, default_host = PRESETS[preset]
    except KeyError:
        raise RuleError(f"unknown preset {preset!r}: use one of {', '.join(PRESETS)}") from None
    h = host or default_host
    if not h:
        raise RuleError(f"preset {preset!r} needs --host")
    return make_rule(h, path, methods, action, header, fmt)


# --- matching ---------------------------------------------------------------------------------


def _split_host(hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        name, rest = hostport[: end + 1], hostport[end + 1 :]
        return name, int(rest[1:]) if rest.startswith(":") else None
    name, sep, port = hostport.rpartition(":")
    if sep and port.isdigit() and ":" not in name:
        return name, int(port)
    return hostport, None


def host_matches(pattern: str, host: str, port: int | None = None) -> bool:
    """`host` is the request host (lowercase, no port; IPv6 without brackets is accepted)."""
    pname, pport = _split_host(pattern)
    if pport is not None and pport != port:
        return False
    host = host.lower().rstrip(".")
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    if pname.startswith("*."):
        suffix = pname[1:]  # ".example.com"
        if not host.endswith(suffix):
            return False
        label = host[: -len(suffix)]
        return bool(label) and "." not in label
    return pname == host


def path_matches(pattern: str, path: str) -> bool:
    path = path.split("?", 1)[0].split("#", 1)[0] or "/"
    if pattern == "/*":
        return True
    psegs = pattern.split("/")[1:]
    segs = path.split("/")[1:]
    prefix = psegs[-1] == "*" and len(psegs) >= 1 and pattern.endswith("/*")
    if prefix:
        head = psegs[:-1]
        if len(segs) < len(head):
            return False
        if len(segs) == len(head) + 1 and segs[-1] == "":
            segs = segs[:-1]  # "/a/" counts as "/a"
        return all(p == "*" and s != "" or p == s for p, s in zip(head, segs[: len(head)], strict=False))
    if len(psegs) != len(segs):
        return False
    return all(p == "*" and s != "" or p == s for p, s in zip(psegs, segs, strict=True))


def rule_matches(rule: Rule, method: str, host: str, port: int | None, path: str) -> bool:
    if rule.methods and method.upper() not in rule.methods:
        return False
    return host_matches(rule.host, host, port) and path_matches(rule.path, path)


def specificity(rule: Rule) -> tuple[int, int, int, int, int]:
    pname, pport = _split_host(rule.host)
    segs = rule.path.split("/")[1:]
    is_prefix = rule.path.endswith("/*")
    literal = sum(1 for s in (segs[:-1] if is_prefix else segs) if s != "*")
    return (
        0 if pname.startswith("*.") else 1,
        1 if pport is not None else 0,
        literal,
        0 if is_prefix else 1,
        1 if rule.methods else 0,
    )


def select(
    candidates: Sequence[tuple[str, Sequence[Rule]]], method: str, host: str, port: int | None, path: str
) -> tuple[str, Rule] | None:
    """The (secret name, rule) that applies to this request, or None. See module doc for ties."""
    best: tuple[tuple[int, ...], str, Rule] | None = None
    for name, rules in sorted(candidates, key=lambda c: c[0]):
        for rule in rules:
            if not rule_matches(rule, method, host, port, path):
                continue
            spec = specificity(rule)
            if best is None or spec > best[0]:  # strictly: earlier name / rule wins ties
                best = (spec, name, rule)
    return None if best is None else (best[1], best[2])


# --- actions ----------------------------------------------------------------------------------


def plan(rule: Rule, value: str, path: str, headers: Mapping[str, str]) -> Edit:
    """What applying `rule` with `value` changes. `headers` must be case-insensitive."""
    if rule.action == "set_header":
        return Edit(set_headers={rule.header or "": rule.format.format(value=value)})
    if rule.action == "replace_header":
        if rule.header in headers:
            return Edit(set_headers={rule.header or "": rule.format.format(value=value)})
        return Edit()
    if rule.action == "remove_header":
        return Edit(remove_headers=(rule.header or "",)) if rule.header in headers else Edit()
    if rule.action == "set_query":
        return Edit(set_query={rule.param or "": rule.format.format(value=value)})
    if rule.action == "path_template":
        before, _, after = rule.format.partition("{value}")
        placeholder = before + PLACEHOLDER + after
        bare, q, query = path.partition("?")
        if (
            bare == placeholder
            or bare.startswith(placeholder + "/")
            or (placeholder.endswith("/") and bare.startswith(placeholder))
        ):
            return Edit(path=before + value + after + bare[len(placeholder) :] + q + query)
        return Edit()
    raise RuleError(f"unknown action {rule.action!r}")


class ScopedSecret(Protocol):
    """What :func:`model_key_usable` reads of a secret: metadata only (proxy.secrets.SecretInfo)."""

    @property
    def effective_rules(self) -> tuple[Rule, ...]: ...

    def allows(self, group: str | None) -> bool: ...


def model_key_usable(secrets: Iterable[ScopedSecret], group: str, base_url: str) -> bool:
    """True if a secret `group` may use has a rule for the model host of `base_url`.

    `secrets` are SecretInfo-like (`allows(group)`, `effective_rules`); metadata only.
    Decides whether the container gets the `…_API_KEY=placeholder` variable at all.
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(base_url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return False
    return any(
        info.allows(group) and any(host_matches(r.host, host, port) for r in info.effective_rules)
        for info in secrets
    )
