"""The relay's identity registrations under churn: never missing, never left behind.

Identity in the vault is the loopback port a relay link connects from (proxy/peers.py).
Two failures would be silent in ordinary tests: a link cut before its connect task ran
used to register its port anyway and never remove it (a stale entry lends the group's
identity to whatever binds that port next), and a removal keyed only by address could
delete the entry of a newer link on a reused port (that connection is then refused as a
stranger). Real sockets and the real relay here; a plain TCP server stands in for
mitmproxy and checks, the moment it accepts, that the peer is registered to the group.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from proxy.peers import PeerRegistry
from proxy.relay import Relay


class CheckingTarget:
    """Accepts like mitmproxy would and records whether each peer was registered then."""

    def __init__(self, registry: PeerRegistry) -> None:
        self.registry = registry
        self.accepted = 0
        self.strangers: list[object] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        self.accepted += 1
        if self.registry.lookup(peer) != "team":
            self.strangers.append(peer)
        with contextlib.suppress(ConnectionError):
            line = await reader.readline()
            writer.write(line)
            await writer.drain()
        writer.close()


async def _client(path: Path, hang_up_at_once: bool) -> bool:
    """One sandbox connection: True if its echo came back."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False  # the group socket was being replaced
    try:
        if hang_up_at_once:
            return False
        writer.write(b"ping\n")
        await writer.drain()
        return await asyncio.wait_for(reader.readline(), 10) == b"ping\n"
    except (OSError, asyncio.IncompleteReadError):
        return False
    finally:
        writer.close()


@pytest.mark.asyncio
async def test_churn_and_group_restarts_leave_no_registration_and_refuse_no_link(tmp_path: Path) -> None:
    registry = PeerRegistry()
    target = CheckingTarget(registry)
    relay = Relay(registry, await target.start())
    path = tmp_path / "vault.sock"
    await relay.open_group("team", path)
    echoed = 0
    try:
        for round_no in range(8):
            clients = [asyncio.create_task(_client(path, hang_up_at_once=i % 3 == 0)) for i in range(120)]
            # Cut the group while its links are being accepted and connected: some are attached
            # with their connect task not yet run, which is where a registration used to leak.
            while relay.connections("team") == 0 and not all(c.done() for c in clients):
                await asyncio.sleep(0)
            if round_no % 2 == 0:
                await relay.open_group("team", path)  # replaces the socket and cuts every link
            echoed += sum(await asyncio.gather(*clients))
            for _ in range(200):  # links finish closing on the loop
                if relay.connections("team") == 0 and len(registry) == 0:
                    break
                await asyncio.sleep(0.01)
            assert len(registry) == 0, f"round {round_no}: {len(registry)} entries outlived their link"
    finally:
        await relay.close_all()
        target.server.close()
    assert target.accepted > 0 and echoed > 0  # the churn did exercise real links
    assert target.strangers == [], "a relay link reached the target unregistered"


def test_only_the_owner_removes_an_entry_and_refusals_are_explained() -> None:
    registry = PeerRegistry()
    old_link, new_link = object(), object()
    registry.register(("127.0.0.1", 40000), "team", old_link)
    assert registry.unregister(("127.0.0.1", 40000), old_link)
    registry.register(("127.0.0.1", 40000), "ops", new_link)  # the port, reused by another link
    assert not registry.unregister(("127.0.0.1", 40000), old_link)  # a late removal does nothing
    assert registry.lookup(("127.0.0.1", 40000)) == "ops"
    assert registry.unregister(("127.0.0.1", 40000), new_link)
    assert registry.lookup(("127.0.0.1", 40000)) is None
    assert "a link of group 'ops' on this port closed" in registry.describe_unknown(("127.0.0.1", 40000))
    assert "another local process" in registry.describe_unknown(("127.0.0.1", 40001))
    assert "another local process" in registry.describe_unknown("garbage")
    assert registry.lookup(("127.0.0.1", "x")) is None and registry.lookup(None) is None
