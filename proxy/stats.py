"""Request counters the vault keeps in memory and hands to the gateway's `/metrics`.

The vault is a separate process, so the gateway asks for these over the control socket
(`{"op": "stats"}`) at scrape time instead of tailing `audit.jsonl`: the counts cannot be
thrown off by log rotation, a partial line or a buffer not yet flushed. They count from
the vault's start; after a restart they begin again at zero, which Prometheus treats as
an ordinary counter reset.

Labels are bounded: the group folder (admin-chosen) and a refusal REASON from a fixed
set, never the host, path or pattern, which a hostile sandbox could vary without end.
"""

from __future__ import annotations

from collections import Counter

# Every refusal the audit log records falls into exactly one of these.
REASONS = ("leak", "host_mismatch", "size", "upstream_error", "policy")
MAX_GROUPS = 1000  # groups are admin-registered; a bound anyway, so a bug cannot grow this forever


def reason_of(refusal: str) -> str:
    """Map the audit log's free-text refusal to a bounded label value."""
    if refusal.startswith("leak:"):
        return "leak"
    if refusal.startswith("host mismatch"):
        return "host_mismatch"
    if refusal.startswith("error:"):
        return "upstream_error"
    if "max_response_bytes" in refusal or "max_request_bytes" in refusal or "too large" in refusal:
        return "size"
    return "policy"  # egress rules, private upstreams, rate limits, unknown clients, budgets


class VaultStats:
    """Counts every request the audit addon records, by group and outcome."""

    def __init__(self) -> None:
        self.requests: Counter[str] = Counter()
        self.refusals: Counter[tuple[str, str]] = Counter()

    def _group(self, group: str | None) -> str:
        name = group or "?"
        if name not in self.requests and len(self.requests) >= MAX_GROUPS:
            return "other"
        return name

    def record(self, group: str | None, refusal: str | None) -> None:
        name = self._group(group)
        self.requests[name] += 1
        if refusal:
            self.refusals[(name, reason_of(refusal))] += 1

    def snapshot(self) -> dict[str, object]:
        """JSON-ready: {"requests": {group: n}, "refusals": [[group, reason, n], ...]}."""
        return {
            "requests": dict(self.requests),
            "refusals": [[g, r, n] for (g, r), n in sorted(self.refusals.items())],
        }
