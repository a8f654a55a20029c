"""Held requests over HTTP/2 through the real vault process (proxy/holds.py, proxy/stream_watch.py).

Over HTTP/2 a client gives up on one request by resetting its stream (RST_STREAM, CANCEL)
while the connection stays open for its other requests; the connection never closes, so
the HTTP/1.1 signal (proxy/addon.py: the client connection can no longer be read) never
comes. The hold must still see it: the question is withdrawn at once, an approval that
arrives afterwards forwards nothing, and the connection's other streams are unaffected.

The sandbox's side is a real h2 client speaking through the vault's TLS interception (it
trusts only the vault's CA); the upstream is a real HTTPS server the vault trusts through
`upstream_ca`; the gateway's control socket is the scripted stand-in of
tests/vault/test_vault_holds_e2e.py.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.process import VaultProcess
from proxy.rules import make_rule
from proxy.secrets import SecretStore
from tests.fakes.tls import make_ca_and_server_cert, serve_tls
from tests.vault.test_vault_holds_e2e import ScriptedGateway

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "tok-REAL-held-h2-e2e-7719"


class HttpsUpstream:
    """HTTPS (HTTP/1.1) on 127.0.0.1 recording every request's method, path and token."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.requests: list[dict[str, str]] = []
        rec = self.requests

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                rec.append({"path": self.path, "x-token": self.headers.get("x-token") or ""})
                out = b"done"
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            do_DELETE = do_POST = do_GET  # noqa: N815 - http.server API (a POST recorded at its headers)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serve_tls(self.server, cert, key)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def paths(self) -> list[str]:
        return [r["path"] for r in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class H2Client:
    """One HTTP/2 connection through the vault's CONNECT tunnel; streams answered as they end."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, authority: str) -> None:
        self.reader, self.writer, self.authority = reader, writer, authority
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self.answers: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
        self._status: dict[int, int] = {}
        self._body: dict[int, bytes] = {}
        self.conn.initiate_connection()
        self._pump = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, sock: Path, port: int, cafile: Path) -> H2Client:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        writer.write(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert status.startswith(b"HTTP/1.1 200"), status
        ctx = ssl.create_default_context(cafile=str(cafile))  # the sandbox trusts only the vault's CA
        ctx.set_alpn_protocols(["h2"])
        await asyncio.wait_for(writer.start_tls(ctx, server_hostname="127.0.0.1"), 10)
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        client = cls(reader, writer, f"127.0.0.1:{port}")
        await client.flush()
        return client

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def get(self, path: str) -> int:
        """Send a GET on a new stream; its answer arrives in `self.answers[stream_id]`."""
        return await self.send("GET", path, content_length="0")

    async def send(
        self, method: str, path: str, *, content_length: str | None = None, end_stream: bool = True
    ) -> int:
        """HEADERS on a new stream, with END_STREAM unless `end_stream` is False (then nothing is flushed)."""
        sid = self.conn.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "https"), (":authority", self.authority), (":path", path)]
        headers.append(("x-token", "placeholder"))
        if content_length is not None:
            headers.append(("content-length", content_length))
        self.answers[sid] = asyncio.get_running_loop().create_future()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        if end_stream:
            await self.flush()
        return sid

    async def cancel(self, sid: int) -> None:
        self.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        await self.flush()

    async def _read(self) -> None:
        while data := await self.reader.read(65536):
            for event in self.conn.receive_data(data):
                sid = getattr(event, "stream_id", 0)
                if isinstance(event, h2.events.ResponseReceived):
                    self._status[sid] = int(dict(event.headers)[":status"])
                elif isinstance(event, h2.events.DataReceived):
                    self._body[sid] = self._body.get(sid, b"") + event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    answer = self.answers.get(sid)
                    if answer is not None and not answer.done():
                        answer.set_result((self._status.get(sid, 0), self._body.get(sid, b"")))
            self.writer.write(self.conn.data_to_send())

    async def answer(self, sid: int, timeout: float = 15) -> tuple[int, bytes]:
        return await asyncio.wait_for(asyncio.shield(self.answers[sid]), timeout)

    def close(self) -> None:
        self._pump.cancel()
        self.writer.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("holdh2")
    d = {k: base / k for k in ("cfg", "state", "grp", "certs")}
    for p in d.values():
        p.mkdir(mode=0o700)
    d["gw"] = base / "gw.sock"
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(env: dict[str, Path]) -> AsyncIterator[tuple[HttpsUpstream, ScriptedGateway, VaultProcess]]:
    ca, cert, key = make_ca_and_server_cert(env["certs"])
    up = HttpsUpstream(cert, key)
    gw = ScriptedGateway(env["gw"])
    await gw.start()
    hp = f"127.0.0.1:{up.port}"
    (env["cfg"] / "config.toml").write_text(
        f'[vault]\nallow_private_upstreams = ["{hp}"]\n[vault.egress]\nteam = ["*"]\n'
        "[vault.approval]\ntimeout_s = 20\n"
    )
    SecretStore(env["cfg"]).add(
        "tok",
        SECRET,
        rules=[make_rule(hp, "/admin/*", [], "set_header", "x-token", "{value}", approve=True)],
        groups=["team"],
    )
    vp = VaultProcess(env["cfg"], env["state"], allow_private=[hp], gateway_socket=env["gw"], upstream_ca=ca)
    await vp.start(timeout=30)
    await vp.open_group("team", env["grp"] / "vault.sock")
    yield up, gw, vp
    await vp.stop()
    gw.server.close()
    up.close()


async def connect(setup: Any, env: dict[str, Path]) -> H2Client:
    up, _gw, vp = setup
    return await H2Client.open(env["grp"] / "vault.sock", up.port, vp.ca_cert_path)


async def test_approved_h2_request_is_forwarded_once_with_the_credential(setup, env) -> None:
    """The h2 path itself works: held, approved, sent once with the credential."""
    up, gw, _ = setup
    client = await connect(setup, env)
    try:
        sid = await client.get("/admin/ok")
        question, answer_to, _ = await gw.next()
        assert (question["method"], question["path"]) == ("GET", "/admin/ok")
        await gw.answer(answer_to, {"ok": True, "decision": "approved", "by": "tg:4242"})
        assert await client.answer(sid) == (200, b"done")
    finally:
        client.close()
    assert [r["x-token"] for r in up.requests if r["path"] == "/admin/ok"] == [SECRET]


async def test_resetting_one_held_stream_withdraws_its_question_and_spares_the_others(setup, env) -> None:
    up, gw, _ = setup
    client = await connect(setup, env)
    try:
        held = await client.get("/admin/deploy")
        _, answer_to, hung_up = await gw.next()
        free = await client.get("/public/status")  # the same connection, not held
        assert await client.answer(free) == (200, b"done")
        await client.cancel(held)  # the agent's HTTP client gave up on this one request only
        await asyncio.wait_for(hung_up.wait(), 10)  # the vault closed its question: withdrawn
        with pytest.raises(OSError):  # an approval now reaches nobody …
            for _ in range(20):
                await gw.answer(answer_to, {"ok": True, "decision": "approved", "by": "tg:4242"})
                await asyncio.sleep(0.05)
        again = await client.get("/public/again")  # the connection is still good
        assert await client.answer(again) == (200, b"done")
        await asyncio.sleep(0.5)
        assert "/admin/deploy" not in up.paths()  # … and forwards nothing
        assert not client.answers[held].done() or client.answers[held].result()[0] != 200
    finally:
        client.close()
    assert gw.questions.empty()


async def test_closing_the_h2_connection_withdraws_every_held_stream(setup, env) -> None:
    up, gw, _ = setup
    client = await connect(setup, env)
    await client.get("/admin/one")
    await client.get("/admin/two")
    waits = [await gw.next(), await gw.next()]
    client.close()  # the whole connection goes: both questions are withdrawn
    for _question, _writer, hung_up in waits:
        await asyncio.wait_for(hung_up.wait(), 10)
    await asyncio.sleep(0.3)
    assert not {"/admin/one", "/admin/two"} & set(up.paths())


async def test_withdrawals_are_in_the_audit_log(setup, env) -> None:
    for _ in range(100):  # the audit log is flushed every 0.5 s
        outcomes = [e.get("approval") for e in read_entries(env["state"])]
        if outcomes.count("withdrawn: the client disconnected") >= 3:
            break
        await asyncio.sleep(0.1)
    entries = list(read_entries(env["state"]))
    withdrawn = [e for e in entries if e.get("approval") == "withdrawn: the client disconnected"]
    assert sorted(e["path"] for e in withdrawn) == ["/admin/deploy", "/admin/one", "/admin/two"]
    assert {e["group"] for e in entries} == {"team"}  # also the lines written after the connection closed
    assert "approved by tg:4242" in [e.get("approval") for e in entries]
    assert SECRET not in json.dumps(entries)
