"""What `/healthz` answers: is this gateway able to take and answer messages right now?

Healthy means: started and not stopping, the database answers, the vault answers its
control socket, and every channel is connected. Anything else is a 503 that names the
part that is wrong, so a supervisor or a load balancer's probe can act on it and a human
can read it. Only state, never content: no chat ids, no user ids, no secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.metrics import GatewayMetrics
    from gateway.running import RunningGateway


async def check(gw: RunningGateway, metrics: GatewayMetrics) -> tuple[bool, dict[str, Any]]:
    """(healthy, report). Refreshes the metrics snapshot: one look at the store and the vault serves both.

    /healthz is served only with [metrics] enabled, so the gateway's metrics are always there.
    """
    if not gw.running:
        return False, {
            "status": "starting" if not gw.stopping else "stopping",
            "problems": ["gateway not running"],
        }
    snap = await metrics.refresh(gw)
    problems: list[str] = []
    if not snap.store_ok:
        problems.append("store: the database does not answer")
    if not snap.vault_up:
        problems.append("vault: not running (the supervisor restarts it; egress fails closed meanwhile)")
    down = sorted(name for name, up in snap.channels.items() if not up)
    problems.extend(f"channel {name}: disconnected" for name in down)
    report: dict[str, Any] = {
        "status": "ok" if not problems else "unhealthy",
        "store": "ok" if snap.store_ok else "down",
        "vault": {"state": "up" if snap.vault_up else "down", "restarts": snap.vault_restarts},
        "channels": {
            name: "connected" if up else "disconnected" for name, up in sorted(snap.channels.items())
        },
        "sandboxes": snap.warm_sandboxes,
    }
    if problems:
        report["problems"] = problems
    return not problems, report
