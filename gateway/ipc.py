"""The gateway's side of the agent IPC: one unix socket per group, JSON lines.

Identity is the socket: a `GroupIpc` is created for exactly one group folder and
everything arriving on its socket acts as that group. Payloads are validated
strictly (unknown fields are rejected, not ignored), so a request that claims to be
someone else (`{"group": "main"}`) is refused outright instead of being half-read.
Lines are size-capped; a malformed line gets an error response and never reaches
the gateway's logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 256 * 1024
MAX_TEXT_CHARS = 64 * 1024


class IpcError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Turn:
    run_id: int
    prompt: str


@dataclass(frozen=True, slots=True)
class TurnResult:
    text: str | None
    error: str | None


# method -> {field: (type, required)}
_SCHEMAS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "next_messages": {},
    "received": {"run_id": (int, True)},
    "send_message": {"text": (str, True)},
    "turn_done": {
        "run_id": (int, True),
        "text": ((str, type(None)), False),
        "error": ((str, type(None)), False),
    },
    "log": {"level": (str, True), "message": (str, True)},
    "status": {"state": (str, True)},
}


def validate(method: object, params: object) -> dict[str, Any]:
    if not isinstance(method, str) or method not in _SCHEMAS:
        raise IpcError("unknown_method", f"unknown method {method!r}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise IpcError("bad_params", "params must be an object")
    schema = _SCHEMAS[method]
    for key in params:
        if key not in schema:
            raise IpcError("bad_params", f"unexpected field {key!r} for {method}")
    for key, (kind, required) in schema.items():
        if key not in params:
            if required:
                raise IpcError("bad_params", f"missing field {key!r} for {method}")
            continue
        value = params[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise IpcError("bad_params", f"field {key!r} has the wrong type")
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise IpcError("too_large", f"field {key!r} exceeds {MAX_TEXT_CHARS} characters")
    return params


SendHandler = Callable[[str, int | None, str], Awaitable[None]]


class GroupIpc:
    """The IPC endpoint of one group: hands turns to its agent and collects results."""

    def __init__(self, folder: str, socket_path: Path, on_send: SendHandler) -> None:
        self.folder = folder
        self.socket_path = socket_path
        self._on_send = on_send
        self._turns: deque[Turn] = deque()
        self._turn_ready = asyncio.Event()
        self._results: dict[int, asyncio.Future[TurnResult]] = {}
        self._received: dict[int, asyncio.Future[float]] = {}
        self._current_run: int | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[object]] = set()
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        self._server = await asyncio.start_unix_server(
            self._serve, path=str(self.socket_path), limit=MAX_LINE_BYTES
        )
        os.chmod(self.socket_path, 0o666)  # the container's uid must connect; the dir is per group

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        # A handler parked in `next_messages` never reads again, so it would not notice the
        # peer going away; cancel every handler explicitly.
        for task in list(self._handlers):
            task.cancel()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=2)
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
        for future in [*self._results.values(), *self._received.values()]:
            if not future.done():
                future.set_exception(ConnectionError(reason))
        self._results.clear()
        self._received.clear()

    # -- the socket ------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)  # type: ignore[arg-type]
            task.add_done_callback(self._handlers.discard)
        self.connected.set()
        try:
            while True:
                try:
                    line = await reader.readuntil(b"\n")
                except asyncio.IncompleteReadError:
                    return
                except asyncio.LimitOverrunError:
                    await self._reply(writer, None, error=IpcError("too_large", "request line too long"))
                    log.warning("ipc[%s]: oversized request, connection closed", self.folder)
                    return
                await self._handle_line(line, writer)
        except (ConnectionError, OSError):
            return
        except asyncio.CancelledError:
            return  # the server is closing; the agent sees its socket close and exits
        finally:
            writer.close()

    async def _handle_line(self, line: bytes, writer: asyncio.StreamWriter) -> None:
        request_id: object = None
        try:
            try:
                request = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise IpcError("bad_json", "request is not valid JSON") from None
            if not isinstance(request, dict):
                raise IpcError("bad_request", "request must be a JSON object")
            request_id = request.get("id")
            if not isinstance(request_id, int | str) or isinstance(request_id, bool):
                raise IpcError("bad_request", "request needs an integer or string id")
            extra = set(request) - {"id", "method", "params"}
            if extra:
                raise IpcError("bad_request", f"unexpected top-level field(s): {sorted(extra)}")
            params = validate(request.get("method"), request.get("params"))
            result = await self._dispatch(request["method"], params)
        except IpcError as exc:
            log.warning("ipc[%s]: refused request: %s", self.folder, exc)
            await self._reply(writer, request_id, error=exc)
            return
        await self._reply(writer, request_id, result=result)

    async def _reply(
        self,
        writer: asyncio.StreamWriter,
        request_id: object,
        *,
        result: object = None,
        error: IpcError | None = None,
    ) -> None:
        body: dict[str, object] = {"id": request_id}
        if error is not None:
            body["error"] = {"code": error.code, "message": str(error)}
        else:
            body["result"] = result if result is not None else {}
        writer.write(json.dumps(body).encode() + b"\n")
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
        if method == "send_message":
            await self._on_send(self.folder, self._current_run, params["text"])
            return {"ok": True}
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
        return {}  # status: accepted, nothing to do yet
