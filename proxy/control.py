"""JSON-lines control socket through which the gateway drives the vault process.

The socket is created 0600 in the data dir and never mounted into a container, so only
the gateway (same uid) can open or close group sockets or trigger a secrets reload.
One JSON object per line in, one per line out; malformed input gets an error reply and
never takes the server down.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from proxy.budget import BudgetStateError, VaultBudgets
from proxy.relay import Relay, RelayError
from proxy.secrets import VaultError
from proxy.stats import VaultStats

log = logging.getLogger("clawgate.vault.control")

MAX_LINE = 4 * 1024 * 1024  # a `budgets` state with many groups; only the gateway can connect


class ControlServer:
    """Serves `ping`, `open_group`, `close_group`, `reload_secrets`, `stats`, `budgets`."""

    def __init__(
        self,
        socket_path: Path,
        relay: Relay,
        reload_secrets: Callable[[], Awaitable[int]],
        ca_cert: Path,
        stats: VaultStats | None = None,
        budgets: VaultBudgets | None = None,
    ) -> None:
        self.budgets = budgets
        self.socket_path = Path(socket_path)
        self.relay = relay
        self.reload_secrets = reload_secrets
        self.ca_cert = ca_cert
        self.stats = stats
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        old_umask = os.umask(0o177)  # no window in which the socket is group/world accessible
        try:
            self._server = await asyncio.start_unix_server(
                self._on_client, path=str(self.socket_path), limit=MAX_LINE
            )
        finally:
            os.umask(old_umask)
        os.chmod(self.socket_path, 0o600)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await self._send(writer, {"ok": False, "error": "line too long"})
                    break
                if not line:
                    break
                if not line.strip():
                    continue
                reply = await self.handle_line(line)
                await self._send(writer, reply)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(json.dumps(obj).encode() + b"\n")
        await writer.drain()

    async def handle_line(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "malformed JSON"}
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            return {"ok": False, "error": "expected an object with a string 'op'"}
        try:
            return await self._dispatch(req)
        except (RelayError, VaultError) as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # a bug must not kill the control plane
            log.exception("control: %s failed", req.get("op"))
            return {"ok": False, "error": f"internal error: {type(e).__name__}"}

    async def _dispatch(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req["op"]
        if op == "ping":
            return {
                "ok": True,
                "ca_cert": str(self.ca_cert),
                "groups": sorted(self.relay.groups),
                "port": self.relay.target[1],
            }
        if op == "open_group":
            group, sock = req.get("group"), req.get("socket")
            if not isinstance(group, str) or not isinstance(sock, str):
                return {"ok": False, "error": "open_group needs string 'group' and 'socket'"}
            path = await self.relay.open_group(group, sock)
            return {"ok": True, "socket": str(path)}
        if op == "close_group":
            group = req.get("group")
            if not isinstance(group, str):
                return {"ok": False, "error": "close_group needs a string 'group'"}
            return {"ok": True, "closed": await self.relay.close_group(group)}
        if op == "reload_secrets":
            return {"ok": True, "secrets": await self.reload_secrets()}
        if op == "stats":  # counters for the gateway's /metrics; no hosts, paths or secrets
            snapshot = self.stats.snapshot() if self.stats is not None else {}
            return {"ok": True, "pid": os.getpid(), **snapshot}
        if op == "budgets" and self.budgets is not None:  # the gateway's limits (proxy/budget.py)
            try:
                return {"ok": True, "limits": self.budgets.set_state(req)}
            except BudgetStateError as e:
                return {"ok": False, "error": f"budgets: {e}"}
        return {"ok": False, "error": f"unknown op {op!r}"}
