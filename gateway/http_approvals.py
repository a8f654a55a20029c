"""The gateway's half of a held HTTP request: ask the owner, answer the waiting vault.

The vault (proxy/holds.py) holds a request an approval rule names and sends
`{"op": "http_approval", …}` on the control socket; `gateway/control.py` keeps that
connection open while this module asks in the main chat through `gateway/approvals.py`
(only an admin in main decides, once, in one transaction; expiry is deny). The answer goes
back on the same connection, so the vault's connection is the waiter: if the vault hangs up
(its client gave up), the task running here is cancelled and the prompt is withdrawn — denied
"by the vault" and edited to say so — so a click can never forward anything afterwards.

Everything in the question comes from a hostile sandbox by way of the vault, which has bounded
and redacted it; it is bounded again here and shown inside code blocks by the channels.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from gateway.approvals import new_approval_id

if TYPE_CHECKING:
    from gateway.running import RunningGateway

log = logging.getLogger(__name__)

WITHDRAWN_BY = "the vault (the requester hung up)"


def _field(request: dict[str, object], key: str, limit: int) -> str:
    value = request.get(key)
    return ("" if value is None else str(value))[:limit]


def allow_label(minutes: float) -> str | None:
    """`Allow for 10 min` / `Allow for 30 s`; None when the button is switched off (0)."""
    if minutes <= 0:
        return None
    seconds = minutes * 60
    if seconds < 60:
        return f"Allow for {seconds:g} s"
    return f"Allow for {minutes:g} min"


async def ask_owner(gw: RunningGateway, request: dict[str, object]) -> dict[str, object]:
    """Post the prompt, wait for the decision; `{"decision": …, "by": …, "allow_for_s": …}`."""
    group = _field(request, "group", 64)
    if gw.registry.by_folder(group) is None:
        return {"ok": False, "error": f"unknown group {group!r}"}
    if gw.registry.main is None:
        return {"ok": False, "error": "there is no main chat to ask in"}
    method, host = _field(request, "method", 20), _field(request, "host", 253)
    port, path = _field(request, "port", 5), _field(request, "path", 300)
    body, rule = _field(request, "body", 1000), _field(request, "rule", 500)
    settings = gw.config.vault.approval
    target = host if port in ("", "443", "80") else f"{host}:{port}"
    title = f"HTTP {method} {target}{path}"
    details = "\n".join(
        line
        for line in (
            f"group: {group}",
            f"request: {method} {target}{path}",
            f"body: {body}" if body else "body: (none)",
            f"why: {rule}" if rule else "",
            "Approve sends it once with the vault's credential; Deny or no answer refuses it.",
        )
        if line
    )
    label = allow_label(settings.allow_for_minutes)
    approval_id = new_approval_id()
    try:
        decision = await gw.approvals.request_approval(
            title, details, group, gw.config.vault.hold_timeout_s, approval_id=approval_id, allow_label=label
        )
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling() and not gw.stopping:
            # The vault hung up (gateway/control.py cancelled us): its client is gone, and nobody
            # may approve this one any more. A gateway stopping (its vault going with it) leaves
            # the record pending instead: the next start's recovery expires it, as for NEAR.
            with contextlib.suppress(Exception):
                await asyncio.shield(gw.approvals.void(approval_id, by=WITHDRAWN_BY))
        raise
    record = await gw.store.approval(approval_id)
    by = record.decided_by if record is not None else None
    answer: dict[str, object] = {"ok": True, "decision": decision, "by": by or ""}
    if decision == "approved" and gw.approvals.allowance_taken(approval_id):
        answer["allow_for_s"] = settings.allow_for_minutes * 60
    log.info("held request of %s (%s %s): %s by %s", group, method, target, decision, by or "-")
    return answer
