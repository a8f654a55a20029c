"""Per-group unix sockets in front of mitmproxy's loopback listener.

Each group's `vault.sock` lives in a per-group directory that is bind-mounted into only
that group's container, so "which socket did this connection arrive on" is the group's
identity. For every accepted connection we bind a fresh loopback TCP socket, record
`(ip, port) -> group` in the shared `PeerRegistry` *before* connecting to mitmproxy, and
then pump bytes; the addon reads the identity back from the peer address.

One group must not be able to starve the others (issue 11: ~6,850 connections on one
group's socket slowed every group's model calls). Each group may hold at most
`max_connections` links at a time; a connection beyond that is answered 503 at once and
closed — never queued — so only the flooding group waits. A link that moves no bytes in
either direction for `idle_timeout_s` is closed by a sweeper (one timer per relay, not one
per link), so abandoned or trickling connections give their slot back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from core.paths import socket_path_problem
from proxy.peers import PeerRegistry

log = logging.getLogger("clawgate.vault.relay")

GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CHUNK = 64 * 1024
DEFAULT_MAX_CONNECTIONS = 64
DEFAULT_IDLE_TIMEOUT_S = 300.0
_WARN_EVERY_S = 30.0
_BUSY_GRACE_S = 2.0  # a refused connection lingers this long at most (its 503 must arrive)
# A burst of connects must reach `_Link` (to be counted, and answered 503 past the cap)
# rather than overflow the kernel's accept queue: a client whose non-blocking connect hits
# a full queue gets EAGAIN, and asyncio then hands it a socket that fails with EINVAL on its
# first read. The kernel caps this at net.core.somaxconn.
_BACKLOG = 4096


def _busy_response(group: str, limit: int) -> bytes:
    body = (
        f"clawgate vault: group {group!r} already has {limit} open connections to the vault\n"
        "([vault] max_connections_per_group); close some and retry.\n"
    ).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


class RelayError(Exception):
    """A group socket could not be opened (bad name/path, or the OS refused)."""


@dataclass
class _Group:
    socket_path: Path
    server: asyncio.AbstractServer
    links: set[_Link] = field(default_factory=set)
    refused: int = 0  # connections turned away since the last warning
    warned_at: float = 0.0


class Relay:
    """Owns the group sockets; all methods run on the vault's event loop."""

    def __init__(
        self,
        registry: PeerRegistry,
        target_port: int,
        target_host: str = "127.0.0.1",
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
    ) -> None:
        self.registry = registry
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self.idle_timeout_s = idle_timeout_s
        self._groups: dict[str, _Group] = {}
        self._by_local: dict[tuple[str, int], _Link] = {}  # relay source address -> link
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def groups(self) -> dict[str, Path]:
        return {name: g.socket_path for name, g in self._groups.items()}

    async def open_group(self, group: str, socket_path: str | os.PathLike[str]) -> Path:
        """(Re)create the group's socket; an existing socket for the group is replaced."""
        if not GROUP_RE.fullmatch(group):
            raise RelayError(f"invalid group name {group!r}")
        path = Path(socket_path)
        if not path.is_absolute():
            raise RelayError(f"socket path must be absolute: {socket_path}")
        if not path.parent.is_dir():
            raise RelayError(f"socket directory does not exist: {path.parent}")
        problem = socket_path_problem(path)
        if problem is not None:
            raise RelayError(problem)
        if group in self._groups:
            await self.close_group(group)
        _remove_stale(path)
        try:
            loop = asyncio.get_running_loop()
            server = await loop.create_unix_server(
                lambda: _Link(self, group), path=str(path), backlog=_BACKLOG
            )
            # The container's agent runs as an unprivileged uid; the per-group parent
            # directory is what keeps other groups out.
            os.chmod(path, 0o666)
        except OSError as e:
            raise RelayError(f"cannot listen on {path}: {e.strerror or e}") from None
        self._groups[group] = _Group(path, server)
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_idle(), name="relay-idle")
        log.info("relay: opened group %s at %s", group, path)
        return path

    async def close_group(self, group: str) -> bool:
        """Stop accepting, cut existing connections, remove the socket file."""
        g = self._groups.pop(group, None)
        if g is None:
            return False
        g.server.close()
        for link in list(g.links):
            link.abort()
        with contextlib.suppress(FileNotFoundError):
            g.socket_path.unlink()
        log.info("relay: closed group %s", group)
        return True

    async def close_all(self) -> None:
        for group in list(self._groups):
            await self.close_group(group)
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    def connections(self, group: str) -> int:
        g = self._groups.get(group)
        return len(g.links) if g is not None else 0

    def abort_peer(self, addr: object) -> bool:
        """Cut the link whose mitmproxy-side source address is `addr` (a flow's client peername)."""
        if not isinstance(addr, tuple) or len(addr) < 2:
            return False
        link = self._by_local.get((str(addr[0]), int(addr[1])))
        if link is None:
            return False
        link.abort(hard=True)
        return True

    def _attach(self, group: str, link: _Link) -> str:
        """ "ok", "busy" (the group is at its connection cap) or "closed" (no such group)."""
        g = self._groups.get(group)
        if g is None:
            return "closed"
        if len(g.links) >= self.max_connections:
            g.refused += 1
            now = time.monotonic()
            if now - g.warned_at >= _WARN_EVERY_S:
                log.warning(
                    "relay[%s]: %d connection(s) refused: at max_connections_per_group = %d",
                    group,
                    g.refused,
                    self.max_connections,
                )
                g.warned_at, g.refused = now, 0
            return "busy"
        g.links.add(link)
        return "ok"

    def _detach(self, group: str, link: _Link) -> None:
        g = self._groups.get(group)
        if g is not None:
            g.links.discard(link)
        if link.local is not None and self._by_local.get(link.local) is link:
            del self._by_local[link.local]

    async def _sweep_idle(self) -> None:
        every = max(0.2, min(self.idle_timeout_s / 4, 10.0))
        while True:
            await asyncio.sleep(every)
            cutoff = time.monotonic() - self.idle_timeout_s
            for g in list(self._groups.values()):
                for link in [lk for lk in g.links if lk.last_active < cutoff]:
                    log.info("relay: closing a connection idle for %.0fs", self.idle_timeout_s)
                    link.abort()


class _Upstream(asyncio.Protocol):
    """mitmproxy's side of a link: everything it sends goes straight to the container."""

    def __init__(self, link: _Link) -> None:
        self.link = link

    def data_received(self, data: bytes) -> None:
        self.link.down_write(data)

    def eof_received(self) -> bool:
        self.link.down_eof()
        return True  # keep our half open until the container closes too

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.abort()

    def pause_writing(self) -> None:  # mitmproxy reads slower than the container sends
        self.link.pause_down_reading()

    def resume_writing(self) -> None:
        self.link.resume_down_reading()


class _Link(asyncio.Protocol):
    """One container connection relayed to mitmproxy with transports and protocols only.

    No per-chunk futures or tasks: bytes go from one transport's `data_received` straight
    into the other's `write`, with flow control through pause/resume on both sides. This
    keeps the relay's cost negligible next to mitmproxy's in the same event loop.
    """

    def __init__(self, relay: Relay, group: str) -> None:
        self.relay = relay
        self.group = group
        self.down: asyncio.Transport | None = None
        self.up: asyncio.Transport | None = None
        self.local: tuple[str, int] | None = None
        self.pending: list[bytes] = []
        self.pending_eof = False
        self.eofs = 0  # both directions finished -> close the link
        self.closed = False
        self.refused = False  # over the group's cap: answered 503, input discarded until closed
        self.last_active = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream protocol is always handed a stream transport (the stub says BaseTransport).
        self.down = down = cast(asyncio.Transport, transport)
        state = self.relay._attach(self.group, self)
        if state != "ok":
            self.closed = self.refused = True
            if state != "busy":
                transport.close()
                return
            # Answer at once, then drop what the client already sent for a moment before
            # closing: closing with unread input would reset the connection and lose the 503.
            down.write(_busy_response(self.group, self.relay.max_connections))
            down.write_eof()
            asyncio.get_running_loop().call_later(_BUSY_GRACE_S, transport.close)
            return
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        if self.closed:  # cut (group closed, client gone) before this task ran: register nothing
            return
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.bind(("127.0.0.1", 0))
            self.local = sock.getsockname()
            # Before connect, since mitmproxy must find it; owned by this link, so only this
            # link's abort removes it (abort runs before the port can be reused).
            self.relay.registry.register(self.local, self.group, self)
            self.relay._by_local[self.local] = self
            await loop.sock_connect(sock, self.relay.target)
            transport, _ = await loop.create_connection(lambda: _Upstream(self), sock=sock)
        except OSError as e:
            log.warning("relay[%s]: cannot reach mitmproxy: %s", self.group, e)
            sock.close()
            self.abort()
            return
        if self.closed:
            transport.close()
            return
        self.up = transport
        for chunk in self.pending:
            self.up.write(chunk)
        self.pending.clear()
        if self.pending_eof and self.up.can_write_eof():
            self.up.write_eof()

    # container -> mitmproxy
    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self.last_active = time.monotonic()
        if self.up is None:
            self.pending.append(data)
        else:
            self.up.write(data)

    def eof_received(self) -> bool:
        if self.refused:
            return False  # the client is done: close now
        if self.up is None:
            self.pending_eof = True
        elif self.up.can_write_eof():
            self.up.write_eof()
        self.half_closed()
        return True

    def half_closed(self) -> None:
        """One direction is done; when both are, close (after buffered bytes are flushed)."""
        self.eofs += 1
        if self.eofs >= 2:
            self.abort()

    def pause_writing(self) -> None:  # the container reads slower than mitmproxy sends
        if self.up is not None:
            self.up.pause_reading()

    def resume_writing(self) -> None:
        if self.up is not None:
            self.up.resume_reading()

    # mitmproxy -> container
    def down_write(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.down is not None and not self.down.is_closing():
            self.down.write(data)

    def down_eof(self) -> None:
        if self.down is not None and self.down.can_write_eof() and not self.down.is_closing():
            self.down.write_eof()
        self.half_closed()

    def pause_down_reading(self) -> None:
        if self.down is not None:
            self.down.pause_reading()

    def resume_down_reading(self) -> None:
        if self.down is not None:
            self.down.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.abort()

    def abort(self, hard: bool = False) -> None:
        """Close both sides once; the identity mapping goes before the port can be reused.

        `hard` drops what is still buffered (a request the vault cuts must not be completed).
        """
        if self.closed:
            return
        self.closed = True
        if self.local is not None:
            self.relay.registry.unregister(self.local, self)
        for transport in (self.down, self.up):
            if transport is not None:
                if hard:
                    transport.abort()
                else:
                    transport.close()
        self.relay._detach(self.group, self)


def _remove_stale(path: Path) -> None:
    """Unlink a leftover socket from a previous run (but never a directory)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise RelayError(f"socket path is a directory: {path}")
    os.unlink(path)
