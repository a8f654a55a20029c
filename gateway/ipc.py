"""The gateway's side of the agent IPC: one unix socket per group, JSON lines.

Identity is the socket: a `GroupIpc` is created for exactly one group folder and
everything arriving on its socket acts as that group. Payloads are validated
strictly against `gateway.ipc_protocol` (unknown fields are rejected, not ignored), so a
request that claims to be someone else (`{"group": "main"}`) is refused outright instead of
being half-read, and each method is authorized there against the socket's `Caller`.
A malformed line gets an error response and never reaches the gateway's logic. What
one socket may cost the host (connections, line size and time, nesting, request
rates) is bounded by `gateway.ipc_limits` and enforced here and in `gateway.ipc_reader`,
so a hostile group cannot starve the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from gateway.ipc_limits import IpcLimits, LogGate, Pacer, TokenBucket, line_cost
from gateway.ipc_protocol import (
    Caller,
    IpcError,
    IpcServices,
    Turn,
    TurnResult,
    authorize,
    validate,
)
from gateway.ipc_reader import ReadError, loads, read_line

log = logging.getLogger(__name__)

MAX_LINE_BYTES = IpcLimits().max_line_bytes  # the default; `[ipc] max_line_bytes` sets it per gateway


# The turn protocol must never be refused: a dropped `turn_done` would lose the answer. It is
# only paced, with every other line, by the generous `lines` budget; everything that acts on
# the gateway also takes from the strict `requests` bucket (see gateway.ipc_limits).
_TURN_PROTOCOL = frozenset({"next_messages", "received", "turn_done", "status"})

MAX_DEPTH = 6
# Connections refused per second and group before its listener pauses (its connects then
# wait in the kernel backlog); the pause is short so the agent's own reconnect is not held up.
REFUSALS_PER_S = 50.0
REFUSAL_PAUSE_S = 0.2

audit = logging.getLogger("clawgate.audit")


class _Counted(asyncio.StreamReaderProtocol):
    """The usual stream protocol, telling its server when the connection is gone for good."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        serve: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
        closed: Callable[[], None],
    ) -> None:
        super().__init__(reader, serve)
        self._on_closed: Callable[[], None] | None = closed

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self._on_closed is not None:
            closed, self._on_closed = self._on_closed, None
            closed()


class GroupIpc:
    """The IPC endpoint of one group: hands turns to its agent and collects results."""

    def __init__(
        self, caller: Caller, socket_path: Path, services: IpcServices, limits: IpcLimits | None = None
    ) -> None:
        self.caller = caller
        self.folder = caller.folder
        self.socket_path = socket_path
        self._services = services
        self.limits = limits = limits or IpcLimits()
        self._requests = TokenBucket(limits.requests_per_s, limits.requests_burst)
        self._lines = Pacer(limits.lines_per_s, limits.lines_burst)
        self._audit_gate = LogGate()
        self._turns: deque[Turn] = deque()
        self._turn_ready = asyncio.Event()
        self._results: dict[int, asyncio.Future[TurnResult]] = {}
        self._received: dict[int, asyncio.Future[float]] = {}
        self._current_run: int | None = None
        self._handlers: set[asyncio.Task[object]] = set()
        self._open = 0  # connections from accept to close (the cap counts these)
        self.refused_connections = 0
        self._opening: set[asyncio.Task[None]] = set()
        self._refusals = TokenBucket(REFUSALS_PER_S, REFUSALS_PER_S)
        self._listener: socket.socket | None = None
        self._resume: asyncio.TimerHandle | None = None
        too_many = f"this group already has {limits.max_connections} IPC connections open"
        self._refusal = self._encode(None, error=IpcError("too_many_connections", too_many))
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Listen on the group's socket; accepting is ours (see `_accept`), not asyncio.Server's."""
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(self.socket_path))
            os.chmod(self.socket_path, 0o666)  # the container's uid must connect; the dir is per group
            listener.listen(self.limits.max_connections)  # the kernel queues no more than the cap
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self._listener = listener
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept)

    async def close(self) -> None:
        if self._listener is not None:
            self._stop_accepting()
            self._listener.close()
            self._listener = None
        if self._resume is not None:
            self._resume.cancel()
        for task in list(self._opening):
            task.cancel()
        # A handler parked in `next_messages` never reads again, so it would not notice the
        # peer going away; cancel every handler explicitly.
        for handler in list(self._handlers):
            handler.cancel()
        pending = [*self._handlers, *self._opening]
        if pending:
            await asyncio.wait(pending, timeout=2)
        self.abort_all("the gateway closed the group's IPC")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    # -- what the executor uses ------------------------------------------------------

    def submit(self, turn: Turn) -> tuple[asyncio.Future[float], asyncio.Future[TurnResult]]:
        """Queue a turn for the agent; returns futures for 'agent received it' and the result."""
        loop = asyncio.get_running_loop()
        received: asyncio.Future[float] = loop.create_future()
        result: asyncio.Future[TurnResult] = loop.create_future()
        self._received[turn.run_id] = received
        self._results[turn.run_id] = result
        self._turns.append(turn)
        self._turn_ready.set()
        return received, result

    def abort_all(self, reason: str) -> None:
        """Fail every outstanding turn, e.g. because the container died."""
        self._turns.clear()
        futures: list[asyncio.Future[TurnResult] | asyncio.Future[float]] = [
            *self._results.values(),
            *self._received.values(),
        ]
        for future in futures:
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self._results.clear()
        self._received.clear()

    # -- the socket ------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """Open connections on this group's socket, counted from accept to close."""
        return self._open

    def _accept(self) -> None:
        """The listener is readable: take at most a cap's worth of connections, then yield.

        Under the cap a connection gets the usual stream protocol. Over it, it is refused at
        once with one error line written straight to the socket (it fits any socket buffer)
        and closed: never queued, no transport, reader or task, so a refusal costs a few
        system calls. A group that keeps hammering is not even accepted for a while: past
        `REFUSALS_PER_S` the listener is paused and its connects wait in the kernel's
        backlog (bounded by the cap), costing the gateway nothing.
        """
        assert self._listener is not None
        for _ in range(self.limits.max_connections):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. out of descriptors: back off instead of spinning
                log.error("ipc[%s]: cannot accept a connection: %s", self.folder, exc)
                self._pause(1.0)
                return
            if self._open >= self.limits.max_connections:
                with contextlib.suppress(OSError):
                    conn.send(self._refusal, socket.MSG_DONTWAIT)
                conn.close()
                self.refused_connections += 1
                self._refused(None, "too_many_connections", None)
                if not self._refusals.take():
                    self._pause(REFUSAL_PAUSE_S)
                    return
                continue
            self._open += 1
            task = asyncio.get_running_loop().create_task(self._open_stream(conn))
            self._opening.add(task)
            task.add_done_callback(self._opening.discard)

    async def _open_stream(self, conn: socket.socket) -> None:
        # `limit` bounds the connection's buffer while a line is still arriving (ipc_reader).
        reader = asyncio.StreamReader(limit=self.limits.max_line_bytes)
        protocol = _Counted(reader, self._serve, self._closed)
        try:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: protocol, conn)
        except BaseException:
            conn.close()
            self._closed()
            raise

    def _pause(self, seconds: float) -> None:
        self._stop_accepting()
        self._resume = asyncio.get_running_loop().call_later(seconds, self._start_accepting)

    def _stop_accepting(self) -> None:
        if self._listener is not None:
            asyncio.get_running_loop().remove_reader(self._listener.fileno())

    def _start_accepting(self) -> None:
        self._resume = None
        if self._listener is not None:
            asyncio.get_running_loop().add_reader(self._listener.fileno(), self._accept)

    def _closed(self) -> None:
        self._open -= 1

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
            task.add_done_callback(self._handlers.discard)
        self.connected.set()
        limits = self.limits
        try:
            while True:
                try:
                    line = await read_line(
                        reader,
                        max_line_bytes=limits.max_line_bytes,
                        line_timeout_s=limits.line_timeout_s,
                        idle_timeout_s=limits.idle_timeout_s,
                    )
                except ReadError as exc:
                    # The stream is out of step (or idle): answer once, then close.
                    self._refused(None, exc.code, str(exc))
                    await self._reply(writer, None, error=IpcError(exc.code, str(exc)))
                    return
                if line is None:
                    return
                # Every line is paced (never refused) before it is even parsed, and yields to
                # the event loop, so one group's flood cannot monopolize the gateway.
                await asyncio.sleep(self._lines.reserve(line_cost(len(line))))
                await self._handle_line(line, writer)
        except (ConnectionError, OSError, TimeoutError):
            return
        except asyncio.CancelledError:
            return  # the server is closing; the agent sees its socket close and exits
        finally:
            if writer.transport.get_write_buffer_size():
                writer.transport.abort()  # a peer that does not read must not keep its descriptor
            else:
                writer.close()

    async def _handle_line(self, line: bytes, writer: asyncio.StreamWriter) -> None:
        request_id: int | str | None = None
        method: object = None
        try:
            unreadable: ReadError | None = None
            try:
                request = loads(line, MAX_DEPTH)
            except ReadError as exc:
                request, unreadable = None, exc
            # Charged before anything else is looked at; a malformed line counts as a request.
            if not self._turn_protocol(request) and not self._requests.take():
                raise IpcError("rate_limited", "too many requests from this group; slow down and retry")
            if unreadable is not None:
                raise IpcError(unreadable.code, str(unreadable))
            if not isinstance(request, dict):
                raise IpcError("bad_request", "request must be a JSON object")
            method = request.get("method")
            candidate = request.get("id")
            if not isinstance(candidate, int | str) or isinstance(candidate, bool):
                raise IpcError("bad_request", "request needs an integer or string id")
            request_id = candidate
            extra = set(request) - {"id", "method", "params"}
            if extra:
                raise IpcError("bad_request", f"unexpected top-level field(s): {sorted(extra)}")
            params = validate(method, request.get("params"))
            result = await self._dispatch(request["method"], params)
        except IpcError as exc:
            self._refused(method, exc.code, str(exc))
            await self._reply(writer, request_id, error=exc)
            return
        await self._reply(writer, request_id, result=result)

    @staticmethod
    def _turn_protocol(request: object) -> bool:
        if not isinstance(request, dict):
            return False
        method = request.get("method")
        return isinstance(method, str) and method in _TURN_PROTOCOL

    def _refused(self, method: object, code: str, reason: str | None) -> None:
        """Audit a refusal; a flood of them is summarized instead of written line by line."""
        skipped = self._audit_gate.allow()
        if skipped is None:
            return
        more = f" (+{skipped} more refusals not logged)" if skipped else ""
        audit.warning(
            "refused group=%s method=%.40r code=%s reason=%s%s", self.folder, method, code, reason, more
        )

    @staticmethod
    def _encode(request_id: object, *, result: object = None, error: IpcError | None = None) -> bytes:
        body: dict[str, object] = {"id": request_id}
        if error is not None:
            body["error"] = {"code": error.code, "message": str(error)}
        else:
            body["result"] = result if result is not None else {}
        return json.dumps(body).encode() + b"\n"

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        request_id: object,
        *,
        result: object = None,
        error: IpcError | None = None,
    ) -> None:
        writer.write(self._encode(request_id, result=result, error=error))
        # A peer that never reads would park this handler in drain() forever: same bound as a line.
        async with asyncio.timeout(self.limits.line_timeout_s):
            await writer.drain()

    async def _dispatch(self, method: str, params: dict[str, Any]) -> object:
        if method == "next_messages":
            while not self._turns:
                self._turn_ready.clear()
                await self._turn_ready.wait()
            turn = self._turns.popleft()
            self._current_run = turn.run_id
            return {"run_id": turn.run_id, "prompt": turn.prompt}
        if method == "received":
            future = self._received.pop(params["run_id"], None)
            if future is None:
                raise IpcError("unknown_run", "no such run for this group")
            if not future.done():
                future.set_result(time.perf_counter())
            return {}
        if method == "turn_done":
            result = self._results.pop(params["run_id"], None)
            if result is None:
                raise IpcError("unknown_run", "no such run for this group")
            if not result.done():
                result.set_result(TurnResult(params.get("text"), params.get("error")))
            return {}
        if method == "log":
            log.info("agent[%s] %s: %s", self.folder, params["level"][:16], params["message"][:2000])
            return {}
        if method == "status":
            return {}
        return await self._dispatch_service(method, params)

    async def _dispatch_service(self, method: str, params: dict[str, Any]) -> object:
        """Requests that act on the gateway: authorized here, in one place, before anything runs."""
        caller, services = self.caller, self._services
        if method == "send_message":
            chat_id = params.get("chat_id", caller.chat_id)
            target = caller.folder if chat_id == caller.chat_id else services.folder_of_chat(chat_id)
            if target is None and not caller.is_main:
                target = "?"  # an unregistered chat is "another chat": main only
            authorize(caller, method, target)
            if target is None:
                raise IpcError("unknown_chat", f"chat {chat_id!r} is not registered")
            await services.send_message(caller, self._current_run, chat_id, params["text"])
            return {"ok": True}
        if method == "schedule_task":
            target = params.get("group", caller.folder)
            authorize(caller, method, target)
            return await services.schedule_task(caller, target, params)
        if method == "list_tasks":
            target = params.get("group")
            if not caller.is_main:
                authorize(caller, method, target)
                target = caller.folder  # non-main sees its own tasks only
            return {"tasks": await services.list_tasks(target)}
        if method in ("pause_task", "resume_task", "cancel_task"):
            owner = await services.task_group(params["task_id"])
            if owner is None or (owner != caller.folder and not caller.is_main):
                # Same answer for "missing" and "someone else's": existence is not revealed.
                raise IpcError("not_found", f"no task {params['task_id']!r} in this group")
            return await services.update_task(params["task_id"], method.removesuffix("_task"))
        if method.startswith("near_"):
            authorize(caller, method, None)
            return await services.wallet_request(caller, method, params)
        authorize(caller, method, None)  # the remaining methods are main-only
        if method == "register_group":
            return await services.register_group(params)
        if method == "unregister_group":
            return {"removed": await services.unregister_group(params["folder"])}
        if method == "set_mounts":
            await services.set_mounts(params["folder"], params["mounts"])
            return {"ok": True}
        if method == "list_chats":
            return {"chats": await services.list_chats()}
        raise IpcError("unknown_method", f"unknown method {method!r}")
