"""A NEAR JSON-RPC node on loopback, for tests: real HTTP, NEAR-shaped results and errors.

It keeps just enough chain state to check what a real node checks before accepting a transaction
— block hash age, signature (verified independently with ``SignedTransaction.verify``), signer
and access key existence, nonce, function-call key permissions, balance — and applies Transfer,
CreateAccount, AddKey and DeleteKey. Function calls run against contracts registered with
``add_contract`` (e.g. ``FungibleToken``, a NEP-141 token); a contract that panics fails its
receipt the way nearcore does: the receipt's state changes are rolled back, its attached
deposits come back to the signer in a refund receipt, and the gas is burnt all the same
(``tx_fee`` at conversion, ``receipt_fee`` per executed receipt, both reported as
``tokens_burnt`` in the outcome).  Every ``send_tx`` attempt is recorded with its
``time.perf_counter()`` timestamp so tests can assert retry timing and "submitted exactly once".

Stdlib ``ThreadingHTTPServer`` in a daemon thread, so it works from sync and async tests alike.
Fault injection (``fail_next``) covers what a flaky node does: HTTP 500, 429 with Retry-After,
NEAR ``TIMEOUT_ERROR``, a dropped connection before or after the request was processed, an HTML
error page, and a mismatched JSON-RPC id.
"""

from __future__ import annotations

import base64
import binascii
import copy
import hashlib
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from gateway.wallet.base58 import b58decode, b58encode
from gateway.wallet.keys import PublicKey, signature_to_string
from gateway.wallet.transactions import (
    AddKey,
    CreateAccount,
    DeleteKey,
    FullAccessPermission,
    FunctionCall,
    SignedTransaction,
    Transfer,
)

FAULT_KINDS = ("http500", "http429", "timeout_error", "disconnect", "drop_response", "html", "wrong_id")
VALID_WAIT = ("NONE", "INCLUDED", "EXECUTED_OPTIMISTIC", "INCLUDED_FINAL", "EXECUTED", "FINAL")
Permission = str | dict[str, Any]
ViewFn = Callable[[Any], Any]


class _RpcFailure(Exception):
    """Raised inside the server to answer with a NEAR-shaped JSON-RPC error."""

    def __init__(self, error: dict[str, Any], http_status: int = 200) -> None:
        super().__init__(error.get("cause", {}).get("name") or error.get("name"))
        self.error = error
        self.http_status = http_status


def handler_error(
    cause: str, info: dict[str, Any], data: object = None, http_status: int = 200
) -> _RpcFailure:
    return _RpcFailure(
        {
            "name": "HANDLER_ERROR",
            "cause": {"name": cause, "info": info},
            "code": -32000,
            "message": "Server error",
            "data": data if data is not None else json.dumps(info),
        },
        http_status,
    )


def invalid_tx(err: object) -> _RpcFailure:
    """How nearcore reports a rejected transaction (InvalidTxError nested in TxExecutionError)."""
    wrapped = {"TxExecutionError": {"InvalidTxError": err}}
    return _RpcFailure(
        {
            "name": "HANDLER_ERROR",
            "cause": {"name": "INVALID_TRANSACTION", "info": wrapped},
            "code": -32000,
            "message": "Server error",
            "data": wrapped,
        }
    )


def request_error(message: str) -> _RpcFailure:
    return _RpcFailure(
        {
            "name": "REQUEST_VALIDATION_ERROR",
            "cause": {"name": "PARSE_ERROR", "info": {"error_message": message}},
            "code": -32700,
            "message": "Parse error",
            "data": message,
        },
        400,
    )


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    drop: bool = False  # close the connection without answering


@dataclass
class _Fault:
    kind: str
    method: str | None
    retry_after: float | None


class FakeNearRpc:
    """``with FakeNearRpc() as near:`` (or ``start()``/``stop()``); point clients at ``near.url``.

    ``tx_fee`` (yoctoNEAR, default 0 so balances stay exact in tests) is burnt per transaction when
    it is converted into its receipt, ``receipt_fee`` when that receipt executes (succeeded or not).
    ``gas_price`` is what the ``gas_price`` method answers.
    ``validity_blocks`` is how many blocks a block hash stays usable (NEAR: ~86400).
    ``legacy_unknown_key_result`` makes view_access_key of a missing key answer the old way (a
    ``result`` with an ``error`` string) instead of an ``UNKNOWN_ACCESS_KEY`` error.
    ``auto_advance`` produces a new block on every request.
    ``idempotent = False`` makes a resubmitted, already-applied transaction fail validation again
    (InvalidNonce) instead of returning its outcome, like a node that does not deduplicate.
    """

    def __init__(
        self,
        *,
        tx_fee: int = 0,
        receipt_fee: int = 0,
        validity_blocks: int = 100,
        auto_advance: bool = True,
        chain_id: str = "sandbox",
    ) -> None:
        self.tx_fee = tx_fee
        self.receipt_fee = receipt_fee
        self.gas_price = 100_000_000
        self.contracts: dict[str, FakeContract] = {}
        self.validity_blocks = validity_blocks
        self.auto_advance = auto_advance
        self.chain_id = chain_id
        self.legacy_unknown_key_result = False
        self.idempotent = True
        self.accounts: dict[str, int] = {}
        self.access_keys: dict[tuple[str, str], dict[str, Any]] = {}
        self.submitted: list[SignedTransaction] = []
        self.received: list[dict[str, Any]] = []
        self.methods: list[str] = []
        self.outcomes: dict[str, dict[str, Any]] = {}
        self._views: dict[tuple[str, str], ViewFn] = {}
        self._faults: deque[_Fault] = deque()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._seed = os.urandom(8)
        self._blocks: list[bytes] = []  # index = height - 1
        self._expired_below = 0  # heights below this are expired regardless of age
        self.advance_block()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("FakeNearRpc is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeNearRpc:
        if self._httpd is not None:
            return self
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-near-rpc",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> FakeNearRpc:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- state helpers ---------------------------------------------------------------------

    def add_account(
        self,
        account_id: str,
        balance: int,
        keys: list[PublicKey] | tuple[PublicKey, ...] = (),
        *,
        nonce: int = 0,
        permission: Permission = "FullAccess",
    ) -> None:
        with self._lock:
            self.accounts[account_id] = balance
            for key in keys:
                self.add_key(account_id, key, nonce=nonce, permission=permission)

    def add_key(
        self, account_id: str, key: PublicKey, *, nonce: int = 0, permission: Permission = "FullAccess"
    ) -> None:
        with self._lock:
            self.access_keys[(account_id, str(key))] = {"nonce": nonce, "permission": permission}

    def balance(self, account_id: str) -> int | None:
        with self._lock:
            return self.accounts.get(account_id)

    def nonce(self, account_id: str, key: PublicKey) -> int | None:
        with self._lock:
            ak = self.access_keys.get((account_id, str(key)))
            return None if ak is None else ak["nonce"]

    def add_contract(self, contract_id: str, contract: FakeContract) -> None:
        """Deploy `contract` at `contract_id`: its methods run when a transaction calls them."""
        with self._lock:
            self.accounts.setdefault(contract_id, 0)
            self.contracts[contract_id] = contract
            for method, fn in contract.views().items():
                self._views[(contract_id, method)] = fn

    def add_view(self, contract_id: str, method: str, fn: ViewFn) -> None:
        """Register a view method: ``fn(args)`` gets the JSON-decoded args (raw bytes if not JSON)
        and returns a JSON-serialisable value, or ``bytes`` to return verbatim."""
        with self._lock:
            self.accounts.setdefault(contract_id, 0)
            self._views[(contract_id, method)] = fn

    @property
    def height(self) -> int:
        with self._lock:
            return len(self._blocks)

    @property
    def head_hash(self) -> bytes:
        with self._lock:
            return self._blocks[-1]

    def advance_block(self, n: int = 1) -> bytes:
        with self._lock:
            for _ in range(n):
                height = len(self._blocks) + 1
                self._blocks.append(hashlib.sha256(self._seed + height.to_bytes(8, "little")).digest())
            return self._blocks[-1]

    def expire_blocks(self) -> None:
        """Make every block hash handed out so far invalid for new transactions (then mint a fresh one)."""
        with self._lock:
            self._expired_below = len(self._blocks) + 1
            self.advance_block()

    def fail_next(
        self,
        n: int = 1,
        kind: str = "http500",
        *,
        method: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Make the next ``n`` requests (of ``method``, if given) fail with ``kind``.

        "disconnect" drops the connection before handling the request; "drop_response" handles it
        (a send_tx is applied) and then drops the connection — a lost response.
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        with self._lock:
            self._faults.extend(_Fault(kind, method, retry_after) for _ in range(n))

    def wait_for_submissions(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` transactions have been accepted; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.submitted) >= n, timeout)

    def sends(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)

    # -- HTTP ------------------------------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes; with Nagle on, the second waits ~40 ms
            # for the client's delayed ACK, which would dominate every timing through the fake.
            disable_nagle_algorithm = True
            timeout = 30

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                t = time.perf_counter()
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                reply = fake._handle(raw, t)
                if reply.drop:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                self.send_header("content-type", reply.content_type)
                self.send_header("content-length", str(len(reply.body)))
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply.body)

        return Handler

    def _take_fault(self, method: str) -> _Fault | None:
        with self._lock:
            for i, fault in enumerate(self._faults):
                if fault.method is None or fault.method == method:
                    del self._faults[i]
                    return fault
        return None

    def _handle(self, raw: bytes, t: float) -> _Reply:
        try:
            req = json.loads(raw)
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError:
            return self._reply(
                None, error=request_error("request body is not a JSON-RPC object").error, status=400
            )
        req_id = req.get("id")
        method = str(req.get("method"))
        params = req.get("params")
        with self._lock:
            self.methods.append(method)
            if self.auto_advance:
                self.advance_block()
        fault = self._take_fault(method)
        if fault is not None and fault.kind != "drop_response":
            if method in ("send_tx", "broadcast_tx_commit"):
                self._record_send(t, params, accepted=False, fault=fault.kind)
            match fault.kind:
                case "disconnect":
                    return _Reply(drop=True)
                case "http500":
                    return _Reply(500, b"<html><body>500 Internal Server Error</body></html>", "text/html")
                case "http429":
                    ra = fault.retry_after if fault.retry_after is not None else 0
                    return _Reply(429, b"Too Many Requests", "text/plain", headers={"retry-after": f"{ra:g}"})
                case "html":
                    return _Reply(
                        200, b"<!doctype html><html><body>Welcome to nginx!</body></html>", "text/html"
                    )
                case "wrong_id":
                    return self._reply("not-" + str(req_id), result={})
                case "timeout_error":
                    err = handler_error("TIMEOUT_ERROR", {}, "Timeout", http_status=408)
                    return self._reply(req_id, error=err.error, status=err.http_status)
        try:
            result = self._dispatch(method, params, t)
        except _RpcFailure as exc:
            return self._reply(req_id, error=exc.error, status=exc.http_status)
        if fault is not None:  # drop_response: processed, but the client never hears back
            return _Reply(drop=True)
        return self._reply(req_id, result=result)

    @staticmethod
    def _reply(
        req_id: object, *, result: object = None, error: dict[str, Any] | None = None, status: int = 200
    ) -> _Reply:
        body: dict[str, Any] = {"jsonrpc": "2.0", "id": req_id}
        if error is not None:
            body["error"] = error
        else:
            body["result"] = result
        return _Reply(status, json.dumps(body).encode())

    def _dispatch(self, method: str, params: Any, t: float) -> object:
        with self._lock:
            match method:
                case "block":
                    return self._block(params)
                case "query":
                    return self._query(params)
                case "send_tx" | "broadcast_tx_commit":
                    return self._send(method, params, t)
                case "tx" | "EXPERIMENTAL_tx_status":
                    return self._tx(params)
                case "status":
                    return {"chain_id": self.chain_id, "sync_info": self._sync_info()}
                case "gas_price":
                    return {"gas_price": str(self.gas_price)}
        raise _RpcFailure(
            {
                "name": "REQUEST_VALIDATION_ERROR",
                "cause": {"name": "METHOD_NOT_FOUND", "info": {"method_name": method}},
                "code": -32601,
                "message": "Method not found",
                "data": method,
            },
            400,
        )

    # -- methods ---------------------------------------------------------------------------

    def _sync_info(self) -> dict[str, Any]:
        return {"latest_block_hash": b58encode(self._blocks[-1]), "latest_block_height": len(self._blocks)}

    def _block_ref(self) -> dict[str, Any]:
        return {"block_hash": b58encode(self._blocks[-1]), "block_height": len(self._blocks)}

    def _block(self, params: Any) -> dict[str, Any]:
        height = len(self._blocks)
        if isinstance(params, dict) and "block_id" in params:
            bid = params["block_id"]
            if isinstance(bid, int) and 1 <= bid <= len(self._blocks):
                height = bid
            elif isinstance(bid, str) and self._height_of(bid) is not None:
                height = self._height_of(bid)  # type: ignore[assignment]
            else:
                raise handler_error("UNKNOWN_BLOCK", {}, f"DB Not Found Error: BLOCK: {bid}")
        elif not (
            isinstance(params, dict) and params.get("finality") in ("final", "optimistic", "near-final")
        ):
            raise request_error("block requires finality or block_id")
        hash_ = self._blocks[height - 1]
        prev = self._blocks[height - 2] if height > 1 else bytes(32)
        ts = 1_700_000_000_000_000_000 + height * 1_000_000_000
        return {
            "author": "test.near",
            "header": {
                "height": height,
                "hash": b58encode(hash_),
                "prev_hash": b58encode(prev),
                "timestamp": ts,
                "timestamp_nanosec": str(ts),
                "epoch_id": b58encode(bytes(32)),
                "chunks_included": 1,
                "gas_price": "100000000",
            },
            "chunks": [],
        }

    def _height_of(self, b58: str) -> int | None:
        try:
            raw = b58decode(b58)
        except ValueError:
            return None
        try:
            return self._blocks.index(raw) + 1
        except ValueError:
            return None

    def _query(self, params: Any) -> dict[str, Any]:
        if not isinstance(params, dict) or "request_type" not in params:
            raise request_error("query params must be an object with request_type")
        kind = params["request_type"]
        account_id = params.get("account_id")
        ref = self._block_ref()
        if account_id not in self.accounts:
            raise handler_error("UNKNOWN_ACCOUNT", {"requested_account_id": account_id, **ref})
        if kind == "view_account":
            return {
                "amount": str(self.accounts[account_id]),
                "locked": "0",
                "code_hash": "11111111111111111111111111111111",
                "storage_usage": 182,
                "storage_paid_at": 0,
                **ref,
            }
        if kind == "view_access_key":
            pk = params.get("public_key")
            ak = self.access_keys.get((account_id, pk))
            if ak is None:
                if self.legacy_unknown_key_result:
                    return {"error": f"access key {pk} does not exist while viewing", "logs": [], **ref}
                raise handler_error("UNKNOWN_ACCESS_KEY", {"public_key": pk, **ref})
            return {"nonce": ak["nonce"], "permission": ak["permission"], **ref}
        if kind == "call_function":
            return self._call_function(account_id, params, ref)
        raise request_error(f"unsupported request_type {kind!r}")

    def _call_function(self, account_id: str, params: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
        method = params.get("method_name")
        fn = self._views.get((account_id, str(method)))
        if fn is None:
            vm = "wasm execution failed with error: MethodResolveError(MethodNotFound)"
            raise handler_error("CONTRACT_EXECUTION_ERROR", {"vm_error": vm, **ref})
        try:
            raw_args = base64.b64decode(params.get("args_base64", ""), validate=True)
        except (binascii.Error, ValueError):
            raise request_error("args_base64 is not valid base64") from None
        try:
            args: Any = json.loads(raw_args) if raw_args else None
        except ValueError:
            args = raw_args
        try:
            value = fn(args)
        except Exception as exc:  # a contract panic
            panic = f"GuestPanic {{ panic_msg: {exc!s} }}"
            vm = f"wasm execution failed with error: FunctionCallError(HostError({panic}))"
            raise handler_error("CONTRACT_EXECUTION_ERROR", {"vm_error": vm, **ref}) from None
        out = value if isinstance(value, bytes) else json.dumps(value).encode()
        return {"result": list(out), "logs": [], **ref}

    def _record_send(
        self,
        t: float,
        params: Any,
        *,
        accepted: bool,
        fault: str | None = None,
        error: str | None = None,
        tx_hash: str | None = None,
    ) -> None:
        if tx_hash is None:
            try:
                tx_hash = SignedTransaction.from_base64(_signed_b64(params)).hash
            except Exception:
                tx_hash = None
        with self._lock:
            self.received.append(
                {"t": t, "hash": tx_hash, "accepted": accepted, "fault": fault, "error": error}
            )

    def _send(self, method: str, params: Any, t: float) -> dict[str, Any]:
        wait_until = "EXECUTED_OPTIMISTIC" if method == "send_tx" else "FINAL"
        if method == "send_tx":
            if not isinstance(params, dict):
                self._record_send(t, None, accepted=False, error="params")
                raise request_error("send_tx params must be an object")
            wait_until = params.get("wait_until", wait_until)
            if wait_until not in VALID_WAIT:
                self._record_send(t, params, accepted=False, error="wait_until")
                raise request_error(f"unknown wait_until {wait_until!r}")
        try:
            signed = SignedTransaction.from_base64(_signed_b64(params))
        except Exception as exc:
            self._record_send(t, None, accepted=False, error="decode")
            raise request_error(f"Failed to decode transaction: {exc}") from None
        tx_hash = signed.hash
        if (
            self.idempotent and tx_hash in self.outcomes
        ):  # already processed: answer with the same outcome, apply nothing
            self._record_send(t, params, accepted=True, tx_hash=tx_hash, error="duplicate")
            return self._render(tx_hash, wait_until)
        try:
            self._validate(signed)
        except _RpcFailure as exc:
            self._record_send(t, params, accepted=False, tx_hash=tx_hash, error=str(exc))
            raise
        self._apply(signed)
        self.submitted.append(signed)
        self._record_send(t, params, accepted=True, tx_hash=tx_hash)
        self._changed.notify_all()
        return self._render(tx_hash, wait_until)

    def _validate(self, signed: SignedTransaction) -> None:
        tx = signed.transaction
        height = self._height_of(b58encode(tx.block_hash))
        if (
            height is None
            or height < self._expired_below
            or height <= len(self._blocks) - self.validity_blocks
        ):
            raise invalid_tx("Expired")
        if not signed.verify():
            raise invalid_tx("InvalidSignature")
        if tx.signer_id not in self.accounts:
            raise invalid_tx({"SignerDoesNotExist": {"signer_id": tx.signer_id}})
        pk = str(tx.public_key)
        ak = self.access_keys.get((tx.signer_id, pk))
        if ak is None:
            not_found = {"AccessKeyNotFound": {"account_id": tx.signer_id, "public_key": pk}}
            raise invalid_tx({"InvalidAccessKeyError": not_found})
        if tx.nonce <= ak["nonce"]:
            raise invalid_tx({"InvalidNonce": {"tx_nonce": tx.nonce, "ak_nonce": ak["nonce"]}})
        perm = ak["permission"]
        if isinstance(perm, dict) and "FunctionCall" in perm:
            fc = perm["FunctionCall"]
            if len(tx.actions) != 1 or not isinstance(tx.actions[0], FunctionCall):
                raise invalid_tx({"InvalidAccessKeyError": "RequiresFullAccess"})
            call = tx.actions[0]
            if call.deposit:
                raise invalid_tx({"InvalidAccessKeyError": "DepositWithFunctionCall"})
            if tx.receiver_id != fc.get("receiver_id"):
                mismatch = {"tx_receiver": tx.receiver_id, "ak_receiver": fc.get("receiver_id")}
                raise invalid_tx({"InvalidAccessKeyError": {"ReceiverMismatch": mismatch}})
            names = fc.get("method_names") or []
            if names and call.method_name not in names:
                raise invalid_tx(
                    {"InvalidAccessKeyError": {"MethodNameMismatch": {"method_name": call.method_name}}}
                )
        deposits = sum(a.deposit for a in tx.actions if isinstance(a, (Transfer, FunctionCall)))
        cost = self.tx_fee + self.receipt_fee + deposits
        balance = self.accounts[tx.signer_id]
        if cost > balance:
            raise invalid_tx(
                {"NotEnoughBalance": {"signer_id": tx.signer_id, "balance": str(balance), "cost": str(cost)}}
            )

    def _apply(self, signed: SignedTransaction) -> None:
        """Charge the signer, bump the nonce, run the actions in one receipt (all or nothing)."""
        tx = signed.transaction
        self.access_keys[(tx.signer_id, str(tx.public_key))]["nonce"] = tx.nonce
        # Gas is burnt whatever the receipt does; deposits come back only if it fails.
        self.accounts[tx.signer_id] -= self.tx_fee + self.receipt_fee
        accounts = dict(self.accounts)
        keys = {k: dict(v) for k, v in self.access_keys.items()}
        contract_states = {cid: copy.deepcopy(c.state) for cid, c in self.contracts.items()}
        failure: dict[str, Any] | None = None
        receiver = tx.receiver_id
        for index, action in enumerate(tx.actions):
            exists = receiver in accounts
            if isinstance(action, CreateAccount):
                if exists:
                    failure = _action_error(index, {"AccountAlreadyExists": {"account_id": receiver}})
                    break
                accounts[receiver] = 0
            elif isinstance(action, Transfer):
                accounts[tx.signer_id] -= action.deposit
                accounts[receiver] = accounts.get(receiver, 0) + action.deposit
            elif not exists:
                failure = _action_error(index, {"AccountDoesNotExist": {"account_id": receiver}})
                break
            elif isinstance(action, FunctionCall):
                accounts[tx.signer_id] -= action.deposit
                accounts[receiver] += action.deposit
                contract = self.contracts.get(receiver)
                if contract is not None:
                    error = contract.call(action.method_name, action.args, action.deposit, tx.signer_id)
                    if error is not None:
                        failure = _action_error(index, {"FunctionCallError": error})
                        break
            elif isinstance(action, AddKey):
                perm: Permission = "FullAccess"
                p = action.access_key.permission
                if not isinstance(p, FullAccessPermission):
                    allowance = None if p.allowance is None else str(p.allowance)
                    perm = {
                        "FunctionCall": {
                            "allowance": allowance,
                            "receiver_id": p.receiver_id,
                            "method_names": list(p.method_names),
                        }
                    }
                keys[(receiver, str(action.public_key))] = {
                    "nonce": action.access_key.nonce,
                    "permission": perm,
                }
            elif isinstance(action, DeleteKey) and keys.pop((receiver, str(action.public_key)), None) is None:
                failure = _action_error(
                    index,
                    {
                        "DeleteKeyDoesNotExist": {
                            "account_id": receiver,
                            "public_key": str(action.public_key),
                        }
                    },
                )
                break
        if failure is None:
            self.accounts.clear()
            self.accounts.update(accounts)
            self.access_keys.clear()
            self.access_keys.update(keys)
        else:  # the receipt's changes are rolled back, contracts' state included
            for cid, state in contract_states.items():
                self.contracts[cid].state = state
        self.outcomes[signed.hash] = self._outcome(signed, failure)

    def _outcome(self, signed: SignedTransaction, failure: dict[str, Any] | None) -> dict[str, Any]:
        tx = signed.transaction
        block = b58encode(self._blocks[-1])
        receipt_id = b58encode(hashlib.sha256(b"receipt" + tx.digest()).digest())
        status: dict[str, Any] = {"Failure": failure} if failure is not None else {"SuccessValue": ""}
        meta = {"version": 3, "gas_profile": []}
        refunds: list[dict[str, Any]] = []
        deposits = sum(a.deposit for a in tx.actions if isinstance(a, (Transfer, FunctionCall)))
        if failure is not None and deposits:  # nearcore refunds a failed receipt's deposits from "system"
            refund_id = b58encode(hashlib.sha256(b"refund" + tx.digest()).digest())
            refunds.append(
                {
                    "proof": [],
                    "block_hash": block,
                    "id": refund_id,
                    "outcome": {
                        "logs": [],
                        "receipt_ids": [],
                        "gas_burnt": 0,
                        "tokens_burnt": "0",
                        "executor_id": tx.signer_id,
                        "status": {"SuccessValue": ""},
                        "metadata": meta,
                    },
                }
            )
        return {
            "status": status,
            "transaction": {
                "signer_id": tx.signer_id,
                "public_key": str(tx.public_key),
                "nonce": tx.nonce,
                "receiver_id": tx.receiver_id,
                "actions": [_action_json(a) for a in tx.actions],
                "signature": signature_to_string(signed.signature),
                "hash": signed.hash,
                "priority_fee": 0,
            },
            "transaction_outcome": {
                "proof": [],
                "block_hash": block,
                "id": signed.hash,
                "outcome": {
                    "logs": [],
                    "receipt_ids": [receipt_id],
                    "gas_burnt": 223182562500,
                    "tokens_burnt": str(self.tx_fee),
                    "executor_id": tx.signer_id,
                    "status": {"SuccessReceiptId": receipt_id},
                    "metadata": meta,
                },
            },
            "receipts_outcome": [
                {
                    "proof": [],
                    "block_hash": block,
                    "id": receipt_id,
                    "outcome": {
                        "logs": [],
                        "receipt_ids": [r["id"] for r in refunds],
                        "gas_burnt": 223182562500,
                        "tokens_burnt": str(self.receipt_fee),
                        "executor_id": tx.receiver_id,
                        "status": status,
                        "metadata": meta,
                    },
                },
                *refunds,
            ],
        }

    def _render(self, tx_hash: str, wait_until: str) -> dict[str, Any]:
        """A NEAR ``RpcTransactionResponse``: just the status for NONE/INCLUDED*, else the outcome."""
        if wait_until in ("NONE", "INCLUDED", "INCLUDED_FINAL"):
            return {"final_execution_status": wait_until}
        return {"final_execution_status": wait_until, **self.outcomes[tx_hash]}

    def _tx(self, params: Any) -> dict[str, Any]:
        wait_until = "EXECUTED_OPTIMISTIC"
        if isinstance(params, list) and len(params) >= 2:
            tx_hash, sender = params[0], params[1]
        elif isinstance(params, dict) and "tx_hash" in params:
            tx_hash, sender = params["tx_hash"], params.get("sender_account_id")
            wait_until = params.get("wait_until", wait_until)
        else:
            raise request_error("tx requires tx_hash and sender_account_id")
        if wait_until not in VALID_WAIT:
            raise request_error(f"unknown wait_until {wait_until!r}")
        outcome = self.outcomes.get(tx_hash)
        if outcome is None or outcome["transaction"]["signer_id"] != sender:
            raise handler_error(
                "UNKNOWN_TRANSACTION",
                {"requested_transaction_hash": tx_hash},
                f"Transaction {tx_hash} doesn't exist",
            )
        return self._render(tx_hash, wait_until)


class ContractPanic(Exception):
    """Raised by a fake contract method: the receipt fails with "Smart contract panicked: <message>"."""


CallFn = Callable[["CallContext"], object]


@dataclass(frozen=True)
class CallContext:
    """What a contract method sees: its JSON arguments, the attached deposit, who called it."""

    args: Any
    deposit: int
    predecessor_id: str


class FakeContract:
    """A contract the fake node runs: `state` is rolled back when a call in its receipt fails."""

    def __init__(self) -> None:
        self.state: dict[str, Any] = {}
        self.calls: list[tuple[str, CallContext]] = []

    def methods(self) -> dict[str, CallFn]:
        return {}

    def views(self) -> dict[str, ViewFn]:
        return {}

    def call(self, method: str, raw_args: bytes, deposit: int, predecessor_id: str) -> dict[str, Any] | None:
        """Run `method`; None on success, else NEAR's ``FunctionCallError`` value."""
        fn = self.methods().get(method)
        if fn is None:
            return {"MethodResolveError": "MethodNotFound"}
        try:
            args = json.loads(raw_args) if raw_args else {}
        except ValueError:
            return {"ExecutionError": "Smart contract panicked: Failed to deserialize input from JSON."}
        ctx = CallContext(args, deposit, predecessor_id)
        self.calls.append((method, ctx))
        try:
            fn(ctx)
        except ContractPanic as exc:
            return {"ExecutionError": f"Smart contract panicked: {exc}"}
        return None


class FungibleToken(FakeContract):
    """A NEP-141 token with near-contract-standards' checks: exactly 1 yoctoNEAR, a U128 string
    amount, a registered receiver, enough balance (else a panic, and nothing moves)."""

    def __init__(self, balances: dict[str, int]) -> None:
        super().__init__()
        self.state["balances"] = dict(balances)

    def balance(self, account_id: str) -> int:
        return int(self.state["balances"].get(account_id, 0))

    def methods(self) -> dict[str, CallFn]:
        return {"ft_transfer": self._ft_transfer}

    def views(self) -> dict[str, ViewFn]:
        return {"ft_balance_of": lambda args: str(self.balance(args.get("account_id", "")))}

    def _ft_transfer(self, ctx: CallContext) -> None:
        if ctx.deposit != 1:
            raise ContractPanic("Requires attached deposit of exactly 1 yoctoNEAR")
        args = ctx.args if isinstance(ctx.args, dict) else {}
        amount, receiver = args.get("amount"), args.get("receiver_id")
        if not isinstance(amount, str) or not amount.isdigit():
            raise ContractPanic("Failed to deserialize input from JSON.")
        balances = self.state["balances"]
        if receiver not in balances:
            raise ContractPanic(f"The account {receiver} is not registered")
        if receiver == ctx.predecessor_id:
            raise ContractPanic("Sender and receiver should be different")
        have = balances.get(ctx.predecessor_id, 0)
        if int(amount) == 0:
            raise ContractPanic("The amount should be a positive number")
        if have < int(amount):
            raise ContractPanic("The account doesn't have enough balance")
        balances[ctx.predecessor_id] = have - int(amount)
        balances[receiver] += int(amount)


def _signed_b64(params: Any) -> str:
    if isinstance(params, dict):
        value = params.get("signed_tx_base64")
    elif isinstance(params, list) and params:
        value = params[0]
    else:
        value = None
    if not isinstance(value, str):
        raise ValueError("missing signed_tx_base64")
    return value


def _action_error(index: int, kind: dict[str, Any]) -> dict[str, Any]:
    return {"ActionError": {"index": index, "kind": kind}}


def _action_json(action: object) -> object:
    if isinstance(action, CreateAccount):
        return "CreateAccount"
    if isinstance(action, Transfer):
        return {"Transfer": {"deposit": str(action.deposit)}}
    if isinstance(action, FunctionCall):
        return {
            "FunctionCall": {
                "method_name": action.method_name,
                "args": base64.b64encode(action.args).decode("ascii"),
                "gas": action.gas,
                "deposit": str(action.deposit),
            }
        }
    if isinstance(action, AddKey):
        return {
            "AddKey": {"public_key": str(action.public_key), "access_key": {"nonce": action.access_key.nonce}}
        }
    if isinstance(action, DeleteKey):
        return {"DeleteKey": {"public_key": str(action.public_key)}}
    return type(action).__name__
