"""A shared front on loopback: one address serving several hostnames, like a CDN edge.

It routes each request to a "virtual host" the way real fronts do — by the absolute-form
request target if there is one, else the `Host` header, else the TLS server name — and
records the TLS server name (SNI), the headers and the virtual host of every request. A
test asks "did the attacker's host ever see a request (and the credential)?" by filtering
`requests` on `vhost` or `sni`.
"""

from __future__ import annotations

import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from tests.fakes.tls import serve_tls

_SNI_ATTR = "clawgate_test_sni"


@dataclass
class FrontRequest:
    method: str
    target: str
    sni: str | None
    vhost: str
    headers: dict[str, str] = field(default_factory=dict)
    body_len: int = 0
    complete: bool = True  # False: the connection ended before the body did
    body: bytes = b""  # kept only with SharedFront(keep_bodies=True)


def _vhost(target: str, headers: dict[str, str], sni: str | None) -> str:
    if "://" in target:
        return (urlsplit(target).hostname or "").lower()
    host = headers.get("host", "").strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host:
        return host.split(":", 1)[0].rstrip(".")
    return (sni or "").lower()


class SharedFront:
    """HTTP(S) on 127.0.0.1; with `tls=(cert, key)` the certificate must cover every name served."""

    def __init__(self, tls: tuple[Path, Path] | None = None, keep_bodies: bool = False) -> None:
        self.requests: list[FrontRequest] = []
        self._lock = threading.Lock()
        front = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> tuple[bytes, int, bool]:
                """(kept bytes, length, complete); reads Content-Length and chunked bodies."""
                kept, total = bytearray(), 0

                def take(n: int) -> bool:
                    nonlocal total
                    while n:
                        chunk = self.rfile.read(min(n, 1 << 16))
                        if not chunk:
                            return False
                        n -= len(chunk)
                        total += len(chunk)
                        if keep_bodies:
                            kept.extend(chunk)
                    return True

                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    while True:
                        line = self.rfile.readline(1024)
                        if not line.strip():
                            return bytes(kept), total, False
                        size = int(line.split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline(1024)
                            return bytes(kept), total, True
                        if not take(size) or not self.rfile.readline(1024):
                            return bytes(kept), total, False
                complete = take(int(self.headers.get("Content-Length") or 0))
                return bytes(kept), total, complete

            def _handle(self) -> None:
                try:
                    body, body_len, complete = self._body()
                except (OSError, ValueError):  # reset or garbage mid-body: the request never completed
                    body, body_len, complete = b"", 0, False
                headers = {k.lower(): v for k, v in self.headers.items()}
                sni = getattr(self.connection, _SNI_ATTR, None)
                vhost = _vhost(self.path, headers, sni)
                rec = FrontRequest(self.command, self.path, sni, vhost, headers, body_len, complete, body)
                with front._lock:
                    front.requests.append(rec)
                if not complete:
                    self.close_connection = True
                    return
                reply = f"hello from {rec.vhost}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = _handle  # noqa: N815 - http.server API

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:

            def remember_sni(sock: ssl.SSLSocket, name: str | None, _ctx: ssl.SSLContext) -> None:
                setattr(sock, _SNI_ATTR, name)

            serve_tls(self.server, *tls, sni_callback=remember_sni)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def seen_by(self, host: str) -> list[FrontRequest]:
        """Requests the front routed to `host` or that arrived with `host` as their TLS name."""
        host = host.lower()
        with self._lock:
            return [r for r in self.requests if r.vhost == host or (r.sni or "").lower() == host]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
