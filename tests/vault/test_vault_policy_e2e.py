"""Injection rules, per-group scoping and policies through the real vault process.

Fake upstreams listen on 127.0.0.1 only; each check looks at what the upstream received.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import pytest_asyncio

from proxy.process import VaultProcess
from proxy.rules import make_rule
from proxy.secrets import SecretStore

pytestmark = pytest.mark.asyncio(loop_scope="module")


class Upstream:
    """Records (method, path, headers, body); /sse streams, /big and /chunked are large."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.release_sse = threading.Event()
        up = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                n = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(n) if n else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                up.requests.append({"method": self.command, "path": self.path, "h": headers, "body": body})

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                self._record()
                if self.path == "/sse":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    self._chunk(b"data: first\n\n")
                    up.release_sse.wait(10)
                    self._chunk(b"data: second\n\n")
                    self._chunk(b"")
                    return
                if self.path == "/chunked":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for _ in range(10):
                        self._chunk(b"x" * 1000)
                    self._chunk(b"")
                    return
                body = b"y" * 10_000 if self.path == "/big" else b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET  # noqa: N815

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def last(self) -> dict:
        return self.requests[-1]

    def close(self) -> None:
        self.release_sse.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def ups() -> Iterator[tuple[Upstream, Upstream]]:
    up, model = Upstream(), Upstream()
    yield up, model
    up.close()
    model.close()


async def _start(base: Path, up: Upstream, model: Upstream, vault_toml: str) -> VaultProcess:
    for d in ("cfg", "state", "main", "team", "limited"):
        (base / d).mkdir(mode=0o700, exist_ok=True)
    (base / "cfg" / "config.toml").write_text(
        f'[model]\nbase_url = "http://127.0.0.1:{model.port}"\n'
        f'[vault]\nallow_private_upstreams = ["127.0.0.1:{up.port}", "127.0.0.1:{model.port}"]\n' + vault_toml
    )
    vp = VaultProcess(
        base / "cfg", base / "state", allow_private=[f"127.0.0.1:{up.port}", f"127.0.0.1:{model.port}"]
    )
    await vp.start(timeout=30)
    for g in ("main", "team", "limited"):
        await vp.open_group(g, base / g / "vault.sock")
    return vp


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vault(tmp_path_factory: pytest.TempPathFactory, ups) -> AsyncIterator[tuple[VaultProcess, Path]]:
    up, model = ups
    base = tmp_path_factory.mktemp("pol")
    store = SecretStore(base / "cfg")
    h = f"127.0.0.1:{up.port}"
    store.add("hdr", "HDR", rules=[make_rule(h, "/hdr/*", header="X-Hdr", fmt="k {value}")])
    store.add("exact", "EXACT", rules=[make_rule(h, "/exact", header="X-Exact", fmt="{value}")])
    store.add("seg", "SEG", rules=[make_rule(h, "/repos/*/pulls", header="X-Seg", fmt="{value}")])
    store.add("meth", "METH", rules=[make_rule(h, "/m", ["POST"], header="X-Meth", fmt="{value}")])
    store.add(
        "rep", "REP", rules=[make_rule(h, "/rep", action="replace_header", header="X-Rep", fmt="{value}")]
    )
    store.add("rm", "RM", rules=[make_rule(h, "/rm", action="remove_header", header="Cookie")])
    store.add("q", "QV", rules=[make_rule(h, "/q", action="set_query", param="key")])
    store.add("tg", "123:TG", rules=[make_rule(h, "/*", action="path_template", fmt="/bot{value}")])
    store.add(
        "teamonly", "TEAM", rules=[make_rule(h, "/scoped", header="X-Scoped", fmt="{value}")], groups=["team"]
    )
    vp = await _start(
        base,
        up,
        model,
        "max_request_bytes = 1000\nmax_response_bytes = 5000\n"
        f'[vault.egress]\nteam = ["127.0.0.1:{up.port}"]\n',
    )
    yield vp, base
    await vp.stop()


async def send(
    base: Path, group: str, port: int, path: str, method: str = "GET", extra: str = "", body: bytes = b""
) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(base / group / "vault.sock"))
    try:
        writer.write(
            (
                f"{method} http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{extra}"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            + body
        )
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()


async def test_match_forms_and_actions(vault, ups) -> None:
    vp, base = vault
    up, _ = ups
    p = up.port
    assert (await send(base, "main", p, "/hdr/a/b")).startswith(b"HTTP/1.1 200")
    assert up.last()["h"]["x-hdr"] == "k HDR"  # prefix path, set_header with format
    await send(base, "main", p, "/hdrx")
    assert "x-hdr" not in up.last()["h"]  # prefix is on segment boundaries
    await send(base, "main", p, "/exact")
    assert up.last()["h"]["x-exact"] == "EXACT"
    await send(base, "main", p, "/exact/more")
    assert "x-exact" not in up.last()["h"]
    await send(base, "main", p, "/repos/me/pulls")
    assert up.last()["h"]["x-seg"] == "SEG"  # per-segment wildcard
    await send(base, "main", p, "/repos/me/issues")
    assert "x-seg" not in up.last()["h"]
    await send(base, "main", p, "/m", "POST")
    assert up.last()["h"]["x-meth"] == "METH"
    await send(base, "main", p, "/m", "GET")
    assert "x-meth" not in up.last()["h"]  # method-restricted rule
    await send(base, "main", p, "/rep", extra="X-Rep: placeholder\r\n")
    assert up.last()["h"]["x-rep"] == "REP"
    await send(base, "main", p, "/rep")
    assert "x-rep" not in up.last()["h"]  # replace only if present
    await send(base, "main", p, "/rm", extra="Cookie: session=1\r\n")
    assert "cookie" not in up.last()["h"]
    await send(base, "main", p, "/q?a=1")
    assert up.last()["path"] == "/q?a=1&key=QV"
    await send(base, "main", p, "/botplaceholder/getMe")
    assert up.last()["path"] == "/bot123:TG/getMe"
    log = vp.log_path.read_text()
    for value in ("HDR", "EXACT", "SEG", "METH", "123:TG", "QV"):
        assert f"{value}\n" not in log and f" {value}" not in log


async def test_group_scoping_forward(vault, ups) -> None:
    _, base = vault
    up, _ = ups
    assert (await send(base, "team", up.port, "/scoped")).startswith(b"HTTP/1.1 200")
    assert up.last()["h"]["x-scoped"] == "TEAM"
    assert (await send(base, "main", up.port, "/scoped")).startswith(b"HTTP/1.1 200")
    assert "x-scoped" not in up.last()["h"]  # forwarded without the credential
    await send(base, "team", up.port, "/exact")
    assert "x-exact" not in up.last()["h"]  # main-only secret (the default)


async def test_egress_allowlist(vault, ups) -> None:
    _, base = vault
    up, model = ups
    n = len(up.requests)
    resp = await send(base, "limited", up.port, "/exact")
    assert resp.startswith(b"HTTP/1.1 403")
    assert b"[vault.egress]" in resp and b"limited" in resp
    assert len(up.requests) == n  # never reached the upstream
    assert (await send(base, "limited", model.port, "/v1/messages")).startswith(b"HTTP/1.1 200")  # model host
    # CONNECT to a host off the allowlist is refused too
    reader, writer = await asyncio.open_unix_connection(str(base / "limited" / "vault.sock"))
    writer.write(f"CONNECT 127.0.0.1:{up.port} HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode())
    assert (await asyncio.wait_for(reader.read(12), 10)).startswith(b"HTTP/1.1 403")
    writer.close()


async def test_request_and_response_size_limits(vault, ups) -> None:
    _, base = vault
    up, _ = ups
    n = len(up.requests)
    resp = await send(base, "main", up.port, "/post", "POST", body=b"z" * 2000)
    assert resp.startswith(b"HTTP/1.1 413") and b"max_request_bytes" in resp
    assert len(up.requests) == n
    assert (await send(base, "main", up.port, "/post", "POST", body=b"z" * 500)).startswith(b"HTTP/1.1 200")
    big = await send(base, "main", up.port, "/big")  # known length over the cap: aborted
    assert big.count(b"y") == 0
    chunked = await send(base, "main", up.port, "/chunked")  # unknown length: cut at the cap
    assert chunked.startswith(b"HTTP/1.1 200") and chunked.count(b"x") == 5000


async def test_sse_is_streamed(vault, ups) -> None:
    _, base = vault
    up, _ = ups
    up.release_sse.clear()
    reader, writer = await asyncio.open_unix_connection(str(base / "main" / "vault.sock"))
    try:
        writer.write(
            f"GET http://127.0.0.1:{up.port}/sse HTTP/1.1\r\nHost: 127.0.0.1:{up.port}\r\n\r\n".encode()
        )
        got = b""
        while b"data: first" not in got:  # arrives while the upstream still holds the stream open
            chunk = await asyncio.wait_for(reader.read(4096), 5)
            assert chunk, got
            got += chunk
        assert b"second" not in got
        up.release_sse.set()
        while b"data: second" not in got:
            got += await asyncio.wait_for(reader.read(4096), 5)
    finally:
        up.release_sse.set()
        writer.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def strict(tmp_path_factory: pytest.TempPathFactory, ups) -> AsyncIterator[tuple[VaultProcess, Path]]:
    up, model = ups
    base = tmp_path_factory.mktemp("strict")
    SecretStore(base / "cfg").add("mainkey", "MK", f"127.0.0.1:{up.port}", header="X-Main", fmt="{value}")
    vp = await _start(
        base,
        up,
        model,
        f'unscoped = "refuse"\n[vault.egress]\nteam = ["127.0.0.1:{up.port}"]\n'
        "[vault.rate_limit]\nper_host_per_minute = 2\n",
    )
    yield vp, base
    await vp.stop()


async def test_unscoped_refuse_and_rate_limit(strict, ups) -> None:
    _, base = strict
    up, _ = ups
    n = len(up.requests)
    resp = await send(base, "team", up.port, "/x")
    assert resp.startswith(b"HTTP/1.1 403") and b"mainkey" in resp and b"--groups" in resp
    assert len(up.requests) == n
    assert (await send(base, "main", up.port, "/1")).startswith(b"HTTP/1.1 200")
    assert up.last()["h"]["x-main"] == "MK"
    assert (await send(base, "main", up.port, "/2")).startswith(b"HTTP/1.1 200")
    resp = await send(base, "main", up.port, "/3")
    assert resp.startswith(b"HTTP/1.1 429"), resp
    head = resp.split(b"\r\n\r\n")[0].lower()
    retry = int(head.split(b"retry-after:")[1].split(b"\r\n")[0])
    assert 1 <= retry <= 60
    assert len(up.requests) == n + 2


async def test_last_used_is_recorded(strict) -> None:
    vp, base = strict
    await vp.stop()  # the vault flushes usage on shutdown (and every 10 s while running)
    assert SecretStore(base / "cfg").get("mainkey").last_used
