"""Where the gateway's own HTTP endpoints listen: `[metrics]` and `[dashboard]`.

Both default to loopback and refuse any other address unless the owner sets `allow_remote`:
the metrics have no authentication, and a dashboard session can approve wallet transfers.
"""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from core.config_base import Section


def is_loopback(host: str) -> bool:
    """`127.0.0.0/8`, `::1` or `localhost`: reachable only from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _listen_address(value: str) -> str:
    """An IP address to listen on, normalised (`localhost` → 127.0.0.1, `[::1]` → ::1)."""
    host = value.strip("[]")
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address (e.g. 127.0.0.1 or ::1)") from None


class MetricsConfig(Section):
    """The opt-in `/healthz` + Prometheus `/metrics` endpoint (gateway.metrics_http)."""

    enabled: bool = False
    listen: str = Field("127.0.0.1", min_length=1, description="an IP address; loopback unless allow_remote")
    port: int = Field(9464, ge=0, le=65535, description="0 = any free port (logged at start)")
    allow_remote: bool = Field(
        False, description="required to listen on a non-loopback address; the endpoint has no authentication"
    )

    @field_validator("listen")
    @classmethod
    def _address(cls, value: str) -> str:
        return _listen_address(value)

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> MetricsConfig:
        # The metrics say how busy each group is and whether the vault is down; nobody off this
        # machine should learn that unless the owner decided so.
        if not is_loopback(self.listen) and not self.allow_remote:
            raise ValueError(
                f"metrics.listen = {self.listen!r} is not a loopback address; the endpoint has no "
                "authentication. Use 127.0.0.1, or set metrics.allow_remote = true to expose it"
            )
        return self


class DashboardConfig(Section):
    """The owner's web dashboard (dashboard/, served by `clawgate run`); off unless enabled.

    Unlike `[metrics]` it has authentication (one-time login links, sessions, CSRF tokens), but it
    can approve wallet transactions: reachable only from this machine unless the owner says so.
    """

    enabled: bool = False
    bind: str = Field("127.0.0.1", min_length=1, description="an IP address; loopback unless allow_remote")
    port: int = Field(8765, ge=0, le=65535, description="0 = any free port (logged at start)")
    allow_remote: bool = Field(
        False, description="required to bind a non-loopback address (a warning is logged at start)"
    )

    @field_validator("bind")
    @classmethod
    def _address(cls, value: str) -> str:
        return _listen_address(value)

    @model_validator(mode="after")
    def _loopback_unless_allowed(self) -> DashboardConfig:
        # A session can approve NEAR transfers and held HTTP requests: a stolen login link or a
        # guessed one must at least need a shell on this machine, unless the owner decided so.
        if not is_loopback(self.bind) and not self.allow_remote:
            raise ValueError(
                f"dashboard.bind = {self.bind!r} is not a loopback address. Use 127.0.0.1, or set "
                "dashboard.allow_remote = true to serve the dashboard to other machines (put TLS in front)"
            )
        return self
