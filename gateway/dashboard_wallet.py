"""The dashboard's Wallet page, gateway side: `/wallet`'s numbers, `/policy`'s lines, the requests.

Read-only: nothing here signs, decides or changes a setting (approvals stay on the Approvals
page, through the chat buttons' path). The keys, balances and daily limits come from
`WalletService.status` — the very computation `/wallet` prints (gateway/wallet/owner_views.py) —
with each balance lookup bounded by `BALANCE_TIMEOUT_S`, so a node that accepts and never
answers costs the page a few seconds and the word "unavailable", never a hang or an error.

Untrusted text is clipped here: a request's summary, receiver, reasons and error were written
from what a sandbox asked (a NEP-413 recipient is any printable text) or what a node answered,
and a balance's "unavailable" reason quotes the node. The template escapes all of it.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from core.models import WalletRequest
from core.wallet.amounts import format_near
from dashboard.wallet_view import (
    STATES,
    WalletKeyRow,
    WalletLimitRow,
    WalletQuery,
    WalletRequestRow,
    WalletView,
)
from gateway.running import RunningGateway
from gateway.wallet.keyinfo import WalletError
from gateway.wallet.owner_views import WalletStatus, policy_text

log = logging.getLogger(__name__)

PAGE = 25
BALANCE_TIMEOUT_S = 4.0
GROUP_CHARS = 64
SHORT = 80  # receivers, hashes, approval ids: well above what a valid one needs
LONG = 400  # summaries, reasons, errors
MAX_OFFSET = 10**9  # SQLite's integers are 64-bit: a larger URL offset must not reach the query


def clip(text: object, limit: int) -> str:
    """`text` on one line, at most `limit` characters (a longer one ends in "…")."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _value(r: WalletRequest) -> str:
    shown = f"{format_near(r.value)} NEAR"
    tokens = [f"{amount} base units of {clip(c, SHORT)}" for c, amount in sorted(r.tokens.items())]
    return clip(" + ".join([shown, *tokens]), LONG)


def _row(r: WalletRequest) -> WalletRequestRow:
    return WalletRequestRow(
        id=r.id,
        created_at=r.created_at,
        group=clip(r.group_folder, GROUP_CHARS),
        receiver=clip(r.receiver_id, SHORT),
        kind=clip(r.kind, 20),
        summary=clip(r.summary, LONG),
        value=_value(r),
        outcome=clip(r.outcome, 20),
        state=clip(r.state, 20),
        reasons=clip("; ".join(r.reasons), LONG),
        approval_id=clip(r.approval_id or "", SHORT),
        tx_hash=clip(r.tx_hash or "", SHORT),
        error=clip(r.error or "", LONG),
    )


def _keys(status: WalletStatus) -> list[WalletKeyRow]:
    return [
        WalletKeyRow(
            name=s.key.name,
            label=clip(s.key.label, 200),
            account_id=s.key.account_id,
            network=s.key.network,
            public_key=str(s.key.public_key),
            permission=clip(s.key.permission.describe(), LONG),
            groups=list(s.groups),
            balance=clip(s.balance, LONG),
            balance_ok=s.available,
        )
        for s in status.keys
    ]


def _limits(status: WalletStatus) -> list[WalletLimitRow]:
    return [
        WalletLimitRow(
            limit.unit,
            clip(limit.line, LONG),
            # the meter's share; the line has the exact numbers (a token's spend can be "unbounded")
            None if not limit.limit else min(limit.spent / limit.limit, 1.0),
        )
        for limit in status.limits
    ]


def _query(q: WalletQuery) -> tuple[WalletQuery, str | None]:
    """The filters as applied: an unknown state is dropped with a note saying what is allowed."""
    group = q.group.strip()[:GROUP_CHARS]
    state = q.state.strip()
    note = None
    if state and state not in STATES:
        note = f"state: expected one of {', '.join(STATES)}"
        state = ""
    return WalletQuery(group, state, min(max(0, q.offset), MAX_OFFSET)), note


async def wallet_view(gw: RunningGateway, q: WalletQuery) -> WalletView:
    wallet = gw.wallet
    keys_error = None
    try:
        status = await wallet.status(BALANCE_TIMEOUT_S)
    except WalletError as exc:  # the key file does not parse: say so, show the rest
        log.warning("dashboard: the wallet's keys could not be read: %s", exc.message)
        keys_error = clip(exc.message, LONG)
        status = None
    query, note = _query(q)
    rows = await gw.store.wallet_requests_page(
        group=query.group or None, state=query.state or None, offset=query.offset, limit=PAGE + 1
    )
    settings = gw.config.wallet
    return WalletView(
        configured=bool(status and status.keys),
        keys_error=keys_error,
        network=settings.network,
        rpc_host=urlsplit(settings.effective_rpc_url).hostname or "?",
        keys=_keys(status) if status else [],
        day=status.day if status else "",
        limits=_limits(status) if status else [],
        pending=status.pending if status else [],
        policy=[line.removeprefix("• ") for line in policy_text(wallet.engine.policy).splitlines()[1:]],
        requests=[_row(r) for r in rows[:PAGE]],
        query=query,
        offset=query.offset,
        limit=PAGE,
        has_more=len(rows) > PAGE,
        note=note,
    )
