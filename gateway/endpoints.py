"""The gateway's optional HTTP endpoints — `/metrics` + `/healthz`, and the owner's dashboard.

Both are off unless configured, and neither may leave a gateway that runs half-observable: each
is bound during start-up, so a taken port fails the start with one line (`EndpointError`, which
`gateway.app` turns into a StartupError) rather than a warning nobody reads. `/metrics` is bound
early and answers 503 until the start is done, so a scraper sees the gateway come up; the
dashboard last, once everything it shows exists, and it is closed first at the stop, so no page
decides anything while the parts it calls are going away. Their modules are imported only when
enabled: prometheus-client and the templates cost nothing otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dashboard.server import DashboardServer
    from gateway.dashboard_backend import GatewayDashboard
    from gateway.metrics import GatewayMetrics
    from gateway.metrics_http import MetricsServer
    from gateway.running import RunningGateway


class EndpointError(Exception):
    """An enabled endpoint could not be served (e.g. its port is taken); the message says which."""


class Endpoints:
    """What is being served; `metrics` and `dashboard` are None while (or because) they are off."""

    def __init__(self) -> None:
        self.metrics: GatewayMetrics | None = None  # a registry per gateway, so several never collide
        self.metrics_server: MetricsServer | None = None
        self.dashboard: GatewayDashboard | None = None
        self.dashboard_server: DashboardServer | None = None

    async def start_metrics(self, gw: RunningGateway) -> None:
        if not gw.config.metrics.enabled:
            return
        from gateway.metrics import GatewayMetrics
        from gateway.metrics_http import EndpointUnavailable, serve

        self.metrics = GatewayMetrics()
        try:
            self.metrics_server = await serve(gw.config.metrics, gw, self.metrics)
        except EndpointUnavailable as exc:
            raise EndpointError(str(exc)) from None

    async def start_dashboard(self, gw: RunningGateway) -> None:
        if not gw.config.dashboard.enabled:
            return
        from gateway.dashboard_backend import DashboardUnavailable, serve

        try:
            self.dashboard, self.dashboard_server = await serve(gw)
        except DashboardUnavailable as exc:
            raise EndpointError(str(exc)) from None

    async def close_dashboard(self) -> None:
        server, self.dashboard_server, self.dashboard = self.dashboard_server, None, None
        if server is not None:
            await server.close()

    async def close_metrics(self) -> None:
        server, self.metrics_server = self.metrics_server, None
        if server is not None:
            await server.close()
