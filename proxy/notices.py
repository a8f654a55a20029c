"""Vault → gateway notices over the gateway's control socket (`--gateway-socket`).

The vault sees things the owner must hear about — a request that carried a credential
(proxy/leaks.py), a group's request that left without the key it needed because the
group is outside the secret's scope (proxy/policy.py) — but has no chat of its own. It
tells the gateway, which posts one line to the main chat. Each key is sent once per
vault process; a failed delivery is forgotten so the next occurrence tries again.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

log = logging.getLogger("clawgate.vault.notices")


class GatewayNotices:
    def __init__(self, gateway_socket: Path | None) -> None:
        self.gateway_socket = gateway_socket
        self._sent: set[tuple[str, ...]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    def once(self, key: tuple[str, ...], message: dict[str, object]) -> None:
        """Send `message` unless `key` was already sent; never blocks the request being handled."""
        if self.gateway_socket is None or key in self._sent:
            return
        self._sent.add(key)
        task = asyncio.get_running_loop().create_task(self._send(key, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, key: tuple[str, ...], message: dict[str, object]) -> None:
        assert self.gateway_socket is not None
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(self.gateway_socket)), 5)
            try:
                writer.write(json.dumps(message).encode() + b"\n")
                await writer.drain()
                await asyncio.wait_for(reader.readline(), 10)
            finally:
                writer.close()
        except (OSError, TimeoutError) as exc:
            self._sent.discard(key)  # try again on the next occurrence
            log.warning("vault: could not tell the gateway (%s): %s", message.get("op"), exc)
