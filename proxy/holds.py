"""Held requests: the vault keeps a request that needs the owner's approval until decided.

Which requests: those a secret rule with `approve = true` applies to, and those matching an
`approve = true` entry of `[[vault.policy]]` (core/http_approval.py; optionally only when a
body condition holds). `VaultAddon` (proxy/addon.py) defers the credential of such a request
in `requestheaders` and, once the whole body is in (after pinning, egress, rate, size and leak
checks), calls `Holder.decide` in the async `request` hook. Only that flow's hook waits;
mitmproxy runs every hook in a task of its own connection, so other flows keep flowing.

How the owner is asked: the vault opens a connection to the gateway's control socket,
sends one line `{"op": "http_approval", group, method, host, port, path, body, rule,
timeout_s}` and reads one line back when the owner has decided. The open connection IS
the waiter (gateway/approvals.py counts a decision only while someone waits), so:

- the gateway restarting drops the connection → the vault answers 403 at once, and the
  gateway's restart recovery marks the prompt expired;
- the client hanging up while held (over HTTP/2 also: resetting just that stream, which
  proxy/stream_watch.py sees) → the vault closes the connection → the gateway withdraws the
  prompt (edited to say so) → nothing is forwarded;
- no answer by `timeout_s` + a grace → 403 (the gateway expires the prompt at `timeout_s`).

Exactly once: one flow, one question, one answer; an "approved" answer lets this one flow
go on with its credential (invariant 14). "Allow for N minutes" (the gateway tells the
duration) is kept here, in memory, per (group, rule): it dies with the vault process — which
dies with the gateway — and a changed rule is a different key, so it survives nothing it
should not.

What crosses to the gateway is bounded and redacted: the path without query values, and
at most `SUMMARY_CHARS` of the body with every credential format and stored secret value
removed (proxy/leaks.py has already refused a body carrying one) and control characters
made visible, so the prompt cannot be forged by the sandbox's bytes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.http_approval import BodyCondition, VaultPolicyEntry
from proxy.leaks import redact
from proxy.rules import Rule, RuleError, make_rule, rule_matches

log = logging.getLogger("clawgate.vault.holds")

SUMMARY_CHARS = 600
ANSWER_GRACE_S = 15.0  # the gateway expires the prompt at timeout_s; this covers its edit
_CONNECT_S = 5.0


@dataclass(frozen=True)
class PolicyEntry:
    """A validated `[[vault.policy]]` entry (host and path checked by proxy/rules.py)."""

    index: int
    rule: Rule
    groups: tuple[str, ...]
    approve: bool
    body: BodyCondition | None

    def applies(self, group: str, method: str, host: str, port: int | None, path: str) -> bool:
        if self.groups and "*" not in self.groups and group not in self.groups:
            return False
        return rule_matches(self.rule, method, host, port, path)

    def describe(self) -> str:
        methods = ",".join(self.rule.methods) or "any"
        cond = f" if {self.body.describe()}" if self.body is not None else ""
        return f"[[vault.policy]] #{self.index + 1}: {self.rule.host}{self.rule.path} [{methods}]{cond}"


def policy_entries(entries: Sequence[VaultPolicyEntry]) -> tuple[PolicyEntry, ...]:
    """Validate host and path with the rules' syntax; RuleError names the entry."""
    out = []
    for i, e in enumerate(entries):
        try:
            rule = make_rule(e.host, e.path, e.methods)
        except RuleError as err:
            raise RuleError(f"[[vault.policy]] entry {i + 1}: {err}") from None
        out.append(PolicyEntry(i, rule, tuple(e.groups), e.approve, e.body))
    return tuple(out)


@dataclass(frozen=True)
class Demand:
    """Why a request must wait: the rules asking for approval (a body condition may still spare it)."""

    key: str  # what an allowance is granted for: the rule's description
    label: str  # shown to the owner
    conditions: tuple[BodyCondition | None, ...]  # None: unconditional

    def met(self, body: bytes) -> bool:
        return any(c is None or c.met(body) for c in self.conditions)


def demand_for(
    secret_hit: tuple[str, Rule] | None,
    entries: Sequence[PolicyEntry],
    group: str,
    method: str,
    host: str,
    port: int | None,
    path: str,
) -> Demand | None:
    """The approval a request needs (from its injection rule and the policy entries), or None."""
    keys: list[str] = []
    conditions: list[BodyCondition | None] = []
    if secret_hit is not None and secret_hit[1].approve:
        keys.append(f"secret {secret_hit[0]}: {secret_hit[1].describe()}")
        conditions.append(None)
    for entry in entries:
        if entry.approve and entry.applies(group, method, host, port, path):
            keys.append(entry.describe())
            conditions.append(entry.body)
    if not keys:
        return None
    return Demand(key=" + ".join(keys), label="; ".join(keys), conditions=tuple(conditions))


_BIDI_AND_SEPARATORS = frozenset({0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)})


def neutralise(text: str) -> str:
    """Control characters (and Unicode line/format controls) shown as escapes, not obeyed."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in "\n\t" or (code >= 0x20 and code != 0x7F and not 0x80 <= code < 0xA0):
            if code in _BIDI_AND_SEPARATORS:
                out.append(f"\\u{code:04x}")
            else:
                out.append(ch)
        else:
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
    return "".join(out)


def summarize_body(body: bytes, secret_values: Sequence[str], limit: int = SUMMARY_CHARS) -> str:
    """At most `limit` characters of the body for the prompt: redacted, control characters escaped."""
    if not body:
        return ""
    head = body[: limit * 4].decode("utf-8", "replace")
    text, _ = redact(head)
    for value in sorted(secret_values, key=len, reverse=True):
        if len(value) >= 6:
            text = text.replace(value, "[redacted: stored secret]")
    text = neutralise(text)
    if len(text) > limit or len(body) > limit * 4:
        text = text[:limit] + f"… ({len(body)} bytes)"
    return text


class Allowances:
    """ "Allow for N minutes": (group, rule key) → monotonic deadline, in this process only."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._until: dict[tuple[str, str], float] = {}

    def grant(self, group: str, key: str, seconds: float) -> None:
        if seconds > 0:
            self._until[(group, key)] = self.clock() + seconds

    def active(self, group: str, key: str) -> bool:
        until = self._until.get((group, key))
        if until is None:
            return False
        if self.clock() >= until:
            del self._until[(group, key)]
            return False
        return True


@dataclass(frozen=True)
class Verdict:
    forward: bool
    outcome: str  # for the audit log: "approved by tg:1", "denied by …", "expired", "allowed (…)"
    reason: str = ""  # for the agent, on a refusal
    status: int = 403  # on a refusal: 429 when the group asks too much, else 403


class Holder:
    """Asks the gateway about held requests and keeps the allowances."""

    def __init__(self, gateway_socket: Path | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.gateway_socket = gateway_socket
        self.allowances = Allowances(clock)
        self.clock = clock
        self.timeout_s = 120.0
        self.max_held_per_group = 4
        self.max_prompts_per_minute = 10
        self.held: dict[str, int] = {}  # group -> requests held right now
        self._asked: dict[str, collections.deque[float]] = {}  # group -> when it last caused prompts

    def configure(self, timeout_s: float, max_held_per_group: int, max_prompts_per_minute: int = 10) -> None:
        self.timeout_s = timeout_s
        self.max_held_per_group = max_held_per_group
        self.max_prompts_per_minute = max_prompts_per_minute

    def _may_ask(self, group: str) -> bool:
        """A hostile group must not flood the main chat with prompts (each one withdrawn at once)."""
        now = self.clock()
        asked = self._asked.setdefault(group, collections.deque())
        while asked and asked[0] <= now - 60:
            asked.popleft()
        if len(asked) >= self.max_prompts_per_minute:
            return False
        asked.append(now)
        return True

    async def decide(
        self,
        group: str,
        demand: Demand,
        question: dict[str, Any],
        client_gone: Callable[[], bool],
    ) -> Verdict:
        """Hold until the owner decides, the hold times out, or the client goes away."""
        if self.allowances.active(group, demand.key):
            return Verdict(True, "allowed (an owner's allowance for this rule is active)")
        if self.gateway_socket is None:
            return Verdict(False, "refused: no gateway to ask", "no owner can be asked from this vault")
        if self.held.get(group, 0) >= self.max_held_per_group:
            reason = f"{self.max_held_per_group} requests of this group already wait for the owner"
            return Verdict(False, "refused: too many held", reason, 429)
        if not self._may_ask(group):
            reason = f"this group asked the owner {self.max_prompts_per_minute} times in the last minute"
            return Verdict(False, "refused: too many prompts", reason, 429)
        self.held[group] = self.held.get(group, 0) + 1
        try:
            return await self._ask(group, demand, question, client_gone)
        finally:
            self.held[group] -= 1

    async def _ask(
        self, group: str, demand: Demand, question: dict[str, Any], client_gone: Callable[[], bool]
    ) -> Verdict:
        assert self.gateway_socket is not None
        message = {"op": "http_approval", **question, "rule": demand.label[:500], "timeout_s": self.timeout_s}
        ask = asyncio.create_task(self._roundtrip(message))
        deadline = time.monotonic() + self.timeout_s + ANSWER_GRACE_S
        try:
            while not ask.done():
                if client_gone():
                    ask.cancel()  # closes the connection: the gateway withdraws the prompt
                    with contextlib.suppress(BaseException):
                        await ask
                    log.info("vault[%s]: held request withdrawn: the client hung up", group)
                    return Verdict(False, "withdrawn: the client disconnected", "the client disconnected")
                left = deadline - time.monotonic()
                if left <= 0:
                    ask.cancel()
                    with contextlib.suppress(BaseException):
                        await ask
                    return Verdict(False, "expired (no answer from the gateway)", "nobody answered in time")
                await asyncio.wait({ask}, timeout=min(0.2, left))
            reply = ask.result()
        except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
            log.warning("vault[%s]: cannot ask the owner: %s", group, exc)
            return Verdict(False, "refused: gateway unavailable", "the gateway could not be asked")
        finally:
            if not ask.done():
                ask.cancel()
        decision = reply.get("decision")
        by = str(reply.get("by") or "")[:100]
        if decision == "approved":
            allow_s = reply.get("allow_for_s")
            if isinstance(allow_s, int | float) and not isinstance(allow_s, bool) and allow_s > 0:
                self.allowances.grant(group, demand.key, float(allow_s))
                return Verdict(True, f"approved by {by} (and allowed for {allow_s:g} s)")
            return Verdict(True, f"approved by {by}")
        if decision == "denied":
            return Verdict(False, f"denied by {by}", "the owner denied it")
        if decision == "expired":
            return Verdict(False, "expired", "the owner did not decide in time")
        error = str(reply.get("error") or decision)[:200]
        return Verdict(False, f"refused: {error}", f"the gateway refused to ask: {error}")

    async def _roundtrip(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.gateway_socket is not None
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(self.gateway_socket), limit=64 * 1024), _CONNECT_S
        )
        try:
            writer.write(json.dumps(message).encode() + b"\n")
            await writer.drain()
            line = await reader.readline()
            if not line:
                raise ConnectionError("the gateway closed the connection (restarted?)")
            reply = json.loads(line)
            if not isinstance(reply, dict):
                raise ValueError("the gateway's answer is not an object")
            return reply
        finally:
            writer.close()


def refusal_json(reason: str, method: str, host: str, path: str) -> bytes:
    """The 403 body an agent reads: plain words first, what was asked second."""
    message = (
        f"clawgate vault: this request needs the owner's approval and was not sent: {reason}. "
        "Tell the user it was not approved; it can be asked again."
    )
    return json.dumps(
        {"error": "approval_required", "message": message, "request": f"{method} {host}{path}"}
    ).encode()
