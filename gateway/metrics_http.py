"""The opt-in HTTP endpoint: `GET /healthz` and `GET /metrics` (Prometheus text format).

It runs on aiohttp in the gateway's own event loop, so a scrape sees the same objects
the gateway uses and needs no thread or second process. It listens on loopback unless
the config says `allow_remote = true` (core.config.MetricsConfig); it has no
authentication and serves nothing else, so it does not take request bodies, sessions or
query parameters.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from core.config import MetricsConfig, is_loopback
from gateway import health

if TYPE_CHECKING:
    from gateway.metrics import GatewayMetrics
    from gateway.running import RunningGateway

log = logging.getLogger(__name__)

HealthCheck = Callable[[], Awaitable[tuple[bool, dict[str, Any]]]]
Render = Callable[[], Awaitable[bytes]]


async def serve(settings: MetricsConfig, gw: RunningGateway, metrics: GatewayMetrics) -> MetricsServer:
    """One gateway's endpoint, bound (or EndpointUnavailable): /healthz from `gateway.health`,
    /metrics from its registry, whose snapshot is refreshed at each scrape once the gateway runs."""

    async def render() -> bytes:
        if gw.running:
            await metrics.refresh(gw)
        return metrics.render()

    server = MetricsServer(settings, lambda: health.check(gw, metrics), render)
    await server.start()
    return server


class EndpointUnavailable(Exception):
    """The address cannot be bound; the message names it and the fix."""


class MetricsServer:
    def __init__(self, settings: MetricsConfig, health: HealthCheck, render: Render) -> None:
        self.settings = settings
        self._health = health
        self._render = render
        self._runner: web.AppRunner | None = None
        self.port: int | None = None  # the bound port (settings.port may be 0)

    async def start(self) -> None:
        """Bind, or raise EndpointUnavailable (a start-up error: a configured endpoint must exist)."""
        app = web.Application(client_max_size=1024)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.listen, self.settings.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise EndpointUnavailable(
                f"metrics: cannot listen on {self.settings.listen}:{self.settings.port} "
                f"({exc.strerror or exc}); change [metrics] port or stop what uses it"
            ) from None
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])
        host = self.settings.listen
        shown = f"[{host}]" if ":" in host else host
        log.info("metrics: serving /healthz and /metrics on http://%s:%d", shown, self.port)
        if not is_loopback(host):
            log.warning(
                "metrics: listening on %s, reachable from other machines; the endpoint has no "
                'authentication (firewall it, or set [metrics] listen = "127.0.0.1")',
                host,
            )

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _healthz(self, request: web.Request) -> web.Response:
        try:
            healthy, report = await self._health()
        except Exception as exc:  # a probe that fails is an unhealthy answer, never a 500 traceback
            log.exception("metrics: health check failed")
            healthy, report = (
                False,
                {"status": "unhealthy", "problems": [f"health check: {type(exc).__name__}"]},
            )
        return web.Response(
            status=200 if healthy else 503,
            text=json.dumps(report, sort_keys=True) + "\n",
            content_type="application/json",
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = await self._render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
