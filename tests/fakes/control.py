"""A stand-in for a running gateway's control socket, served from a background event loop.

CLI tests run synchronously (click's CliRunner); this lets them talk to a real
`ControlServer` on the real socket path and see which requests the CLI sent.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.control import ControlServer
from gateway.control_client import control_socket


@contextmanager
def serve_control(data_dir: Path, status_text: str | None = None) -> Iterator[list[dict[str, object]]]:
    """Answer `{"ok": true}` (and `status_text` for op=status); yields the requests received."""
    received: list[dict[str, object]] = []
    loop = asyncio.new_event_loop()

    async def handler(request: dict[str, object]) -> dict[str, object]:
        received.append(request)
        if status_text is not None and request.get("op") == "status":
            return {"ok": True, "text": status_text}
        return {"ok": True}

    server = ControlServer(control_socket(data_dir), handler)
    loop.run_until_complete(server.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield received
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
