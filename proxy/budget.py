"""The vault's half of model budgets: refuse a group's model call once its headroom is gone.

The gateway decides the limits and pushes, per scope (a group folder, or "*" for the limits all
groups share), each limit's remaining headroom with the `budgets` control op
(docs/SPEND-INTERFACE in the lead's notes; gateway/budget_state.py builds it). Here:

- `screen` (request headers) and `screen_body` (the buffered body): what a request costs is
  classified once, in proxy/spend_paths.py (on any upstream host). A metered model call from
  group G is answered 403 when any limit of G or of "*" has remaining <= 0; a call the vault
  cannot meter (batches, images, audio, realtime, fine-tuning, background Responses, unknown
  writes to a provider's API) is answered 403 while ANY limit applies to G, since a budget that
  cannot see the spend would not bound it. Both in the provider's own error shape, so SDKs
  surface the message and do not retry (they retry 408/409/429/5xx, never 403; Gemini's shape
  is Google's `{"error": {"code", "message", "status": "PERMISSION_DENIED"}}`, Ollama's a bare
  `{"error": "<message>"}`). The message
  starts "clawgate budget:", which the builtin agent recognises as final
  (groups/agent/transport.py). Without a budget such calls pass, marked "unmetered" in the
  audit log (`clawgate.spend`) so the owner can find them.
- `on_usage`: registered as a metering listener; the addon calls it synchronously while it
  relays the chunk that carries a response's final usage, i.e. before the client has the end
  of that response. Every applicable limit is decremented at once (tokens = the four counts
  summed; usd_micros = cost at the pushed prices), so the group's next call already sees it.

What this cannot stop: calls already in flight when the headroom reaches 0 (their cost is
only known at their end). That is the "at most one call per concurrent connection" overshoot
of invariant 16. Requests of class "free" or "other" (package downloads, other APIs) are
never refused here.
A vault that has not been told anything yet refuses nothing; the gateway pushes the state
right after the vault starts, before any sandbox exists.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from dataclasses import dataclass
from typing import Any, Literal

from mitmproxy import http

from core.pricing import Price, PriceTable, cost_micros
from proxy.bodies import may_have_large_body
from proxy.metering import Usage
from proxy.spend_paths import (
    BACKGROUND,
    GEMINI_OPAQUE,
    Call,
    background_requested,
    classify,
    gemini_unreadable,
    unmetered,
)

log = logging.getLogger("clawgate.vault.budget")

ALL_GROUPS = "*"
MARKER = "clawgate budget:"
MAX_MESSAGE = 300
MAX_SCOPES = 10_000
MAX_LIMITS_PER_SCOPE = 16
CALL = "clawgate.spend_call"  # flow metadata: the request's class, from `screen` to `screen_body`
SPEND = "clawgate.spend"  # flow metadata the audit log writes: "unmetered: <what>"
_UNCHECKED = Call(
    "unmeterable",
    "openai",
    None,
    "OpenAI Responses request with a body the vault cannot check for background mode",
    "it is over 1 MiB, of unknown length, compressed or nested too deep to read",
)


_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")


def _overrides(headers: http.Headers) -> list[str]:
    """The method-override headers' values: a server honouring one reads a GET as a write."""
    return [value for name in _OVERRIDE_HEADERS for value in headers.get_all(name)]


class BudgetStateError(ValueError):
    """The `budgets` op was malformed; the previous state stays in force."""


@dataclass(slots=True)
class Headroom:
    key: str
    unit: Literal["tokens", "usd_micros"]
    remaining: int
    message: str


def _int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise BudgetStateError(f"{what} must be an integer")
    return value


def _prices(raw: object) -> PriceTable:
    """The gateway's whole price table (core/pricing.py `PriceTable.to_json`), checked."""
    if not isinstance(raw, dict):
        raise BudgetStateError("'prices' must be an object")
    table: dict[str, Price] = {}
    for model, entry in raw.items():
        if not isinstance(model, str) or not isinstance(entry, dict):
            raise BudgetStateError("'prices' maps a model name to an object")
        values: dict[str, float] = {}
        for field in ("input", "output", "cache_read", "cache_write"):
            value = entry.get(field, 0)
            number = isinstance(value, int | float) and not isinstance(value, bool)
            if not number or not math.isfinite(value) or value < 0:
                raise BudgetStateError(f"prices[{model!r}].{field} must be a non-negative number")
            values[field] = float(value)
        table[model] = Price(**values)
    return PriceTable(table, with_defaults=False)  # the gateway sent the whole table


def _limits(raw: object) -> dict[str, list[Headroom]]:
    if not isinstance(raw, dict) or len(raw) > MAX_SCOPES:
        raise BudgetStateError("'limits' must be an object of scopes")
    found: dict[str, list[Headroom]] = {}
    for scope, entries in raw.items():
        if not isinstance(scope, str) or not isinstance(entries, list) or len(entries) > MAX_LIMITS_PER_SCOPE:
            raise BudgetStateError("'limits' maps a scope to a list of limits")
        scoped = []
        for entry in entries:
            if not isinstance(entry, dict):
                raise BudgetStateError("a limit must be an object")
            unit = entry.get("unit")
            if unit not in ("tokens", "usd_micros"):
                raise BudgetStateError("a limit's unit must be 'tokens' or 'usd_micros'")
            key, message = entry.get("key"), entry.get("message")
            if not isinstance(key, str) or not isinstance(message, str):
                raise BudgetStateError("a limit needs a string 'key' and 'message'")
            if not message.startswith(MARKER):
                message = f"{MARKER} {message}"
            scoped.append(
                Headroom(key[:200], unit, _int(entry.get("remaining"), "remaining"), message[:MAX_MESSAGE])
            )
        found[scope] = scoped
    return found


def refusal_response(kind: str, message: str) -> http.Response:
    """403 in the provider's error shape (SPEND-INTERFACE §6)."""
    if kind == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": "permission_error", "message": message}}
    elif kind == "gemini":  # google.rpc.Status as Google's JSON APIs send it
        body = {"error": {"code": 403, "message": message, "status": "PERMISSION_DENIED"}}
    elif kind == "ollama":  # Ollama's clients read a bare string
        body = {"error": message}
    else:
        body = {"error": {"message": message, "type": "insufficient_quota", "code": "budget_exhausted"}}
    return http.Response.make(403, json.dumps(body), {"Content-Type": "application/json"})


def unmeterable_message(call: Call) -> str:
    """Names what, why and how the owner allows it; the same words in the chat and the audit log."""
    return (
        f"{MARKER} {call.what} is refused while a model budget applies to this group: {call.why}, "
        "so it could not be counted against the budget. The owner can allow it by removing the "
        "group's and the global limits (/budget set <group|global> <limit> off)."
    )


class VaultBudgets:
    """The headroom the gateway pushed, decremented as responses are metered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()  # metering and the control op share the event loop; cheap insurance
        self._prices = PriceTable({}, with_defaults=False)
        self._limits: dict[str, list[Headroom]] = {}

    def set_state(self, request: dict[str, Any]) -> int:
        """Replace the whole state (validated first); returns how many limits are in force."""
        prices = _prices(request.get("prices", {}))
        limits = _limits(request.get("limits", {}))
        with self._lock:
            self._prices, self._limits = prices, limits
        return sum(len(v) for v in limits.values())

    def _applicable(self, group: str) -> list[Headroom]:
        return [*self._limits.get(group, ()), *self._limits.get(ALL_GROUPS, ())]

    def exhausted(self, group: str) -> Headroom | None:
        with self._lock:
            for limit in self._applicable(group):
                if limit.remaining <= 0:
                    return limit
        return None

    def applies(self, group: str) -> bool:
        """Any limit in force for the group (its own or the shared one), exhausted or not."""
        with self._lock:
            return bool(self._applicable(group))

    def refusal(self, group: str, call: Call) -> tuple[http.Response, str] | None:
        """A 403 (and the audit log's reason) for a call the group's budget does not allow;
        None to let it through."""
        if call.kind == "metered":
            over = self.exhausted(group)
            if over is None:
                return None
            log.warning("vault[%s]: refused a model call: budget %s exhausted", group, over.key)
            return refusal_response(call.provider, over.message), f"{MARKER} {over.key} exhausted"
        if call.kind in ("unmeterable", "unknown") and self.applies(group):
            log.warning("vault[%s]: refused %s: it cannot be metered under a budget", group, call.what)
            return refusal_response(
                call.provider, unmeterable_message(call)
            ), f"{MARKER} unmeterable: {call.what}"
        return None

    def screen(self, group: str, flow: http.HTTPFlow) -> bool:
        """At request headers: refuse (True) or let pass, marking unmeterable spend on the flow."""
        req = flow.request
        call = classify(req.method, req.path, req.host, _overrides(req.headers))
        flow.metadata[CALL] = call
        if call.check_background and self.applies(group) and may_have_large_body(req):
            call = _UNCHECKED  # streamed to the upstream before the vault could read `background`
        headers = req.headers
        if call.endpoint == "gemini" and gemini_unreadable(
            req.path, ",".join(headers.get_all("content-type")), ",".join(headers.get_all("accept"))
        ):
            call = GEMINI_OPAQUE  # the same call, answered in bytes the meter cannot read
        return self._verdict(group, flow, call)

    def screen_body(self, group: str, flow: http.HTTPFlow) -> bool:
        """At the buffered body: a Responses request asking for `background` is unmeterable."""
        call: Call | None = flow.metadata.get(CALL)
        req = flow.request
        if call is None or not call.check_background or flow.response is not None or req.stream:
            return False
        if req.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
            background = None
        else:
            background = background_requested(req.raw_content or b"")
        if background is False or (background is None and not self.applies(group)):
            return False
        return self._verdict(group, flow, BACKGROUND if background else _UNCHECKED)

    def _verdict(self, group: str, flow: http.HTTPFlow, call: Call) -> bool:
        refused = self.refusal(group, call)
        if refused is not None:
            flow.response, reason = refused
            flow.metadata.setdefault("clawgate.refusal", reason)
            return True
        if call.kind in ("unmeterable", "unknown"):
            flow.metadata[SPEND] = unmetered(call)
        return False

    def on_usage(self, group: str, usage: Usage) -> None:
        """Metering listener: subtract a response's usage from every limit that applies."""
        tokens = usage.total_tokens
        with self._lock:
            applicable = self._applicable(group)
            if not applicable:
                return
            cost = cost_micros(usage, self._prices) if any(h.unit == "usd_micros" for h in applicable) else 0
            for limit in applicable:
                limit.remaining -= cost if limit.unit == "usd_micros" else tokens

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        """For tests and `stats`: scope -> [{key, unit, remaining}]."""
        with self._lock:
            return {
                scope: [{"key": h.key, "unit": h.unit, "remaining": h.remaining} for h in limits]
                for scope, limits in self._limits.items()
            }
