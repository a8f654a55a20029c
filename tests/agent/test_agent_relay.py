"""Egress relay: bytes both ways with half-close, fail closed when the vault is absent."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

from groups.agent import egress_relay


def _echo_server(path: Path) -> socket.socket:
    """Reads until EOF, then replies with everything upper-cased (needs half-close to work)."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))
    srv.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(data.upper())
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def test_relay_pumps_both_ways_with_half_close(sock_dir: Path) -> None:
    srv = _echo_server(sock_dir / "vault.sock")
    relay = egress_relay.start(0, str(sock_dir / "vault.sock"))
    try:
        payload = b"hello vault " * 50_000
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as c:
            sender = threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR)))
            sender.start()
            got = b""
            while chunk := c.recv(65536):
                got += chunk
            sender.join()
        assert got == payload.upper()
    finally:
        relay.close()
        srv.close()


def test_relay_fails_closed_without_vault(sock_dir: Path) -> None:
    relay = egress_relay.start(0, str(sock_dir / "missing.sock"))
    try:
        with socket.create_connection(("127.0.0.1", relay.port), timeout=5) as c:
            c.sendall(b"CONNECT api.anthropic.com:443 HTTP/1.1\r\n\r\n")
            try:
                got = c.recv(100)
            except ConnectionResetError:  # closed with our request unread: also "closed"
                got = b""
            assert got == b""
    finally:
        relay.close()
