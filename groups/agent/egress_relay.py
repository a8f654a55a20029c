"""TCP-to-unix-socket relay: the container's only way out.

The sandbox has no network interface but loopback, so ``HTTPS_PROXY`` points at
``127.0.0.1:$CLAWGATE_PROXY_PORT`` and this relay forwards every byte to the vault's unix
socket mounted into the container. It is deliberately dumb (no parsing): the vault outside
does authentication, credential injection and policy. If the vault is unavailable the client
connection is simply closed; there is no fallback path (fail closed).
"""

import contextlib
import socket
import threading

_BUF = 65536


class EgressRelay:
    """A listening relay; ``port`` is the bound port (useful when started with port 0)."""

    def __init__(self, listener: socket.socket, vault_socket: str) -> None:
        self._listener = listener
        self._vault_socket = vault_socket
        self.port: int = listener.getsockname()[1]
        self._closed = False
        self._thread = threading.Thread(target=self._accept_loop, name="egress-relay", daemon=True)

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            threading.Thread(target=self._handle, args=(client,), daemon=True).start()

    def _handle(self, client: socket.socket) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            upstream.connect(self._vault_socket)
        except OSError:
            # Fail closed: the vault is the only permitted egress.
            upstream.close()
            _close(client)
            return
        link = _Link(client, upstream)
        threading.Thread(target=link.pump, args=(upstream, client), daemon=True).start()
        link.pump(client, upstream)

    def close(self) -> None:
        """Stop accepting new connections (existing ones finish on their own)."""
        self._closed = True
        _close(self._listener)


class _Link:
    """One relayed connection; closes both sockets once both directions are finished."""

    def __init__(self, a: socket.socket, b: socket.socket) -> None:
        self._socks = (a, b)
        self._lock = threading.Lock()
        self._done = 0

    def pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(_BUF)
                if not data:
                    break
                dst.sendall(data)
            # Half-close: tell the other side we are done sending, keep reading its reply.
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
        except OSError:
            # Any error tears down both directions so the peer thread wakes up too.
            for s in self._socks:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        with self._lock:
            self._done += 1
            finished = self._done == 2
        if finished:
            for s in self._socks:
                _close(s)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def start(port: int, vault_socket: str, host: str = "127.0.0.1") -> EgressRelay:
    """Bind and start relaying in a daemon thread; listening when this returns.

    Binding happens synchronously so the first model call can never race the listener.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    relay = EgressRelay(listener, vault_socket)
    relay._thread.start()
    return relay
