"""Per-group unix sockets in front of mitmproxy's loopback listener.

Each group's `vault.sock` lives in a per-group directory that is bind-mounted into only
that group's container, so "which socket did this connection arrive on" is the group's
identity. For every accepted connection we bind a fresh loopback TCP socket, record
`(ip, port) -> group` in the shared `PeerRegistry` *before* connecting to mitmproxy, and
then pump bytes; the addon reads the identity back from the peer address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path

from proxy.addon import PeerRegistry

log = logging.getLogger("clawgate.vault.relay")

GROUP_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_CHUNK = 64 * 1024


class RelayError(Exception):
    """A group socket could not be opened (bad name/path, or the OS refused)."""


@dataclass
class _Group:
    socket_path: Path
    server: asyncio.AbstractServer
    tasks: set[asyncio.Task] = field(default_factory=set)


class Relay:
    """Owns the group sockets; all methods run on the vault's event loop."""

    def __init__(self, registry: PeerRegistry, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.registry = registry
        self.target = (target_host, target_port)
        self._groups: dict[str, _Group] = {}

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
        if len(os.fsencode(path)) >= 104:
            raise RelayError(f"socket path too long for a unix socket: {path}")
        if group in self._groups:
            await self.close_group(group)
        _remove_stale(path)
        try:
            server = await asyncio.start_unix_server(
                lambda r, w: self._on_client(group, r, w), path=str(path)
            )
            # The container's agent runs as an unprivileged uid; the per-group parent
            # directory is what keeps other groups out.
            os.chmod(path, 0o666)
        except OSError as e:
            raise RelayError(f"cannot listen on {path}: {e.strerror or e}") from None
        self._groups[group] = _Group(path, server)
        log.info("relay: opened group %s at %s", group, path)
        return path

    async def close_group(self, group: str) -> bool:
        """Stop accepting, cut existing connections, remove the socket file."""
        g = self._groups.pop(group, None)
        if g is None:
            return False
        g.server.close()
        for task in list(g.tasks):
            task.cancel()
        if g.tasks:
            await asyncio.gather(*g.tasks, return_exceptions=True)
        with contextlib.suppress(FileNotFoundError):
            g.socket_path.unlink()
        log.info("relay: closed group %s", group)
        return True

    async def close_all(self) -> None:
        for group in list(self._groups):
            await self.close_group(group)

    async def _on_client(
        self, group: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        g = self._groups.get(group)
        task = asyncio.current_task()
        if g is None or task is None:
            writer.close()
            return
        g.tasks.add(task)
        try:
            await self._serve(group, reader, writer)
        except asyncio.CancelledError:
            pass  # close_group() cut this connection; nothing to report
        finally:
            g.tasks.discard(task)

    async def _serve(self, group: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        local: tuple[str, int] | None = None
        try:
            sock.bind(("127.0.0.1", 0))
            local = sock.getsockname()
            self.registry.register(local, group)  # before connect: mitmproxy must find it
            await loop.sock_connect(sock, self.target)
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
        except OSError as e:
            log.warning("relay[%s]: cannot reach mitmproxy: %s", group, e)
            if local is not None:
                self.registry.unregister(local)
            sock.close()
            writer.close()
            return
        try:
            await asyncio.gather(_pump(reader, up_writer), _pump(up_reader, writer))
        finally:
            # The addon resolved the identity when mitmproxy accepted the connection, so the
            # mapping can go before the port is released and could be bound by anyone else.
            self.registry.unregister(local)
            for w in (writer, up_writer):
                w.close()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    await w.wait_closed()


def _remove_stale(path: Path) -> None:
    """Unlink a leftover socket from a previous run (but never a directory)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise RelayError(f"socket path is a directory: {path}")
    os.unlink(path)


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
