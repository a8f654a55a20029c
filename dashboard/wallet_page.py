"""The Wallet page (`GET /wallet`): keys, balances, today's spend against the limits, the policy,
and the wallet's requests paged newest first with filters by group and state.

Read-only by design: it registers no POST, so the dashboard gains no wallet privilege (a pending
request is decided on the Approvals page, through the chat buttons' path). The server's
middleware has already checked the session by the time the handler runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from dashboard.backend import Backend
from dashboard.wallet_view import STATES, WalletQuery

Render = Callable[..., web.Response]  # DashboardServer._session_page(request, template, **context)


def add_routes(app: web.Application, backend: Backend, render: Render) -> None:
    async def wallet(request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            offset = max(0, int(q.get("offset", "0")))
        except ValueError:
            offset = 0
        view = await backend.wallet(WalletQuery(q.get("group", ""), q.get("state", ""), offset))
        filters: dict[str, Any] = {
            k: v for k, v in (("group", view.query.group), ("state", view.query.state)) if v
        }
        return render(request, "wallet.html", w=view, filters=filters, states=STATES)

    app.router.add_get("/wallet", wallet)
