"""VaultAddon policy units: address classification, allow list, identity, pinning, injection."""

from __future__ import annotations

import gc
import ipaddress
import weakref

import pytest
from mitmproxy import connection
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from proxy.addon import VaultAddon, ip_is_disallowed, parse_hostport
from proxy.peers import PeerRegistry
from proxy.secrets import SecretInfo


@pytest.mark.parametrize(
    "ip",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fd00::1",
        "fc00::1",
        "fe80::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "64:ff9b::7f00:1",
        "2002:7f00:1::",
        "fec0::1",
    ],
)
def test_disallowed_addresses(ip: str) -> None:
    assert ip_is_disallowed(ipaddress.ip_address(ip))


@pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(ip: str) -> None:
    assert not ip_is_disallowed(ipaddress.ip_address(ip))


def test_parse_hostport() -> None:
    assert parse_hostport("LocalHost:8080") == ("localhost", 8080)
    assert parse_hostport("[::1]:443") == ("::1", 443)
    # ".:1" parsed as an empty host and "h:４４３" as port 443 (found by tests/fuzz)
    for bad in ("nohost", ":80", "h:0", "h:x", "[::1]", ".:1", "..:80", "h:４４３", "h:²"):
        with pytest.raises(ValueError):
            parse_hostport(bad)


async def test_allow_list_literal_and_resolved() -> None:
    a = VaultAddon(PeerRegistry(), ["127.0.0.1:9000", "myllm.internal:8000"])
    assert (await a.check_upstream("127.0.0.1", 9000)).ok
    assert not (await a.check_upstream("127.0.0.1", 9001)).ok
    # localhost is not listed itself but every address it resolves to must be: ::1 may not be
    v = await a.check_upstream("localhost", 9001)
    assert not v.ok and "private" in v.reason
    assert not (await a.check_upstream("2130706433", 80)).ok  # numeric form of 127.0.0.1

    async def fake_resolve(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    a._resolve = fake_resolve  # type: ignore[method-assign]
    v = await a.check_upstream("myllm.internal", 8000)
    assert v.ok and v.pinned == "10.0.0.7"
    assert not (await a.check_upstream("other.internal", 8000)).ok


def _client(port: int) -> connection.Client:
    return connection.Client(peername=("127.0.0.1", port), sockname=("127.0.0.1", 1), timestamp_start=0)


def test_identity_comes_from_registry_only() -> None:
    reg = PeerRegistry()
    a = VaultAddon(reg)
    stranger = _client(5555)
    a.client_connected(stranger)
    assert stranger.error and a.group_of(stranger) is None
    reg.register(("127.0.0.1", 6666), "main")
    known = _client(6666)
    a.client_connected(known)
    assert not known.error and a.group_of(known) == "main"
    # The group outlives the disconnect (a flow's last audit line comes after it) but not the
    # connection object: nothing accumulates per connection.
    assert a.group_of(_client(6666)) is None  # another connection from the same port: its own id
    gone = weakref.ref(known)
    del known
    gc.collect()
    assert gone() is None and len(a._groups) == 0


async def test_server_connect_pins_checked_ip_against_rebinding() -> None:
    reg = PeerRegistry()
    reg.register(("127.0.0.1", 7777), "g")
    a = VaultAddon(reg)
    client = _client(7777)
    a.client_connected(client)
    answers = {"api.example.com": ["93.184.216.34"]}

    async def fake_resolve(host: str, port: int) -> list[str]:
        return answers[host]

    a._resolve = fake_resolve  # type: ignore[method-assign]
    server = connection.Server(address=("api.example.com", 443))
    data = server_hooks.ServerConnectionHookData(client=client, server=server)
    await a.server_connect(data)
    assert server.error is None
    assert server.address == ("93.184.216.34", 443)  # the TLS name is pinned by proxy/pinning.py
    a.server_connected(data)
    assert server.address == ("api.example.com", 443)  # restored for connection reuse

    # the name now rebinds to the metadata service: the connect-time check refuses it
    answers["api.example.com"] = ["169.254.169.254"]
    server2 = connection.Server(address=("api.example.com", 443))
    await a.server_connect(server_hooks.ServerConnectionHookData(client=client, server=server2))
    assert server2.error and "refused" in server2.error

    # unknown client never gets a server connection
    server3 = connection.Server(address=("api.example.com", 443))
    await a.server_connect(server_hooks.ServerConnectionHookData(client=_client(1234), server=server3))
    assert server3.error


def test_injection_rules() -> None:
    reg = PeerRegistry()
    a = VaultAddon(reg, ["127.0.0.1:8080"])
    info = SecretInfo("s", "api.example.com", "Authorization", "Bearer {value}", "")
    local = SecretInfo("l", "127.0.0.1:8080", "x-api-key", "{value}", "")
    a.set_secrets([(info, "REAL"), (local, "LOCAL")])
    a.group_of = lambda client: "main"  # type: ignore[method-assign]  # scoping: main may use both

    f = tflow.tflow()
    f.request.scheme, f.request.host, f.request.port = "https", "api.example.com", 443
    f.request.headers["Authorization"] = "Bearer placeholder"
    a._inject(f)
    assert f.request.headers["Authorization"] == "Bearer REAL"

    # plain HTTP to a public host: no credential in cleartext
    f = tflow.tflow()
    f.request.scheme, f.request.host, f.request.port = "http", "api.example.com", 80
    f.request.headers["Authorization"] = "Bearer placeholder"
    a._inject(f)
    assert f.request.headers["Authorization"] == "Bearer placeholder"

    # other hosts never receive it
    f = tflow.tflow()
    f.request.scheme, f.request.host, f.request.port = "https", "evil.example", 443
    f.request.headers["Host"] = "api.example.com"
    a._inject(f)
    assert "REAL" not in str(f.request.headers)

    # explicitly allowed local upstream over plain HTTP
    f = tflow.tflow()
    f.request.scheme, f.request.host, f.request.port = "http", "127.0.0.1", 8080
    a._inject(f)
    assert f.request.headers["x-api-key"] == "LOCAL"
