"""Per-group egress policy: host allowlist, rate limits, size limits, scoped injection.

Allowlist: `[vault.egress]` maps a group folder to host patterns (same syntax as rule hosts,
plus `"*"` for everything). A group without an entry uses `default`. Built-in defaults:
`main = ["*"]`, `default = []`. The model host (from `[model] base_url`) is always allowed.

Rate limits: sliding 60-second windows, one per group and one per (group, upstream host),
so one busy group cannot use up another group's budget. 0 disables a limit.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from mitmproxy import http

from proxy.holds import Demand, PolicyEntry, demand_for, policy_entries
from proxy.rules import RuleError, host_matches, plan, select
from proxy.secrets import SecretInfo

log = logging.getLogger("clawgate.vault")

WINDOW_S = 60.0
STREAM_ABOVE = 1 << 20  # known-length responses larger than this are streamed, not buffered


def model_host_of(base_url: str) -> tuple[str, int] | None:
    try:
        parts = urlsplit(base_url)
        host = (parts.hostname or "").lower()
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    return (host, port) if host else None


@dataclass
class Policy:
    egress: Mapping[str, Sequence[str]] = field(default_factory=dict)
    model_host: tuple[str, int] | None = None
    per_group_per_minute: int = 0
    per_host_per_minute: int = 0
    max_request_bytes: int = 32 * 1024 * 1024
    max_response_bytes: int = 0  # 0 = unlimited (responses are streamed, so memory stays bounded)
    max_connections_per_group: int = 64  # on vault.sock (proxy/relay.py)
    idle_timeout_s: float = 300.0
    unscoped: str = "forward"  # or "refuse"
    approval_entries: tuple[PolicyEntry, ...] = ()  # [[vault.policy]] (proxy/holds.py)
    approval_timeout_s: float = 120.0
    max_held_per_group: int = 4
    max_prompts_per_minute: int = 10

    def patterns_for(self, group: str) -> Sequence[str]:
        if group in self.egress:
            return self.egress[group]
        if group == "main" and "main" not in self.egress:
            return ["*"]
        return self.egress.get("default", [])

    def egress_allowed(self, group: str, host: str, port: int) -> bool:
        host = host.lower().rstrip(".")
        if self.model_host is not None and self.model_host == (host, port):
            return True
        return any(p == "*" or host_matches(p, host, port) for p in self.patterns_for(group))


def egress_refusal_body(group: str, host: str, port: int) -> str:
    key = group if group.replace("-", "_").replace(".", "_").isidentifier() else f'"{group}"'
    return (
        f"clawgate vault: group {group!r} may not reach {host}:{port}.\n"
        "Each group may only reach the hosts on its egress allowlist (non-main groups: only the\n"
        "model host by default). To allow it, add the host to config.toml and restart clawgate:\n\n"
        "[vault.egress]\n"
        f'{key} = ["{host}"]            # or "*.{".".join(host.split(".")[-2:])}" for a whole domain\n'
    )


def unscoped_refusal_body(group: str, secret: str) -> str:
    return (
        f"clawgate vault: group {group!r} is not allowed to use the credential {secret!r} for this\n"
        'request, and [vault] unscoped = "refuse" is set. Allow the group with\n'
        f'`clawgate vault scope {secret} --groups main,{group}`, or set unscoped = "forward"\n'
        "to forward such requests without the credential.\n"
    )


class SlidingWindow:
    """At most `limit` events per `window` seconds per key."""

    def __init__(
        self, limit: int, window: float = WINDOW_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._events: dict[object, collections.deque[float]] = {}

    def retry_after(self, key: object) -> int | None:
        """Record an event; None if allowed, else the seconds to wait (nothing recorded)."""
        if self.limit <= 0:
            return None
        now = self.clock()
        q = self._events.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        if len(q) >= self.limit:
            return max(1, math.ceil(q[0] + self.window - now))
        q.append(now)
        return None


class RateLimiter:
    def __init__(self, per_group: int, per_host: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.groups = SlidingWindow(per_group, clock=clock)
        self.hosts = SlidingWindow(per_host, clock=clock)

    def check(self, group: str, host: str) -> tuple[str, int] | None:
        """None if allowed; else (which limit, Retry-After seconds)."""
        wait = self.groups.retry_after(group)
        if wait is not None:
            return "per_group_per_minute", wait
        wait = self.hosts.retry_after((group, host.lower()))
        if wait is not None:
            return "per_host_per_minute", wait
        return None


class SizeCap:
    """A mitmproxy `response.stream` callable that passes chunks through and counts them.

    Past `limit` bytes it drops the rest (the client never gets more than the cap) and
    marks the flow in `metadata["clawgate.refusal"]`. Raising here would crash mitmproxy's
    connection handler without closing the client socket, so the body is cut instead.
    """

    def __init__(self, limit: int, metadata: dict[str, Any] | None = None) -> None:
        self.limit = limit
        self.seen = 0
        self.metadata = metadata if metadata is not None else {}

    def __call__(self, chunk: bytes) -> bytes:
        before = self.seen
        self.seen += len(chunk)
        self.metadata["clawgate.response_bytes"] = min(self.seen, self.limit or self.seen)
        if self.limit and self.seen > self.limit:
            if before <= self.limit:
                log.warning("vault: response exceeded max_response_bytes=%s; truncated", self.limit)
                self.metadata["clawgate.refusal"] = f"response truncated at max_response_bytes = {self.limit}"
            return chunk[: max(0, self.limit - before)]
        return chunk


class ResponseTooLarge(Exception):
    pass


# --- flow-level enforcement (called from small hooks in proxy/addon.py) ------------------------


if TYPE_CHECKING:
    from core.config import Config

POLICY_FILE = "policy-config.json"


def write_policy_config(config: Config, state_dir: Path) -> Path:
    """What the vault needs from the gateway's *effective* config (model + vault), mode 0600.

    The gateway hands it over explicitly, so a config built in memory (tests, embedding)
    governs the vault exactly as a config.toml would; nothing secret is in these sections.
    """
    path = Path(state_dir) / POLICY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    body = json.dumps({"model": config.model.model_dump(), "vault": config.vault.model_dump()})
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(body)
    os.replace(tmp, path)
    return path


def load_policy(config_dir: Path, policy_config: Path | None = None) -> Policy:
    """The policy from the gateway's handed-over config, else from `config.toml`; errors propagate."""
    from core.config import Config, ConfigError, load

    if policy_config is not None and Path(policy_config).exists():
        cfg = Config.model_validate_json(Path(policy_config).read_text())
    else:
        cfg = load(Path(config_dir))
    v = cfg.vault
    try:
        entries = policy_entries(v.policy)
    except RuleError as e:
        raise ConfigError(f"config.toml: {e}") from None
    return Policy(
        egress={k: list(p) for k, p in v.egress.items()},
        model_host=model_host_of(cfg.model.base_url),
        per_group_per_minute=v.rate_limit.per_group_per_minute,
        per_host_per_minute=v.rate_limit.per_host_per_minute,
        max_request_bytes=v.max_request_bytes,
        max_response_bytes=v.max_response_bytes,
        max_connections_per_group=v.max_connections_per_group,
        idle_timeout_s=v.idle_timeout_s,
        unscoped=v.unscoped,
        approval_entries=entries,
        approval_timeout_s=v.hold_timeout_s,
        max_held_per_group=v.approval.max_held_per_group,
        max_prompts_per_minute=v.approval.max_prompts_per_minute,
    )


def _text(status: int, body: str, extra: dict[str, str] | None = None) -> http.Response:
    return http.Response.make(status, body, {"Content-Type": "text/plain; charset=utf-8", **(extra or {})})


class Enforcer:
    """Applies a Policy and the injection rules to mitmproxy flows."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.policy = policy or Policy()
        self.limiter = RateLimiter(self.policy.per_group_per_minute, self.policy.per_host_per_minute)
        self._candidates: list[tuple[SecretInfo, str]] = []
        self.used: dict[str, str] = {}  # secret name -> last-used ISO time, flushed in batches
        # Told (group, secret, host, refused) when a group's request matched a secret outside its
        # scope; proxy/__main__.py passes it on to the gateway, which tells the main chat once.
        self.on_unscoped: Callable[[str, str, str, bool], None] | None = None

    def set_policy(self, policy: Policy) -> None:
        self.policy = policy
        self.limiter = RateLimiter(policy.per_group_per_minute, policy.per_host_per_minute)

    def set_secrets(self, secrets: Sequence[tuple[SecretInfo, str]]) -> None:
        self._candidates = list(secrets)

    def take_usage(self) -> dict[str, str]:
        used, self.used = self.used, {}
        return used

    # -- checks; each returns a refusal Response or None --

    def check_egress(self, group: str, host: str, port: int) -> http.Response | None:
        if self.policy.egress_allowed(group, host, port):
            return None
        log.warning("vault[%s]: egress to %s:%s not on the allowlist", group, host, port)
        return _text(403, egress_refusal_body(group, host, port))

    def check_rate(self, group: str, host: str) -> http.Response | None:
        hit = self.limiter.check(group, host)
        if hit is None:
            return None
        which, wait = hit
        log.warning("vault[%s]: rate limited (%s) for %s", group, which, host)
        body = (
            f"clawgate vault: rate limit reached for group {group!r} ({which} in [vault.rate_limit]);"
            f" retry after {wait}s.\n"
        )
        return _text(429, body, {"Retry-After": str(wait)})

    def check_request_size(self, flow: http.HTTPFlow, have_body: bool) -> http.Response | None:
        limit = self.policy.max_request_bytes
        if not limit:
            return None
        if have_body:
            size = len(flow.request.raw_content or b"")
        else:
            try:
                size = int(flow.request.headers.get("content-length", "0"))
            except ValueError:
                size = 0
        if size <= limit:
            return None
        return _text(
            413,
            f"clawgate vault: request body of {size} bytes exceeds [vault] max_request_bytes = {limit}.\n",
        )

    def stream_response(self, flow: http.HTTPFlow) -> None:
        """Decide streaming and enforce max_response_bytes at response-headers time.

        Streamed (never buffered): SSE, bodies of unknown length, and bodies over
        STREAM_ABOVE bytes; the cap callable counts the bytes into
        `flow.metadata["clawgate.response_bytes"]`. Small known-length bodies stay buffered
        so later addons (audit) can see them. A known length over the cap aborts at once.
        """
        resp = flow.response
        assert resp is not None
        limit = self.policy.max_response_bytes
        try:
            length: int | None = int(resp.headers["content-length"])
        except (KeyError, ValueError):
            length = None
        if limit and length is not None and length > limit:
            log.warning(
                "vault: response of %s bytes from %s exceeds the cap; aborting", length, flow.request.host
            )
            flow.metadata["clawgate.refusal"] = f"response exceeds max_response_bytes = {limit}"
            flow.kill()
            return
        sse = resp.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"
        if sse or length is None or length > STREAM_ABOVE:
            resp.stream = SizeCap(limit, flow.metadata)

    # -- approval (proxy/holds.py) --

    def approval_demand(self, flow: http.HTTPFlow, group: str) -> Demand | None:
        """The owner's approval this request needs before its credential is added, if any."""
        req = flow.request
        host, port = req.host.lower().rstrip("."), req.port
        allowed = [(i.name, i.effective_rules) for i, _ in self._candidates if i.allows(group)]
        hit = select(allowed, req.method, host, port, req.path)
        return demand_for(hit, self.policy.approval_entries, group, req.method, host, port, req.path)

    def secret_values(self) -> list[str]:
        return [v for _, v in self._candidates]

    # -- injection --

    def inject(self, flow: http.HTTPFlow, group: str | None, tls_ok: bool) -> http.Response | None:
        """Apply the most specific rule the group may use; a refusal if config says so."""
        req = flow.request
        host, port = req.host.lower().rstrip("."), req.port
        allowed = [(i.name, i.effective_rules) for i, _ in self._candidates if i.allows(group)]
        hit = select(allowed, req.method, host, port, req.path)
        if hit is None:
            every = [(i.name, i.effective_rules) for i, _ in self._candidates]
            denied = select(every, req.method, host, port, req.path)
            if denied is None:
                return None
            refused = self.policy.unscoped == "refuse"
            if self.on_unscoped is not None and group is not None:
                self.on_unscoped(group, denied[0], host, refused)
            if refused:
                log.warning("vault[%s]: refused: not allowed to use %s", group, denied[0])
                return _text(403, unscoped_refusal_body(group or "?", denied[0]))
            log.info("vault[%s]: not allowed to use %s; forwarding without it", group, denied[0])
            return None
        name, rule = hit
        if not tls_ok:
            log.warning("vault: not injecting %s into plain-HTTP request to %s (TLS required)", name, host)
            return None
        value = next(v for i, v in self._candidates if i.name == name)
        edit = plan(rule, value, req.path, req.headers)
        for h in edit.remove_headers:
            del req.headers[h]
        for h, v in edit.set_headers.items():
            req.headers[h] = v
        if edit.set_query:
            query = req.query
            for k, v in edit.set_query.items():
                query[k] = v
        if edit.path is not None:
            req.path = edit.path
        if not edit.empty:
            flow.metadata["clawgate.secret"] = name  # for the audit log (proxy/audit.py)
            flow.metadata["clawgate.rule"] = rule.describe()
            self.used[name] = datetime.now(UTC).isoformat(timespec="seconds")
            log.info("vault[%s]: applied %s (%s) for %s", group, name, rule.action, host)
        return None
