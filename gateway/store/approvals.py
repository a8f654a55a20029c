"""Approval prompts in the main chat (gateway.approvals): each is decided exactly once (invariant 6).

The decision is a conditional update (`WHERE state = 'pending'`), so a button press, a typed
`/approve` and the expiry timer racing each other produce one outcome, whichever commits first.
"""

from __future__ import annotations

from core.models import Approval
from gateway.store.connection import Database

_APPROVAL_COLUMNS = (
    "id, title, details, requester_group, created_at, expires_at, state, decided_by, decided_at, "
    "chat_id, message_ref"
)


class ApprovalStore(Database):
    """The approvals table."""

    async def create_approval(self, approval: Approval) -> None:
        await self._write(
            f"INSERT INTO approvals ({_APPROVAL_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                approval.id,
                approval.title,
                approval.details,
                approval.requester_group,
                approval.created_at,
                approval.expires_at,
                approval.state,
                approval.decided_by,
                approval.decided_at,
                approval.chat_id,
                approval.message_ref,
            ),
        )

    async def approval(self, approval_id: str) -> Approval | None:
        async with self._conn.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE id = ?", (approval_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else Approval(*row)

    async def pending_approvals(self) -> list[Approval]:
        async with self._conn.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE state = 'pending' ORDER BY expires_at, id"
        ) as cur:
            return [Approval(*row) for row in await cur.fetchall()]

    async def decided_approvals(self, limit: int = 50) -> list[Approval]:
        """The most recently decided (or expired) approvals, newest first: the dashboard's history."""
        async with self._conn.execute(
            f"SELECT {_APPROVAL_COLUMNS} FROM approvals WHERE state != 'pending' "
            "ORDER BY decided_at DESC, created_at DESC LIMIT ?",
            (limit,),
        ) as cur:
            return [Approval(*row) for row in await cur.fetchall()]

    async def set_approval_ref(self, approval_id: str, ref: str) -> None:
        """Where the channel posted the prompt, so it can be edited after a restart."""
        await self._write("UPDATE approvals SET message_ref = ? WHERE id = ?", (ref, approval_id))

    async def decide_approval(self, approval_id: str, state: str, by: str | None, at: float) -> bool:
        """`pending -> state`, exactly once: False if the approval was already decided (or is unknown)."""
        if state not in ("approved", "denied", "expired"):
            raise ValueError(f"not a decision: {state!r}")
        async with self._transaction():
            cur = await self._conn.execute(
                "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ? "
                "WHERE id = ? AND state = 'pending'",
                (state, by, at, approval_id),
            )
            return cur.rowcount == 1
