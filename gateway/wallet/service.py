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
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from pydantic import ValidationError

from core.models import WalletDraft
from core.wallet.accounts import InvalidAccountId, validate_account_id
from core.wallet.amounts import format_near, parse_near
from core.wallet.settings import WalletConfig, WalletPolicy
from gateway.approvals import new_approval_id
from gateway.ipc_protocol import Caller, IpcError
from gateway.scheduler import Clock, SystemClock
from gateway.store import Store
from gateway.wallet import nep413
from gateway.wallet.analysis import TxAnalysis, analyze
from gateway.wallet.decision import DaySpend, Decision
from gateway.wallet.fees import max_fee, tokens_burnt
from gateway.wallet.keyinfo import KeyInfo, WalletError
from gateway.wallet.keystore import KeyStore
from gateway.wallet.policy import PolicyEngine, utc_day
from gateway.wallet.rpc import NearRpc
from gateway.wallet.rpc_errors import InvalidTransaction, RpcError, TransientRpcError
from gateway.wallet.tokens import UNBOUNDED_CHARGE, ledger_charges
from gateway.wallet.transactions import Action, FunctionCall, Transaction, Transfer

log = logging.getLogger(__name__)

DEFAULT_GAS = 30 * 10**12  # 30 Tgas: enough for ordinary calls; agents may ask for up to 300
MAX_GAS = 300 * 10**12
MAX_ARGS_BYTES = 64 * 1024
MAX_MESSAGE_CHARS = 16 * 1024
WAIT_UNTIL = "EXECUTED_OPTIMISTIC"

# `/policy set` may change these; lists take comma-separated values.
SETTABLE = (
    "auto_approve_max",
    "daily_limit",
    "whitelist_max",
    "transfer_whitelist",
    "stake_validators",
    "sign_messages",
    "deny_full_access_operations",
    "deny_delete_account",
)
_LISTS = ("transfer_whitelist", "stake_validators")
_BOOLS = ("deny_full_access_operations", "deny_delete_account")


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
        self._nonce_locks: dict[str, asyncio.Lock] = {}
        self._last_nonce: dict[str, int] = {}

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
                receiver = _account(params["receiver_id"], "receiver_id")
                amount = _amount(params["amount"], "amount")
                if amount == 0:
                    raise IpcError("bad_params", "amount must be more than 0 NEAR")
                return await self._transact(caller, key, receiver, (Transfer(amount),))
            if method == "near_function_call":
                key = self._key_for(caller, params.get("key"))
                receiver = _account(params["receiver_id"], "receiver_id")
                call = FunctionCall(
                    _method(params["method"]),
                    _args_bytes(params.get("args")),
                    _gas(params.get("gas")),
                    _amount(params.get("deposit", "0"), "deposit"),
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
            account_id = _account(params["account_id"], "account_id")
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
        contract = _account(params["contract_id"], "contract_id")
        args = params.get("args")
        if isinstance(args, str):
            args = _args_bytes(args)
        result = await self._rpc.view_call(contract, _method(params["method"]), args)
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

    async def _build(
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
        tx, fee = await self._build(key, receiver, actions)
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
            return await self._sign_and_submit(request_id, key, tx, analysis, approved_by=None)
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
        policy = self.engine.policy
        lines = [
            f"Group: {caller.folder}",
            f"Key: {key.name} — signs as {key.account_id} ({key.network})",
            f"Receiver: {receiver}",
            "Actions:",
            *(f"  {i}. {a.summary}" for i, a in enumerate(analysis.actions, 1)),
            f"Total: {format_near(analysis.total_value)} NEAR (+ fees, at most {format_near(fee)} NEAR)",
            *self._token_lines(analysis, spent),
            f"Today's spend: {format_near(spent.near)} of {format_near(policy.daily_limit)} NEAR (UTC day)",
            "Needs your approval because:",
            *(f"  • {reason}" for reason in verdict.reasons),
        ]
        title = f"NEAR request #{request_id} from {caller.folder}: {format_near(analysis.total_value)} NEAR"
        title += f" → {receiver}"
        await self._ask(request_id, title, "\n".join(lines), caller)
        now = self.clock.now()
        # Fresh nonce and block hash (minutes may have passed), then the same checks once more.
        tx, fee = await self._build(key, receiver, actions)
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
        return await self._sign_and_submit(request_id, key, tx, fresh, approved_by="owner")

    def _token_lines(self, analysis: TxAnalysis, spent: DaySpend) -> list[str]:
        """Per token contract moved: today's base units against its limit, for the owner's prompt."""
        return [
            _token_line(contract, spent, self.engine.policy)
            for contract in dict.fromkeys(move.contract for move in analysis.token_moves)
        ]

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

    async def _sign_and_submit(
        self, request_id: int, key: KeyInfo, tx: Transaction, analysis: TxAnalysis, approved_by: str | None
    ) -> dict[str, Any]:
        with self._keys.signer(key.name) as pair:
            signed = tx.sign(pair)
        tx_hash = signed.hash
        try:
            outcome = await self._rpc.send_tx(signed, wait_until=WAIT_UNTIL)
        except InvalidTransaction as exc:
            self._last_nonce.pop(key.name, None)  # resync with the chain next time
            # Rejected before it ran: nothing left the account, so its charge is given back.
            await self._store.wallet_settle(
                request_id, "failed", self.clock.now(), tx_hash=tx_hash, error=str(exc), release=True
            )
            raise IpcError("near_rejected", f"NEAR request #{request_id}: {exc}") from None
        except TransientRpcError as exc:
            # It may or may not have landed: keep the spend counted, let the agent check the hash.
            await self._store.wallet_settle(
                request_id, "submitted", self.clock.now(), tx_hash=tx_hash, error=str(exc)
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
            self.clock.now(),
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

    # -- NEP-413 ------------------------------------------------------------------------------

    async def _sign_message(self, caller: Caller, params: dict[str, Any]) -> dict[str, Any]:
        key = self._key_for(caller, params.get("key"))
        message = params["message"]
        if len(message) > MAX_MESSAGE_CHARS:
            raise IpcError("too_large", f"message exceeds {MAX_MESSAGE_CHARS} characters")
        recipient = params["recipient"]
        if not recipient or len(recipient) > 256 or not recipient.isprintable():
            raise IpcError("bad_params", "recipient must be 1-256 printable characters")
        nonce = _nonce(params.get("nonce"))
        callback = params.get("callback_url")
        draft = WalletDraft(
            group_folder=caller.folder,
            key_name=key.name,
            signer_id=key.account_id,
            receiver_id=recipient[:64],
            kind="message",
            summary=f"Sign message for {recipient}: {_excerpt(message)}",
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
            details = "\n".join(
                [
                    f"Group: {caller.folder}",
                    f"Key: {key.name} — signs as {key.account_id} ({key.network})",
                    f"Recipient: {recipient}",
                    f"Message: {_excerpt(message, 1500)}",
                    "A NEP-413 signature proves to the recipient that you control this account.",
                    *(f"  • {reason}" for reason in verdict.reasons),
                ]
            )
            title = f"NEAR request #{request_id} from {caller.folder}: sign a message for {recipient[:60]}"
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
        policy = self.engine.policy
        keys = self._keys.list()
        lines = ["Wallet keys:" if keys else "Wallet keys: none (add one with `clawgate wallet generate`)"]
        for key in keys:
            try:
                view = await self._rpc.account(key.account_id)
                balance = f"{format_near(view.amount)} NEAR"
            except RpcError as exc:
                balance = f"balance unavailable ({exc})"
            groups = ", ".join(policy.groups_for_key(key.name))
            lines.append(
                f"• {key.name}: {key.account_id} ({key.network}, {key.permission.describe()}) — {balance};"
                f" groups: {groups}"
            )
        today = utc_day(self.clock.now())
        spent = await self._store.wallet_day(today)
        limit = format_near(policy.daily_limit)
        lines.append(
            f"Today's spend ({today} UTC): {format_near(spent.near)} of {limit} NEAR (value and fees)"
        )
        lines.extend(
            _token_line(c, spent, policy) for c in sorted(set(spent.tokens) | set(policy.token_limits))
        )
        pending = await self._store.wallet_requests(state="pending", limit=1000)
        if pending:
            lines.append(f"Waiting for approval: {', '.join(f'#{r.id}' for r in pending)}")
        return "\n".join(lines)

    def policy_text(self) -> str:
        dumped = self.engine.policy.model_dump(mode="json")
        lines = ["Wallet policy (amounts in NEAR):"]
        for name, value in dumped.items():
            if name == "token_limits":
                value = (
                    "; ".join(
                        f"{contract} daily {limit['daily_limit']}, auto up to "
                        f"{limit['auto_approve_max'] or limit['daily_limit']}"
                        for contract, limit in value.items()
                    )
                    or "none (token transfers always need approval)"
                )
            elif name == "function_calls":
                rules = [
                    f"{r['receiver']} {','.join(r['methods'])} max deposit {r['max_deposit']}"
                    f"{' auto' if r['auto_approve'] else ''}"
                    for r in value
                ]
                value = "; ".join(rules) or "none"
            elif isinstance(value, list):
                value = ", ".join(value) or "none"
            elif isinstance(value, dict):
                value = "; ".join(f"{k}: {', '.join(v)}" for k, v in value.items()) or "main only"
            lines.append(f"• {name}: {value}")
        return "\n".join(lines)

    async def set_policy(self, name: str, value: str | None) -> str:
        """`/policy set NAME VALUE` (None resets to the config file's value); validated like the config."""
        if name not in SETTABLE:
            raise ValueError(f"unknown or read-only setting {name!r}; settable: {', '.join(SETTABLE)}")
        overrides = await self._store.wallet_settings()
        if value is None:
            overrides.pop(name, None)
        else:
            overrides[name] = json.dumps(_setting_value(name, value))
        policy = self._policy_with(overrides)  # raises ValueError with the pydantic message
        await self._store.set_wallet_setting(name, overrides.get(name))
        self.engine = PolicyEngine(policy)
        shown = policy.model_dump(mode="json")[name]
        return f"{name} = {', '.join(shown) if isinstance(shown, list) else shown}"

    def _policy_with(self, overrides: dict[str, str]) -> WalletPolicy:
        data = self.config.policy.model_dump(mode="json")
        for name, raw in overrides.items():
            if name in SETTABLE:
                data[name] = json.loads(raw)
        try:
            return WalletPolicy.model_validate(data)
        except ValidationError as exc:  # show the readable part, naming the setting
            problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
            raise ValueError("; ".join(problems)) from None


def _token_line(contract: str, spent: DaySpend, policy: WalletPolicy) -> str:
    used = spent.tokens.get(contract, 0)
    shown = "an unbounded amount" if used >= UNBOUNDED_CHARGE else str(used)
    limit = policy.token_limits.get(contract)
    cap = f" of {limit.daily_limit}" if limit is not None else " (no token limit: always asks)"
    return f"Today's {contract} tokens: {shown}{cap} base units"


# -- parameter parsing (agent input is hostile: clear errors, nothing half-done) --------------


def _setting_value(name: str, value: str) -> object:
    if name in _LISTS:
        return [v.strip() for v in value.split(",") if v.strip()]
    if name in _BOOLS:
        lowered = value.lower()
        if lowered not in ("true", "false", "on", "off", "yes", "no"):
            raise ValueError(f"{name} must be true or false")
        return lowered in ("true", "on", "yes")
    return value


def _account(value: object, field: str) -> str:
    try:
        return validate_account_id(value)
    except InvalidAccountId as exc:
        raise IpcError("bad_params", f"{field}: {exc}") from None


def _amount(value: object, field: str) -> int:
    if not isinstance(value, str | int) or isinstance(value, bool):
        raise IpcError("bad_params", f'{field} must be a NEAR amount as a string, e.g. "1.5"')
    try:
        return parse_near(value)
    except ValueError as exc:
        raise IpcError("bad_params", f"{field}: {exc}") from None


def _method(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= 256 or not value.isprintable() or " " in value:
        raise IpcError("bad_params", "method must be a contract method name")
    return value


def _args_bytes(value: object) -> bytes:
    if value is None:
        return b"{}"
    if isinstance(value, dict):
        data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    elif isinstance(value, str):
        try:
            data = value.encode()
        except UnicodeEncodeError:  # a lone surrogate ("\udcff" in the IPC JSON) is no UTF-8
            raise IpcError("bad_params", "args must be valid Unicode text") from None
    else:
        raise IpcError("bad_params", "args must be a JSON object (or a JSON string)")
    if len(data) > MAX_ARGS_BYTES:
        raise IpcError("too_large", f"args exceed {MAX_ARGS_BYTES} bytes")
    return data


def _gas(value: object) -> int:
    if value is None:
        return DEFAULT_GAS
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_GAS:
        raise IpcError("bad_params", f"gas must be an integer between 1 and {MAX_GAS} (300 Tgas)")
    return value


def _nonce(value: object) -> bytes:
    if value is None:
        return secrets.token_bytes(nep413.NONCE_LEN)
    try:
        nonce = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise IpcError("bad_params", "nonce must be base64 of 32 bytes") from None
    if len(nonce) != nep413.NONCE_LEN:
        raise IpcError("bad_params", "nonce must be base64 of 32 bytes")
    return nonce


def _excerpt(text: str, limit: int = 200) -> str:
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
