"""The chain side of a wallet request: a fresh nonce, signing in the host, submitting, recording.

:class:`TxExecutor` runs only after a verdict that signs has been recorded
(:class:`~gateway.wallet.service.WalletService` decides; this module never does).  It owns the
two things signing needs that must survive between requests:

* the nonces handed out per key, so two concurrent requests never sign with the same nonce
  (NEAR would reject the second), resynchronised with the chain after a rejection;
* the settlement of each outcome in the store (invariant 5, `gateway.wallet.fees`/`tokens`):
  value stays charged once a transaction ran, whatever its outcome; the fee reservation becomes
  the fee actually burnt once the outcome is final; only a transaction the node rejected
  unexecuted gives its charge back; and an outcome that stayed unknown keeps everything charged.

The key is decrypted only inside :meth:`TxExecutor.sign_and_submit`'s ``with`` block and wiped on
leaving it (:meth:`~gateway.wallet.keystore.KeyStore.signer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.ipc_protocol import IpcError
from gateway.scheduler import Clock
from gateway.store import Store
from gateway.wallet.analysis import TxAnalysis
from gateway.wallet.fees import max_fee, tokens_burnt
from gateway.wallet.keyinfo import KeyInfo
from gateway.wallet.keystore import KeyStore
from gateway.wallet.rpc import NearRpc
from gateway.wallet.rpc_errors import InvalidTransaction, TransientRpcError
from gateway.wallet.transactions import Action, Transaction

WAIT_UNTIL = "EXECUTED_OPTIMISTIC"


class TxExecutor:
    """Builds, signs and submits the transactions of one :class:`WalletService`."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        rpc: NearRpc,
        notify_main: Callable[[str], Awaitable[None]],
        clock: Clock,
    ) -> None:
        self._store = store
        self._keys = keys
        self._rpc = rpc
        self._notify_main = notify_main
        self._clock = clock
        self._nonce_locks: dict[str, asyncio.Lock] = {}
        self._last_nonce: dict[str, int] = {}

    async def build(
        self, key: KeyInfo, receiver: str, actions: tuple[Action, ...]
    ) -> tuple[Transaction, int]:
        """A transaction with a fresh nonce (never reused by concurrent requests) and block hash,
        and the most it can burn in fees at the node's current gas price."""
        lock = self._nonce_locks.setdefault(key.name, asyncio.Lock())
        async with lock:
            view, gas_price = await asyncio.gather(
                self._rpc.access_key(key.account_id, key.public_key), self._rpc.gas_price()
            )
            nonce = max(view.nonce, self._last_nonce.get(key.name, 0)) + 1
            self._last_nonce[key.name] = nonce
        tx = Transaction(key.account_id, key.public_key, nonce, receiver, view.block_hash, actions)
        return tx, max_fee(tx, gas_price)

    async def sign_and_submit(
        self, request_id: int, key: KeyInfo, tx: Transaction, analysis: TxAnalysis, approved_by: str | None
    ) -> dict[str, Any]:
        """Sign ``tx`` for recorded request ``request_id``, submit it, settle it; the agent's answer.

        A rejection or an unknown outcome is an :class:`IpcError` naming the request (and the
        hash, when the agent should look it up later); an owner-approved request is also reported
        to the main chat, because the owner is waiting for it there."""
        with self._keys.signer(key.name) as pair:
            signed = tx.sign(pair)
        tx_hash = signed.hash
        try:
            outcome = await self._rpc.send_tx(signed, wait_until=WAIT_UNTIL)
        except InvalidTransaction as exc:
            self._last_nonce.pop(key.name, None)  # resync with the chain next time
            # Rejected before it ran: nothing left the account, so its charge is given back.
            await self._store.wallet_settle(
                request_id, "failed", self._clock.now(), tx_hash=tx_hash, error=str(exc), release=True
            )
            raise IpcError("near_rejected", f"NEAR request #{request_id}: {exc}") from None
        except TransientRpcError as exc:
            # It may or may not have landed: keep the spend counted, let the agent check the hash.
            await self._store.wallet_settle(
                request_id, "submitted", self._clock.now(), tx_hash=tx_hash, error=str(exc)
            )
            raise IpcError(
                "near_unknown",
                f"NEAR request #{request_id}: transaction {tx_hash} was sent but its outcome is unknown "
                f"({exc}); check it later with its hash",
            ) from None
        failed = outcome.status == "failure"
        # It ran (or is running): its value stays charged whatever the outcome; once the outcome
        # is final the fee reservation becomes the fee burnt.
        await self._store.wallet_settle(
            request_id,
            "failed" if failed else "submitted",
            self._clock.now(),
            tx_hash=tx_hash,
            error=outcome.error if failed else None,
            fee=None if outcome.status == "pending" else tokens_burnt(outcome.raw),
        )
        summary = analysis.summary.replace("\n", "; ")
        if approved_by is not None:
            verb = "failed on chain" if failed else "sent"
            await self._notify_main(f"NEAR request #{request_id} {verb}: {summary}\nTransaction: {tx_hash}")
        result: dict[str, Any] = {
            "request_id": request_id,
            "status": outcome.status,
            "transaction_hash": tx_hash,
            "signer_id": key.account_id,
            "receiver_id": tx.receiver_id,
            "summary": analysis.summary,
            "approved_by": approved_by or "policy (auto-approved)",
        }
        if failed:
            result["error"] = outcome.error
        return result
