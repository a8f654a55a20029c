"""Leak blocking and the audit log through the real vault process (mitmproxy, relay, control).

A fake gateway control socket records the vault's `leak` notices.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.process import VaultProcess
from proxy.secrets import SecretStore
from tests.vault.test_vault_e2e import Upstream, read_response

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "tok-REAL-leak-e2e-4242"


class FakeGatewaySocket:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.ops: list[dict] = []

    async def start(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.ops.append(json.loads(await reader.readline()))
            writer.write(b'{"ok": true}\n')
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_unix_server(serve, path=str(self.path))


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("lk")
    d = {k: base / k for k in ("cfg", "state", "grp")}
    for p in d.values():
        p.mkdir(mode=0o700)
    d["gw"] = base / "gw.sock"
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(env: dict[str, Path]) -> AsyncIterator[tuple[VaultProcess, Upstream, FakeGatewaySocket]]:
    up = Upstream()
    gw = FakeGatewaySocket(env["gw"])
    await gw.start()
    SecretStore(env["cfg"]).add("tok", SECRET, f"127.0.0.1:{up.port}", header="x-token", fmt="{value}")
    vp = VaultProcess(
        env["cfg"], env["state"], allow_private=[f"127.0.0.1:{up.port}"], gateway_socket=env["gw"]
    )
    await vp.start(timeout=30)
    await vp.open_group("main", env["grp"] / "vault.sock")
    yield vp, up, gw
    await vp.stop()
    gw.server.close()
    up.close()


async def send(env: dict[str, Path], port: int, method: str, path: str, body: bytes = b"") -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(env["grp"] / "vault.sock"))
    try:
        writer.write(
            f"{method} http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"x-token: placeholder\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def test_clean_request_injected_and_audited(setup, env) -> None:
    vp, up, _ = setup
    resp = await send(env, up.port, "GET", "/v1/items?q=hello&page=2")
    assert resp.startswith(b"HTTP/1.1 200"), resp
    assert up.requests[-1]["x-token"] == SECRET  # injection is not mistaken for a leak
    await asyncio.sleep(1.2)  # the audit buffer is flushed twice a second
    entries = list(read_entries(env["state"]))
    last = entries[-1]
    assert last["group"] == "main" and last["method"] == "GET" and last["status"] == 200
    assert last["path"] == "/v1/items?q=&page="
    assert last["secret"] == "tok" and last["host"] == "127.0.0.1" and last["port"] == up.port
    assert last["resp_bytes"] == len(b"hello from upstream") and last["ms"] >= 0
    assert SECRET not in (env["state"] / "audit.jsonl").read_text()


async def test_secret_in_binary_body_is_blocked_once_notified(setup, env) -> None:
    _, up, gw = setup
    before = len(up.requests)
    body = os.urandom(2048) + SECRET.encode() + os.urandom(2048)
    for _ in range(2):
        resp = await send(env, up.port, "POST", "/upload", body)
        assert resp.startswith(b"HTTP/1.1 403"), resp[:300]
        assert b"stored secret tok" in resp and SECRET.encode() not in resp
    assert len(up.requests) == before  # the upstream saw nothing (POST is not even handled there)
    await asyncio.sleep(0.3)
    assert gw.ops == [{"op": "leak", "group": "main", "pattern": "stored secret tok"}]


async def test_secret_in_url_is_blocked(setup, env) -> None:
    _, up, gw = setup
    before = len(up.requests)
    resp = await send(env, up.port, "GET", "/exfil?d=" + quote("x" + SECRET, safe=""))
    assert resp.startswith(b"HTTP/1.1 403"), resp
    resp = await send(env, up.port, "GET", "/exfil/ghp_" + "Q" * 36)
    assert resp.startswith(b"HTTP/1.1 403") and b"GitHub token" in resp
    assert len(up.requests) == before
    await asyncio.sleep(1.2)
    assert [op["pattern"] for op in gw.ops] == ["stored secret tok", "GitHub token"]
    refused = [e for e in read_entries(env["state"]) if e["status"] == 403]
    assert {e["refusal"] for e in refused} == {"leak: stored secret tok", "leak: GitHub token"}
    assert all(SECRET not in json.dumps(e) for e in refused)
