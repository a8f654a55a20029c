"""Wallet requests (gateway.wallet.service): each verdict and the spend it allows, in one row.

The policy decides; this module makes its daily limits hold under concurrency: `wallet_decide`
and `wallet_clear_approved` call the policy *inside* the write transaction that records its
verdict, so two concurrent requests see each other's spend and together cannot pass a limit
(invariant 5: spend is recorded atomically with the decision). Amounts are yoctoNEAR or token
base units stored as text, because they exceed int64.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from core.models import WalletDraft, WalletRequest
from gateway.store.connection import Database
from gateway.wallet.decision import DaySpend, Decision

# States whose value counts against the daily limit on its spend day: cleared to sign, signed and
# submitted, or failed on chain (a failed transaction still burnt gas, and the wallet does not
# trust a refund it did not see). A request the node rejected unexecuted releases its spend day.
SPENDING_STATES = ("signing", "submitted", "failed")
_SPENDING_SQL = "('signing', 'submitted', 'failed')"
_STATE_OF_OUTCOME = {"auto_approve": "signing", "needs_approval": "pending", "deny": "denied"}

_WALLET_COLUMNS = (
    "id, created_at, group_folder, key_name, signer_id, receiver_id, kind, summary, value, outcome, "
    "reasons, state, spend_day, approval_id, tx_hash, error, updated_at, fee, tokens"
)


def _wallet_request(row: Iterable[object]) -> WalletRequest:
    values: list[Any] = list(row)  # SQLite values, converted to the dataclass's types below
    values[8] = int(str(values[8]))
    values[10] = tuple(json.loads(str(values[10])))
    values[17] = int(str(values[17]))
    values[18] = {str(k): int(v) for k, v in json.loads(str(values[18])).items()}
    return WalletRequest(*values)


def _tokens_json(tokens: Mapping[str, int]) -> str:
    """Token contract -> base units, amounts as strings (they exceed int64 like yoctoNEAR does)."""
    return json.dumps({contract: str(amount) for contract, amount in sorted(tokens.items())})


class WalletStore(Database):
    """The wallet_requests and wallet_settings tables."""

    async def _wallet_spent(self, day: str) -> DaySpend:
        """Only with the lock held, so no other coroutine's transaction is open mid-read."""
        near = 0
        tokens: dict[str, int] = {}
        async with self._conn.execute(
            "SELECT value, fee, tokens FROM wallet_requests "
            f"WHERE spend_day = ? AND state IN {_SPENDING_SQL}",
            (day,),
        ) as cur:
            for value, fee, moved in await cur.fetchall():
                near += int(value) + int(fee)
                for contract, amount in json.loads(moved).items():
                    tokens[contract] = tokens.get(contract, 0) + int(amount)
        return DaySpend(near, tokens)

    async def wallet_spent(self, day: str) -> int:
        """yoctoNEAR (value and fees) counted against the daily limit on UTC `day` (YYYY-MM-DD)."""
        async with self._lock:
            return (await self._wallet_spent(day)).near

    async def wallet_day(self, day: str) -> DaySpend:
        """Everything counted against the daily limits on UTC `day`: NEAR and each token's base units."""
        async with self._lock:
            return await self._wallet_spent(day)

    async def wallet_decide(
        self, draft: WalletDraft, decide: Callable[[DaySpend], Decision], day: str, now: float
    ) -> tuple[int, Decision, DaySpend]:
        """Record `decide(spent_today)` and, if it signs, the spend — in one write transaction.

        The verdict is computed *inside* the transaction, so two concurrent requests see each
        other's spend and together cannot pass the daily limit. Returns (id, verdict, spent).
        """
        async with self._transaction() as conn:
            spent = await self._wallet_spent(day)
            verdict = decide(spent)
            state = _STATE_OF_OUTCOME[verdict.outcome]
            cur = await conn.execute(
                "INSERT INTO wallet_requests (created_at, group_folder, key_name, signer_id, receiver_id, "
                "kind, summary, value, outcome, reasons, state, spend_day, updated_at, fee, tokens) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    now,
                    draft.group_folder,
                    draft.key_name,
                    draft.signer_id,
                    draft.receiver_id,
                    draft.kind,
                    draft.summary,
                    str(draft.value),
                    verdict.outcome,
                    json.dumps(list(verdict.reasons)),
                    state,
                    day if verdict.signs else None,
                    now,
                    str(draft.fee),
                    _tokens_json(draft.tokens),
                ),
            )
            assert cur.lastrowid is not None
            return cur.lastrowid, verdict, spent

    async def wallet_clear_approved(
        self,
        request_id: int,
        value: int,
        decide: Callable[[DaySpend], Decision],
        day: str,
        now: float,
        *,
        fee: int = 0,
        tokens: Mapping[str, int] | None = None,
    ) -> tuple[Decision, DaySpend] | None:
        """The owner approved a pending request: re-check it against today's spend, atomically.

        `value`, `fee` and `tokens` are the re-analyzed charges (the transaction is rebuilt with a
        fresh nonce and gas price).
        None if the request is no longer pending (decided, or cancelled by a restart).
        """
        async with self._transaction() as conn:
            async with conn.execute("SELECT state FROM wallet_requests WHERE id = ?", (request_id,)) as cur:
                row = await cur.fetchone()
            if row is None or row[0] != "pending":
                return None
            spent = await self._wallet_spent(day)
            verdict = decide(spent)
            state = "signing" if verdict.signs else "denied"
            await conn.execute(
                "UPDATE wallet_requests SET state = ?, value = ?, spend_day = ?, reasons = ?, "
                "error = ?, updated_at = ?, fee = ?, tokens = ? WHERE id = ?",
                (
                    state,
                    str(value),
                    day if verdict.signs else None,
                    json.dumps(list(verdict.reasons)),
                    None if verdict.signs else "; ".join(verdict.reasons),
                    now,
                    str(fee),
                    _tokens_json(tokens or {}),
                    request_id,
                ),
            )
            return verdict, spent

    async def wallet_settle(
        self,
        request_id: int,
        state: str,
        now: float,
        *,
        tx_hash: str | None = None,
        error: str | None = None,
        only_from: tuple[str, ...] | None = None,
        fee: int | None = None,
        release: bool = False,
    ) -> bool:
        """Move a request to `state` (optionally only from one of `only_from`); False if it did not move.

        `fee` replaces the reserved fee with the one burnt; `release` gives the spend up (the
        transaction never ran: nothing left the account).
        """
        sql = (
            "UPDATE wallet_requests SET state = ?, tx_hash = COALESCE(?, tx_hash), error = ?, "
            "updated_at = ?, fee = COALESCE(?, fee)"
            + (", spend_day = NULL" if release else "")
            + " WHERE id = ?"
        )
        args: list[object] = [state, tx_hash, error, now, None if fee is None else str(fee), request_id]
        if only_from:
            sql += f" AND state IN ({', '.join('?' for _ in only_from)})"
            args.extend(only_from)
        cur = await self._write(sql, args)
        return cur.rowcount == 1

    async def wallet_set_approval(self, request_id: int, approval_id: str) -> None:
        await self._write(
            "UPDATE wallet_requests SET approval_id = ? WHERE id = ?", (approval_id, request_id)
        )

    async def wallet_request(self, request_id: int) -> WalletRequest | None:
        async with self._conn.execute(
            f"SELECT {_WALLET_COLUMNS} FROM wallet_requests WHERE id = ?", (request_id,)
        ) as cur:
            row = await cur.fetchone()
        return None if row is None else _wallet_request(row)

    async def wallet_requests(self, state: str | None = None, limit: int = 50) -> list[WalletRequest]:
        """Most recent first."""
        where, args = ("WHERE state = ?", (state, limit)) if state else ("", (limit,))
        async with self._conn.execute(
            f"SELECT {_WALLET_COLUMNS} FROM wallet_requests {where} ORDER BY id DESC LIMIT ?", args
        ) as cur:
            return [_wallet_request(row) for row in await cur.fetchall()]

    async def wallet_requests_page(
        self, *, group: str | None = None, state: str | None = None, offset: int = 0, limit: int = 50
    ) -> list[WalletRequest]:
        """Most recent first, optionally of one group and/or in one state: at most `limit` rows
        from `offset` (the dashboard asks for one more than it shows, to know if there are more)."""
        clauses: list[str] = []
        args: list[object] = []
        if group:
            clauses.append("group_folder = ?")
            args.append(group)
        if state:
            clauses.append("state = ?")
            args.append(state)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        async with self._conn.execute(
            f"SELECT {_WALLET_COLUMNS} FROM wallet_requests {where} ORDER BY id DESC LIMIT ? OFFSET ?",
            (*args, max(0, limit), max(0, offset)),
        ) as cur:
            return [_wallet_request(row) for row in await cur.fetchall()]

    async def wallet_settings(self) -> dict[str, str]:
        """Policy overrides set with `/policy set` (JSON-encoded values by setting name)."""
        async with self._conn.execute("SELECT name, value FROM wallet_settings ORDER BY name") as cur:
            return {str(name): str(value) for name, value in await cur.fetchall()}

    async def set_wallet_setting(self, name: str, value: str | None) -> None:
        if value is None:
            await self._write("DELETE FROM wallet_settings WHERE name = ?", (name,))
        else:
            await self._write(
                "INSERT INTO wallet_settings (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
