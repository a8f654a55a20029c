"""The host side of the agents' `near_*` tools: analyze → policy → sign | ask the owner | refuse.

Agents never see keys. A request arrives over the group's IPC socket (identity = socket),
is turned into a transaction, analyzed, and checked against the owner's policy; the verdict
and the spend it allows are written in one database transaction (`Store.wallet_decide`),
so concurrent requests cannot pass the daily limit together. Then:

* auto-approve: fetch nonce and block hash, sign in the host, submit, return the hash;
* needs approval: post a prompt with Approve/Deny into the main chat and wait; on Approve
  the transaction is rebuilt with a fresh nonce and block hash, analyzed and checked again
  (`Store.wallet_clear_approved`: deny rules and the daily limit still apply), signed and
  submitted, and the hash is reported to the main chat and to the agent; on Deny or expiry
  the agent is told;
* deny: the agent is told why; nothing is signed.

What a signed transaction costs the day (invariant 5, `gateway.wallet.fees`/`tokens`): its
attached value, the tokens it moves, and a fee reservation (the most it can burn at the node's
gas price) are charged when the verdict is recorded; once the outcome is known the reservation
is replaced by the fee actually burnt. Value stays charged even when the transaction fails on
chain; only a transaction the node rejected unexecuted gives its charge back.

Errors given to agents carry reasons, never key material (invariant 5).

This module is the intake and the decisions: which key, which verdict, when to ask the owner
and what to re-check after. Around it: `params` parses what an agent sends, `execution` is the
chain side (nonce, signing, submitting, settling the spend), `owner_views` is what the owner
reads (approval prompts, `/wallet`, `/policy`) and how `/policy set` is validated.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from core.models import WalletDraft
from core.wallet.amounts import format_near
from core.wallet.settings import WalletConfig, WalletPolicy
from gateway.approvals import new_approval_id
from gateway.ipc_protocol import Caller, IpcError
from gateway.scheduler import Clock, SystemClock
from gateway.store import Store
from gateway.wallet import nep413, owner_views
from gateway.wallet.analysis import TxAnalysis, analyze
from gateway.wallet.decision import DaySpend, Decision
from gateway.wallet.execution import TxExecutor
from gateway.wallet.keyinfo import KeyInfo, WalletError
from gateway.wallet.keystore import KeyStore
from gateway.wallet.owner_views import SETTABLE, setting_value
from gateway.wallet.params import (
    MAX_MESSAGE_CHARS,
    excerpt,
    parse_account,
    parse_amount,
    parse_args,
    parse_gas,
    parse_method,
    parse_nonce,
)
from gateway.wallet.policy import PolicyEngine, utc_day
from gateway.wallet.rpc import NearRpc
from gateway.wallet.rpc_errors import RpcError
from gateway.wallet.tokens import ledger_charges
from gateway.wallet.transactions import Action, FunctionCall, Transfer

log = logging.getLogger(__name__)


class ApprovalAsker(Protocol):
    """`gateway.approvals.Approvals`, as far as the wallet needs it."""

    async def request_approval(
        self,
        title: str,
        details: str,
        requester_group: str,
        expires_in: float = ...,
        approval_id: str | None = None,
    ) -> str: ...

    async def void(self, approval_id: str) -> bool: ...


def _denied(reasons: tuple[str, ...] | list[str], prefix: str = "refused by the wallet policy") -> IpcError:
    return IpcError("denied", f"{prefix}: " + "; ".join(reasons))


class WalletService:
    """One per gateway: serves every group's `near_*` requests and the owner's wallet commands."""

    def __init__(
        self,
        config: WalletConfig,
        store: Store,
        keys: KeyStore,
        rpc: NearRpc,
        approvals: ApprovalAsker,
        notify_main: Callable[[str], Awaitable[None]],
        clock: Clock | None = None,
    ) -> None:
        self.config = config
        self._store = store
        self._keys = keys
        self._rpc = rpc
        self._approvals = approvals
        self._notify_main = notify_main
        self.clock: Clock = clock or SystemClock()
        self.engine = PolicyEngine(config.policy)
        self._executor = TxExecutor(store, keys, rpc, notify_main, self.clock)

    async def start(self) -> None:
        """Apply `/policy set` overrides; requests left waiting by a previous run are void."""
        self.engine = PolicyEngine(self._policy_with(await self._store.wallet_settings()))
        for request in await self._store.wallet_requests(state="pending", limit=1000):
            await self._store.wallet_settle(
                request.id,
                "rejected",
                self.clock.now(),
                error="the gateway restarted while it waited",
                only_from=("pending",),
            )
            if request.approval_id is None:
                continue
            # its prompt must not invite a click that signs nothing
            if not await self._approvals.void(request.approval_id):
                approval = await self._store.approval(request.approval_id)
                if approval is not None and approval.state == "approved":  # the prompt says "Approved"
                    await self._notify_main(
                        f"NEAR request #{request.id} was approved but NOT signed: the gateway restarted "
                        "before it could sign. Ask again if it is still wanted."
                    )

    async def aclose(self) -> None:
        await self._rpc.aclose()

    # -- the IPC entry point ----------------------------------------------------------------

    async def handle(self, caller: Caller, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Serve one authorized `near_*` IPC request for `caller`."""
        try:
            if method == "near_balance":
                return await self._balance(caller, params)
            if method == "near_view":
                return await self._view(params)
            if method == "near_transfer":
                key = self._key_for(caller, params.get("key"))
                receiver = parse_account(params["receiver_id"], "receiver_id")
                amount = parse_amount(params["amount"], "amount")
                if amount == 0:
                    raise IpcError("bad_params", "amount must be more than 0 NEAR")
                return await self._transact(caller, key, receiver, (Transfer(amount),))
            if method == "near_function_call":
                key = self._key_for(caller, params.get("key"))
                receiver = parse_account(params["receiver_id"], "receiver_id")
                call = FunctionCall(
                    parse_method(params["method"]),
                    parse_args(params.get("args")),
                    parse_gas(params.get("gas")),
                    parse_amount(params.get("deposit", "0"), "deposit"),
                )
                return await self._transact(caller, key, receiver, (call,))
            if method == "near_sign_message":
                return await self._sign_message(caller, params)
        except RpcError as exc:
            raise IpcError("near_rpc", str(exc)) from None
        except WalletError as exc:
            raise IpcError("wallet", str(exc)) from None
        raise IpcError("unknown_method", f"unknown method {method!r}")

    # -- reads --------------------------------------------------------------------------------

    async def _balance(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        if "account_id" in params:
            account_id = parse_account(params["account_id"], "account_id")
        else:
            account_id = self._key_for(caller, params.get("key")).account_id
        view = await self._rpc.account(account_id)
        return {
            "account_id": account_id,
            "balance_near": format_near(view.amount),
            "locked_near": format_near(view.locked),
            "balance_yocto": str(view.amount),
            "storage_usage": view.storage_usage,
        }

    async def _view(self, params: dict[str, Any]) -> dict[str, Any]:
        contract = parse_account(params["contract_id"], "contract_id")
        args = params.get("args")
        if isinstance(args, str):
            args = parse_args(args)
        result = await self._rpc.view_call(contract, parse_method(params["method"]), args)
        if isinstance(result, bytes):
            result = base64.b64encode(result).decode("ascii")
        return {"contract_id": contract, "method": params["method"], "result": result}

    # -- keys ---------------------------------------------------------------------------------

    def _key_for(self, caller: Caller, name: object) -> KeyInfo:
        """The key the request names (or the default); the same refusal whether missing or forbidden."""
        usable = [k for k in self._keys.list() if self.engine.may_use_key(caller.folder, k.name)]
        if name is None:
            name = self.config.default_key
            if name is None and len(usable) == 1:
                return usable[0]
            if name is None:
                names = ", ".join(k.name for k in usable) or "none"
                raise IpcError("bad_params", f"name the key to use ('key'); keys this group may use: {names}")
        if not isinstance(name, str):
            raise IpcError("bad_params", "'key' must be a key name")
        key = next((k for k in usable if k.name == name), None)
        if key is None:  # existence of keys this group may not use is not revealed
            raise IpcError("denied", f"this group may not use a wallet key named {name!r}")
        if key.network != self.config.network:  # never sign for one chain through another's RPC
            raise IpcError(
                "denied",
                f"wallet key {key.name!r} is for {key.network}, but this gateway's [wallet] network is "
                f"{self.config.network}",
            )
        return key

    # -- transactions -------------------------------------------------------------------------

    def _check(
        self, caller: Caller, key: KeyInfo, analysis: TxAnalysis, fee: int, owner_approved: bool = False
    ) -> Callable[[DaySpend], Decision]:
        """The verdict as a function of today's spend: the store calls it inside its write transaction."""

        def decide(spent: DaySpend) -> Decision:
            return self.engine.decide(
                analysis,
                group=caller.folder,
                key_name=key.name,
                key_permission=key.permission,
                spent_today=spent.near,
                owner_approved=owner_approved,
                tokens_spent_today=spent.tokens,
                fee_reserve=fee,
            )

        return decide

    async def _transact(
        self, caller: Caller, key: KeyInfo, receiver: str, actions: tuple[Action, ...]
    ) -> dict[str, Any]:
        tx, fee = await self._executor.build(key, receiver, actions)
        analysis = analyze(tx)
        draft = WalletDraft(
            group_folder=caller.folder,
            key_name=key.name,
            signer_id=key.account_id,
            receiver_id=receiver,
            kind="transaction",
            summary=analysis.summary,
            value=analysis.total_value,
            fee=fee,
            tokens=ledger_charges(analysis.token_moves),
        )
        now = self.clock.now()
        request_id, verdict, spent = await self._store.wallet_decide(
            draft, self._check(caller, key, analysis, fee), utc_day(now), now
        )
        log.info(
            "wallet request %d from %s: %s (%s)",
            request_id,
            caller.folder,
            verdict.outcome,
            "; ".join(verdict.reasons) or "within policy",
        )
        if verdict.outcome == "deny":
            raise _denied(verdict.reasons)
        if verdict.outcome == "auto_approve":
            return await self._executor.sign_and_submit(request_id, key, tx, analysis, approved_by=None)
        return await self._ask_owner(
            caller, key, request_id, receiver, actions, analysis, fee, verdict, spent
        )

    async def _ask_owner(
        self,
        caller: Caller,
        key: KeyInfo,
        request_id: int,
        receiver: str,
        actions: tuple[Action, ...],
        analysis: TxAnalysis,
        fee: int,
        verdict: Decision,
        spent: DaySpend,
    ) -> dict[str, Any]:
        title, details = owner_views.transaction_prompt(
            request_id,
            caller.folder,
            key,
            receiver,
            analysis,
            fee,
            verdict.reasons,
            spent,
            self.engine.policy,
        )
        await self._ask(request_id, title, details, caller)
        now = self.clock.now()
        # Fresh nonce and block hash (minutes may have passed), then the same checks once more.
        tx, fee = await self._executor.build(key, receiver, actions)
        fresh = analyze(tx)
        cleared = await self._store.wallet_clear_approved(
            request_id,
            fresh.total_value,
            self._check(caller, key, fresh, fee, owner_approved=True),
            utc_day(now),
            now,
            fee=fee,
            tokens=ledger_charges(fresh.token_moves),
        )
        if cleared is None:
            raise IpcError("denied", f"NEAR request #{request_id} is no longer pending")
        recheck, _ = cleared
        if not recheck.signs:
            await self._notify_main(
                f"NEAR request #{request_id} was approved but not signed: " + "; ".join(recheck.reasons)
            )
            raise _denied(recheck.reasons, f"NEAR request #{request_id} was approved but refused on re-check")
        return await self._executor.sign_and_submit(request_id, key, tx, fresh, approved_by="owner")

    async def _ask(self, request_id: int, title: str, details: str, caller: Caller) -> None:
        """Wait for the owner's button; returns if approved, else tells the agent why not."""
        approval_id = new_approval_id()
        await self._store.wallet_set_approval(request_id, approval_id)  # so a restart can void it
        decision = await self._approvals.request_approval(
            title, details, caller.folder, self.config.approval_timeout_s, approval_id=approval_id
        )
        if decision == "approved":
            return
        why = "the owner denied it" if decision == "denied" else "the approval request expired"
        await self._store.wallet_settle(
            request_id, "rejected", self.clock.now(), error=why, only_from=("pending",)
        )
        raise IpcError("denied", f"NEAR request #{request_id} was not signed: {why}")

    # -- NEP-413 ------------------------------------------------------------------------------

    async def _sign_message(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        key = self._key_for(caller, params.get("key"))
        message = params["message"]
        if len(message) > MAX_MESSAGE_CHARS:
            raise IpcError("too_large", f"message exceeds {MAX_MESSAGE_CHARS} characters")
        recipient = params["recipient"]
        if not recipient or len(recipient) > 256 or not recipient.isprintable():
            raise IpcError("bad_params", "recipient must be 1-256 printable characters")
        nonce = parse_nonce(params.get("nonce"))
        callback = params.get("callback_url")
        draft = WalletDraft(
            group_folder=caller.folder,
            key_name=key.name,
            signer_id=key.account_id,
            receiver_id=recipient[:64],
            kind="message",
            summary=f"Sign message for {recipient}: {excerpt(message)}",
            value=0,
        )
        now = self.clock.now()

        def decide(_spent: DaySpend) -> Decision:
            return self.engine.decide_message(
                group=caller.folder, key_name=key.name, key_permission=key.permission
            )

        request_id, verdict, _ = await self._store.wallet_decide(draft, decide, utc_day(now), now)
        if verdict.outcome == "deny":
            raise _denied(verdict.reasons)
        if verdict.outcome == "needs_approval":
            title, details = owner_views.message_prompt(
                request_id, caller.folder, key, recipient, message, verdict.reasons
            )
            await self._ask(request_id, title, details, caller)
            recheck = decide(DaySpend())  # the policy may have changed while the prompt waited
            if recheck.outcome == "deny":
                await self._store.wallet_settle(
                    request_id, "rejected", self.clock.now(), error="; ".join(recheck.reasons)
                )
                raise _denied(
                    recheck.reasons, f"NEAR request #{request_id} was approved but refused on re-check"
                )
        with self._keys.signer(key.name) as pair:
            signed = nep413.sign_message(pair, key.account_id, message, nonce, recipient, callback)
        await self._store.wallet_settle(request_id, "submitted", self.clock.now())
        return {"request_id": request_id, "nonce": base64.b64encode(nonce).decode("ascii"), **signed}

    # -- owner views (admin commands) ---------------------------------------------------------

    async def status_text(self) -> str:
        return await owner_views.status_text(
            self.engine.policy, self._keys, self._rpc, self._store, self.clock.now()
        )

    async def status(self, balance_timeout_s: float | None = None) -> owner_views.WalletStatus:
        """`/wallet` as data (the dashboard's Wallet page), each balance lookup bounded by the timeout."""
        return await owner_views.wallet_status(
            self.engine.policy, self._keys, self._rpc, self._store, self.clock.now(), balance_timeout_s
        )

    def policy_text(self) -> str:
        return owner_views.policy_text(self.engine.policy)

    async def set_policy(self, name: str, value: str | None) -> str:
        """`/policy set NAME VALUE` (None resets to the config file's value); validated like the config."""
        if name not in SETTABLE:
            raise ValueError(f"unknown or read-only setting {name!r}; settable: {', '.join(SETTABLE)}")
        overrides = await self._store.wallet_settings()
        if value is None:
            overrides.pop(name, None)
        else:
            overrides[name] = json.dumps(setting_value(name, value))
        policy = self._policy_with(overrides)  # raises ValueError with the pydantic message
        await self._store.set_wallet_setting(name, overrides.get(name))
        self.engine = PolicyEngine(policy)
        shown = policy.model_dump(mode="json")[name]
        return f"{name} = {', '.join(shown) if isinstance(shown, list) else shown}"

    def _policy_with(self, overrides: dict[str, str]) -> WalletPolicy:
        return owner_views.policy_with(self.config.policy, overrides)
