"""The CLI's side of the gateway control socket (`gateway.control`): tell a running gateway to reload.

The CLI writes to the database directly; afterwards it calls `notify_gateway(...)` so a
running gateway picks the change up at once. When no gateway runs, nothing listens and
the call quietly returns False: the change is read at the next start anyway.
"""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path
from typing import Any

from core import paths

SOCKET_NAME = "gateway.sock"  # same as gateway.control.SOCKET_NAME (kept import-light for the CLI)
TIMEOUT_S = 5.0


def control_socket(data_dir: Path | None = None) -> Path:
    return (data_dir or paths.data_dir()) / "run" / SOCKET_NAME


def request(
    body: dict[str, object], data_dir: Path | None = None, timeout: float = TIMEOUT_S
) -> dict[str, Any] | None:
    """Send one request to a running gateway; its reply, or None when no gateway answers."""
    path = control_socket(data_dir)
    if not path.exists():
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
        sock.sendall(json.dumps(body).encode() + b"\n")
        with sock.makefile("rb") as reply:
            line = reply.readline(64 * 1024)
    except OSError:  # refused (stale socket file), timed out, reset
        return None
    finally:
        with contextlib.suppress(OSError):
            sock.close()
    try:
        answer = json.loads(line)
    except ValueError:
        return None
    return answer if isinstance(answer, dict) else None


def notify_gateway(what: str, data_dir: Path | None = None) -> bool:
    """Ask a running gateway to reload `what` ("tasks", "groups", …); True when it confirmed."""
    answer = request({"op": "reload", "what": what}, data_dir)
    return bool(answer and answer.get("ok"))
