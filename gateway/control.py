"""A control socket so the CLI can tell a running gateway that the database changed.

`clawgate groups register`, `clawgate tasks pause`, … write to the same SQLite file the
gateway uses, then send `{"op": "reload", "what": "groups"|"tasks"}` here. The socket
lives in the data dir's `run/` (never mounted into a container) with mode 0600.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

log = logging.getLogger(__name__)

SOCKET_NAME = "gateway.sock"
# One request line: a vault usage report of 500 records is ~150 KB (gateway/vault_usage.py).
MAX_LINE = 1 << 20
Handler = Callable[[dict[str, object]], Awaitable[dict[str, object]]]


class ControlServer:
    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_LINE)
        finally:
            os.umask(old)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 10)
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not an object")
                reply = await _unless_hung_up(self._handler(request), reader)
            except (ValueError, KeyError) as exc:
                reply = {"ok": False, "error": str(exc)}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.LimitOverrunError, ValueError, _HungUp):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


class _HungUp(Exception):
    """The requester closed its connection before the answer was ready."""


async def _unless_hung_up(
    work: Awaitable[dict[str, object]], reader: asyncio.StreamReader
) -> dict[str, object]:
    """Run a request's handler, cancelling it if the requester hangs up meanwhile.

    A held HTTP request (gateway/http_approvals.py) waits here for the owner's decision; the
    vault closing this connection means its client gave up, and the handler's cancellation
    withdraws the prompt. Short requests finish long before anyone hangs up.
    """
    task = asyncio.ensure_future(work)
    eof = asyncio.ensure_future(reader.read(1))
    try:
        await asyncio.wait({task, eof}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done() and (eof.exception() is not None or not eof.result()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            raise _HungUp
        return await task
    finally:
        eof.cancel()
        if not task.done():
            task.cancel()
