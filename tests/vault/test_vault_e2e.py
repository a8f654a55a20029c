"""The real vault process end to end: relay identity, injection, private-upstream refusal,
fail-closed on stop, supervisor restart. Fake upstreams listen on 127.0.0.1 only."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import socket
import ssl
import stat
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pytest_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from proxy.process import VaultProcess, VaultUnavailable
from proxy.secrets import SecretStore
from tests.fakes.tls import serve_tls

pytestmark = pytest.mark.asyncio(loop_scope="module")

REAL_KEY = "sk-ant-REAL-e2e-7f3a9c1d2b"
TLS_KEY = "sk-openai-REAL-tls-55aa"
PLACEHOLDER = "placeholder"


def make_cert(dir_: Path) -> tuple[Path, Path]:
    """Self-signed certificate for 127.0.0.1 (the fake HTTPS upstream's identity)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clawgate test upstream")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = dir_ / "upstream.pem", dir_ / "upstream.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Upstream:
    """A loopback HTTP(S) server recording every request's headers."""

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.requests: list[dict[str, str]] = []
        rec = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                rec.append({k.lower(): v for k, v in self.headers.items()} | {":path": self.path})
                body = b"hello from upstream"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            serve_tls(self.server, *tls)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[Upstream, Upstream]]:
    allowed, forbidden = Upstream(), Upstream()
    yield allowed, forbidden
    allowed.close()
    forbidden.close()


@pytest.fixture(scope="module")
def tls_upstream(dirs: dict[str, Path]) -> Iterator[Upstream]:
    up = Upstream(tls=make_cert(dirs["certs"]))
    yield up
    up.close()


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("v")
    d = {k: base / k for k in ("cfg", "state", "grp", "certs")}
    for p in d.values():
        p.mkdir(mode=0o700)
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vault(
    upstreams: tuple[Upstream, Upstream], tls_upstream: Upstream, dirs: dict[str, Path]
) -> AsyncIterator[VaultProcess]:
    allowed, _ = upstreams
    store = SecretStore(dirs["cfg"])
    # non-main groups may only reach the model host unless allowed ([vault.egress])
    (dirs["cfg"] / "config.toml").write_text('[vault.egress]\nteam = ["127.0.0.1"]\n')
    store.add("anthropic", REAL_KEY, f"127.0.0.1:{allowed.port}", header="x-api-key", fmt="{value}")
    store.add("openai", TLS_KEY, f"127.0.0.1:{tls_upstream.port}")
    vp = VaultProcess(
        dirs["cfg"],
        dirs["state"],
        allow_private=[f"127.0.0.1:{allowed.port}", f"127.0.0.1:{tls_upstream.port}"],
        upstream_ca=dirs["certs"] / "upstream.pem",
    )
    await vp.start(timeout=30)
    await vp.open_group("main", dirs["grp"] / "vault.sock")
    yield vp
    await vp.stop()


def sock_path(dirs: dict[str, Path]) -> str:
    return str(dirs["grp"] / "vault.sock")


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 response (head + Content-Length body)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + await asyncio.wait_for(reader.readexactly(length), 10)


async def roundtrip(path: str, data: bytes) -> bytes:
    """Send raw bytes through the group socket and read one response."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(data)
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


def get(port: int, host: str = "127.0.0.1", extra: str = "") -> bytes:
    return (
        f"GET http://{host}:{port}/v1/messages HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"x-api-key: {PLACEHOLDER}\r\nConnection: close\r\n{extra}\r\n"
    ).encode()


async def test_start_state(vault: VaultProcess, dirs: dict[str, Path]) -> None:
    assert await vault.healthy()
    assert vault.ca_cert_path.name == "mitmproxy-ca-cert.pem"
    assert vault.ca_cert_path.is_file()
    assert b"PRIVATE KEY" not in vault.ca_cert_path.read_bytes()
    assert stat.S_IMODE(os.stat(vault.control_socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(sock_path(dirs)).st_mode) == 0o666


async def test_injects_real_key(vault: VaultProcess, upstreams, dirs) -> None:
    allowed, _ = upstreams
    allowed.requests.clear()
    resp = await roundtrip(sock_path(dirs), get(allowed.port))
    assert resp.startswith(b"HTTP/1.1 200"), resp
    assert b"hello from upstream" in resp
    assert REAL_KEY.encode() not in resp
    assert len(allowed.requests) == 1
    assert allowed.requests[0]["x-api-key"] == REAL_KEY
    assert allowed.requests[0][":path"] == "/v1/messages"
    log = vault.log_path.read_text()
    assert REAL_KEY not in log


async def tunnel_get(path: str, port: int, host: str) -> bytes:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert status.startswith(b"HTTP/1.1 200"), status
        writer.write(
            f"GET /tunnel HTTP/1.1\r\nHost: {host}\r\nx-api-key: {PLACEHOLDER}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_injects_inside_connect_tunnel(vault: VaultProcess, upstreams, dirs) -> None:
    allowed, _ = upstreams
    allowed.requests.clear()
    resp = await tunnel_get(sock_path(dirs), allowed.port, f"127.0.0.1:{allowed.port}")
    assert resp.startswith(b"HTTP/1.1 200"), resp
    assert allowed.requests[-1]["x-api-key"] == REAL_KEY
    # A Host header naming another host than the tunnel's is refused (proxy/pinning.py).
    allowed.requests.clear()
    resp = await tunnel_get(sock_path(dirs), allowed.port, "evil.example")
    assert resp.startswith(b"HTTP/1.1 421"), resp
    assert allowed.requests == []


async def test_https_interception_injects_over_tls(vault: VaultProcess, tls_upstream: Upstream, dirs) -> None:
    port = tls_upstream.port
    tls_upstream.requests.clear()
    reader, writer = await asyncio.open_unix_connection(sock_path(dirs))
    try:
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert status.startswith(b"HTTP/1.1 200"), status
        # the container trusts only the vault's public CA cert
        ctx = ssl.create_default_context(cafile=str(vault.ca_cert_path))
        await writer.start_tls(ctx, server_hostname="127.0.0.1")
        writer.write(
            f"GET /secure HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {PLACEHOLDER}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        resp = await read_response(reader)
    finally:
        writer.close()
    assert resp.startswith(b"HTTP/1.1 200"), resp
    assert tls_upstream.requests[-1]["authorization"] == f"Bearer {TLS_KEY}"
    assert TLS_KEY.encode() not in resp


async def test_private_upstream_not_allowed_gets_403(vault: VaultProcess, upstreams, dirs) -> None:
    _, forbidden = upstreams
    resp = await roundtrip(sock_path(dirs), get(forbidden.port))
    assert resp.startswith(b"HTTP/1.1 403"), resp
    assert b"allow_private_upstreams" in resp
    assert f'"127.0.0.1:{forbidden.port}"'.encode() in resp
    assert forbidden.requests == []


async def test_hostname_resolving_to_loopback_is_refused(vault: VaultProcess, upstreams, dirs) -> None:
    _, forbidden = upstreams
    resp = await roundtrip(sock_path(dirs), get(forbidden.port, host="localhost"))
    assert resp.startswith(b"HTTP/1.1 403"), resp
    # numeric tricks that getaddrinfo maps to 127.0.0.1
    resp = await roundtrip(sock_path(dirs), get(forbidden.port, host="2130706433"))
    assert resp.startswith((b"HTTP/1.1 403", b"HTTP/1.1 502")), resp
    assert forbidden.requests == []


@pytest.mark.parametrize(
    "target", ["127.0.0.1", "localhost", "[::ffff:127.0.0.1]", "169.254.169.254", "[fd00::1]"]
)
async def test_connect_to_private_is_refused(vault: VaultProcess, upstreams, dirs, target: str) -> None:
    _, forbidden = upstreams
    port = forbidden.port
    resp = await roundtrip(
        sock_path(dirs), f"CONNECT {target}:{port} HTTP/1.1\r\nHost: {target}:{port}\r\n\r\n".encode()
    )
    assert resp.startswith(b"HTTP/1.1 403"), resp
    assert forbidden.requests == []


async def test_direct_tcp_connection_is_refused(vault: VaultProcess, upstreams) -> None:
    allowed, _ = upstreams
    allowed.requests.clear()
    assert vault.listen_port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", vault.listen_port)
    local_port = writer.get_extra_info("sockname")[1]
    try:
        writer.write(get(allowed.port))
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            data = await asyncio.wait_for(reader.read(), 10)
            assert data == b""
    finally:
        writer.close()
    assert allowed.requests == []
    # The refusal's log line tells a stranger apart from a group link the vault lost track of.
    line = f"refused connection from unregistered peer ('127.0.0.1', {local_port})"
    for _ in range(50):
        log = vault.log_path.read_text(errors="replace")
        if line in log:
            break
        await asyncio.sleep(0.1)
    assert f"{line} (not a group link: another local process dialled the vault's port)" in log


async def test_control_protocol_errors(vault: VaultProcess) -> None:
    reader, writer = await asyncio.open_unix_connection(str(vault.control_socket))
    try:
        for line, expect in [
            (b"not json\n", "malformed"),
            (b"[1,2]\n", "op"),
            (b'{"op":"nope"}\n', "unknown op"),
            (b'{"op":"open_group","group":"../x","socket":"/tmp/x.sock"}\n', "invalid group"),
            (b'{"op":"open_group","group":"g","socket":"relative.sock"}\n', "absolute"),
        ]:
            writer.write(line)
            reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
            assert reply["ok"] is False and expect in reply["error"], reply
        writer.write(b'{"op":"ping"}\n')
        reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert reply["ok"] is True and reply["ca_cert"].endswith("mitmproxy-ca-cert.pem")
    finally:
        writer.close()
    with pytest.raises(VaultUnavailable):
        await vault.open_group("bad/name", "/tmp/whatever.sock")


async def test_reload_secrets(vault: VaultProcess, upstreams, dirs) -> None:
    allowed, _ = upstreams
    SecretStore(dirs["cfg"]).add(
        "anthropic",
        REAL_KEY + "-v2",
        f"127.0.0.1:{allowed.port}",
        header="x-api-key",
        fmt="{value}",
        replace=True,
    )
    assert await vault.reload_secrets() == 2
    allowed.requests.clear()
    await roundtrip(sock_path(dirs), get(allowed.port))
    assert allowed.requests[0]["x-api-key"] == REAL_KEY + "-v2"


async def test_second_group_and_close(vault: VaultProcess, upstreams, dirs) -> None:
    allowed, _ = upstreams
    other = dirs["grp"].parent / "grp2"
    other.mkdir(exist_ok=True)
    path = other / "vault.sock"
    await vault.open_group("team", path)
    resp = await roundtrip(str(path), get(allowed.port))
    assert resp.startswith(b"HTTP/1.1 200")
    await vault.close_group("team")
    assert not path.exists()
    with pytest.raises(OSError):
        await asyncio.open_unix_connection(str(path))


async def test_supervisor_restarts_after_kill(vault: VaultProcess, upstreams, dirs) -> None:
    allowed, _ = upstreams
    assert vault._proc is not None
    old_pid = vault._proc.pid
    os.kill(old_pid, 9)
    await vault._proc.wait()
    # fail closed while it is down
    with pytest.raises(OSError):
        await asyncio.open_unix_connection(sock_path(dirs))
    assert not await vault.healthy()
    await asyncio.wait_for(vault.ready.wait(), 30)
    assert vault.pid != old_pid and vault.restarts >= 1
    allowed.requests.clear()
    resp = await roundtrip(sock_path(dirs), get(allowed.port))
    assert resp.startswith(b"HTTP/1.1 200"), resp
    assert allowed.requests[0]["x-api-key"].startswith(REAL_KEY)


async def test_stop_fails_closed(vault: VaultProcess, dirs) -> None:
    await vault.stop()
    assert vault._proc is not None and vault._proc.returncode == 0  # clean exit on SIGTERM
    assert not (dirs["grp"] / "vault.sock").exists()
    log = vault.log_path.read_text()
    assert REAL_KEY not in log and TLS_KEY not in log
    assert not await vault.healthy()
    with pytest.raises(OSError):
        await asyncio.open_unix_connection(sock_path(dirs))
    with pytest.raises(OSError):
        s = socket.socket(socket.AF_INET)
        try:
            assert vault.listen_port is not None
            s.connect(("127.0.0.1", vault.listen_port))
        finally:
            s.close()
