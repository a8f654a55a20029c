"""Prometheus metrics of one gateway, in a registry of its own.

Two kinds of numbers:
- events counted as they happen in this process (messages received, turns and their
  latency): plain `prometheus_client` counters and a histogram, updated by the gateway;
- state read at scrape time (queue depth, warm sandboxes, dead letters, approvals, wallet
  spend, the vault's request counters): the store and the vault are asynchronous, so the
  HTTP handler first awaits `refresh()`, which takes a snapshot, and the collector below
  turns that snapshot into metric families when `generate_latest` asks.

Every gateway has its own `CollectorRegistry` (never the library's global one), so several
gateways in one process (tests) never share or collide on a metric. Label values are
bounded and carry no content: channel names, group folders (chosen by the admin), fixed
outcome and reason sets — never chat ids, user ids, hosts, paths or text.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from core.wallet.amounts import YOCTO_PER_NEAR
from gateway.wallet.policy import utc_day
from proxy.process import VaultUnavailable

if TYPE_CHECKING:
    from core.models import ClaimedRun
    from gateway.running import RunningGateway

log = logging.getLogger(__name__)

# Turns last from under a second (a short answer from a warm sandbox) to many minutes (tools).
LATENCY_BUCKETS = (0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800, float("inf"))
OUTCOMES = ("answered", "error", "dead_letter")
SCRAPE_TIMEOUT_S = 5.0


@dataclass
class Snapshot:
    """What `refresh` read from the store, the pool, the queue and the vault."""

    store_ok: bool = False
    messages: dict[str, int] = field(default_factory=dict)  # status -> count (pending/processing/held/dead)
    dead_letters: dict[str, int] = field(default_factory=dict)  # kind -> open letters
    approvals: dict[str, int] = field(default_factory=dict)  # state -> count
    spent_today_near: float | None = None
    warm_sandboxes: int = 0
    max_sandboxes: int = 0
    lanes_running: int = 0
    lanes_waiting: int = 0
    channels: dict[str, bool] = field(default_factory=dict)
    vault_up: bool = False
    vault_restarts: int = 0
    vault_requests: dict[str, int] = field(default_factory=dict)  # group -> count
    vault_refusals: list[tuple[str, str, int]] = field(default_factory=list)  # group, reason, count


class GatewayMetrics:
    """The gateway's registry: event counters it updates, plus a snapshot collector."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.messages_received = Counter(
            "clawgate_messages_received",
            "Inbound messages stored (each is committed before the channel acknowledges it)",
            ["channel"],
            registry=self.registry,
        )
        self.messages_answered = Counter(
            "clawgate_messages_answered",
            "Messages that asked for an answer and were answered by a turn",
            registry=self.registry,
        )
        self.turn_seconds = Histogram(
            "clawgate_turn_duration_seconds",
            "From claiming a batch of messages to the turn's end, by outcome",
            ["outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        for outcome in OUTCOMES:  # present at 0 from the start, so rate() works from the first turn
            self.turn_seconds.labels(outcome)
        self.snapshot = Snapshot()
        self.registry.register(_SnapshotCollector(self))
        self._refresh_lock = asyncio.Lock()

    def received(self, channel: str) -> None:
        self.messages_received.labels(channel).inc()

    def turn_finished(self, outcome: str, seconds: float, answered: int) -> None:
        self.turn_seconds.labels(outcome).observe(max(0.0, seconds))
        if outcome == "answered":
            self.messages_answered.inc(answered)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def refresh(self, gw: RunningGateway) -> Snapshot:
        """Read the state that lives elsewhere; a part that does not answer reads as down, not stale."""
        async with self._refresh_lock:  # two scrapes at once share the store and vault politely
            snap = Snapshot()
            try:
                stats = await asyncio.wait_for(gw.store.stats(), SCRAPE_TIMEOUT_S)
                snap.messages = stats["messages"]
                snap.dead_letters = stats["dead_letters"]
                snap.approvals = stats["approvals"]
                spent = await asyncio.wait_for(gw.store.wallet_spent(utc_day(time.time())), SCRAPE_TIMEOUT_S)
                # yoctoNEAR do not fit a float exactly; NEAR does, to ~15 significant digits.
                snap.spent_today_near = spent / YOCTO_PER_NEAR
                snap.store_ok = True
            except Exception as exc:  # a broken store is what /metrics and /healthz must show
                log.warning("metrics: the store did not answer: %s", exc.__class__.__name__)
            snap.warm_sandboxes = len(gw.pool.live)
            snap.max_sandboxes = gw.config.sandbox.max_containers
            snap.lanes_running = len(gw.queue.busy)
            snap.lanes_waiting = len(gw.queue.waiting)
            snap.channels = {c.name: bool(c.connected) for c in gw.channels}
            snap.vault_restarts = gw.vault.restarts
            with contextlib.suppress(VaultUnavailable, OSError, TimeoutError):
                reply = await asyncio.wait_for(gw.vault.stats(), SCRAPE_TIMEOUT_S)
                snap.vault_requests = {str(g): int(n) for g, n in dict(reply.get("requests", {})).items()}
                snap.vault_refusals = [(str(g), str(r), int(n)) for g, r, n in reply.get("refusals", [])]
                snap.vault_up = True
            self.snapshot = snap
            return snap

    def observe_finished_run(self, gw: RunningGateway) -> _RunObserver:
        return _RunObserver(self, gw)


class _RunObserver:
    """A `RunExecutor.finish_observers` entry: one observation per finished turn."""

    def __init__(self, metrics: GatewayMetrics, gw: RunningGateway) -> None:
        self._metrics = metrics
        self._gw = gw

    async def __call__(self, claimed: ClaimedRun, text: str | None, error: str | None) -> None:
        store = self._gw.store
        started = await store.run_started_at(claimed.run_id)
        status, _ = await store.run_status(claimed.run_id)
        # `deferred` + an error at the finish: the last retry failed and the messages became a
        # dead letter (RunExecutor._defer); `failed`: the turn ended with an error reply.
        if error is None:
            outcome = "answered"
        elif status == "deferred":
            outcome = "dead_letter"
        else:
            outcome = "error"
        seconds = time.time() - started if started is not None else 0.0
        asked = sum(1 for m in claimed.messages if m.status == "pending")
        self._metrics.turn_finished(outcome, seconds, asked)


class _SnapshotCollector(Collector):
    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # families depend on the snapshot; nothing to pre-register

    def collect(self) -> Iterator[Metric]:
        snap = self._metrics.snapshot
        yield _gauge("clawgate_store_up", "1 when the database answered the last scrape", snap.store_ok)
        queue = GaugeMetricFamily(
            "clawgate_queue_messages", "Messages waiting for or in a turn, by state", labels=["state"]
        )
        for state in ("pending", "processing", "held"):  # held: waiting for the owner (gateway.senders)
            queue.add_metric([state], snap.messages.get(state, 0))
        yield queue
        lanes = GaugeMetricFamily(
            "clawgate_queue_groups", "Groups with work, by lane state", labels=["state"]
        )
        lanes.add_metric(["running"], snap.lanes_running)
        lanes.add_metric(["waiting"], snap.lanes_waiting)
        yield lanes
        yield _gauge(
            "clawgate_messages_dead",
            "Messages in dead letters now (retry or drop them)",
            snap.messages.get("dead", 0),
        )
        letters = GaugeMetricFamily("clawgate_dead_letters", "Open dead letters, by kind", labels=["kind"])
        for kind in sorted({"run", "reply", *snap.dead_letters}):
            letters.add_metric([kind], snap.dead_letters.get(kind, 0))
        yield letters
        yield _gauge("clawgate_sandboxes_warm", "Sandboxes running now", snap.warm_sandboxes)
        yield _gauge("clawgate_sandboxes_max", "[sandbox] max_containers", snap.max_sandboxes)
        connected = GaugeMetricFamily(
            "clawgate_channel_connected", "1 while a channel can receive and send", labels=["channel"]
        )
        for name, up in sorted(snap.channels.items()):
            connected.add_metric([name], float(up))
        yield connected
        yield _gauge(
            "clawgate_approvals_pending",
            "Approval prompts waiting for the owner",
            snap.approvals.get("pending", 0),
        )
        decided = CounterMetricFamily(
            "clawgate_approvals_decided", "Approval prompts decided, by outcome", labels=["outcome"]
        )
        for outcome in ("approved", "denied", "expired"):
            decided.add_metric([outcome], snap.approvals.get(outcome, 0))
        yield decided
        if snap.spent_today_near is not None:
            yield _gauge(
                "clawgate_wallet_spent_today_near",
                "NEAR (value + fees) counted against today's (UTC) limit; a float, so not exact to the yocto",
                snap.spent_today_near,
            )
        yield from self._vault(snap)

    @staticmethod
    def _vault(snap: Snapshot) -> Iterator[Metric]:
        yield _gauge("clawgate_vault_up", "1 when the vault answered the last scrape", snap.vault_up)
        restarts = CounterMetricFamily("clawgate_vault_restarts", "Times the supervisor restarted the vault")
        restarts.add_metric([], snap.vault_restarts)
        yield restarts
        requests = CounterMetricFamily(
            "clawgate_vault_requests",
            "Requests through the vault since it started, by group (resets when the vault restarts)",
            labels=["group"],
        )
        for group, count in sorted(snap.vault_requests.items()):
            requests.add_metric([group], count)
        yield requests
        refusals = CounterMetricFamily(
            "clawgate_vault_refusals",
            "Requests the vault answered itself, by group and reason (resets when the vault restarts)",
            labels=["group", "reason"],
        )
        leaks = CounterMetricFamily(
            "clawgate_vault_leak_blocks",
            "Requests blocked because they carried a credential, by group (resets when the vault restarts)",
            labels=["group"],
        )
        for group, reason, count in snap.vault_refusals:
            refusals.add_metric([group, reason], count)
            if reason == "leak":
                leaks.add_metric([group], count)
        yield refusals
        yield leaks


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=float(value))
