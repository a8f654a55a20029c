"""A group's request that leaves without the key it needed is reported to the gateway, once.

Through the real vault process: a secret scoped to `main` only, and a second group `team`
whose model calls match it. Before issue 12 the vault logged this at info level and nobody
heard of it — the team's model calls just failed with 401.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from proxy.process import VaultProcess
from proxy.secrets import SecretStore
from tests.vault.test_vault_e2e import Upstream, read_response
from tests.vault.test_vault_leaks_e2e import FakeGatewaySocket

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "tok-REAL-scope-e2e-7777"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("us")
    d = {k: base / k for k in ("cfg", "state", "main", "team")}
    for p in d.values():
        p.mkdir(mode=0o700)
    d["gw"] = base / "gw.sock"
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(env: dict[str, Path]) -> AsyncIterator[tuple[Upstream, FakeGatewaySocket]]:
    up = Upstream()
    gw = FakeGatewaySocket(env["gw"])
    await gw.start()
    # The upstream is the model server: every group may reach it, only main has its key.
    (env["cfg"] / "config.toml").write_text(
        f'[model]\nbase_url = "http://127.0.0.1:{up.port}"\n'
        f'[vault]\nallow_private_upstreams = ["127.0.0.1:{up.port}"]\n'
    )
    SecretStore(env["cfg"]).add(
        "tok", SECRET, f"127.0.0.1:{up.port}", header="x-token", fmt="{value}", groups=["main"]
    )
    vp = VaultProcess(
        env["cfg"], env["state"], allow_private=[f"127.0.0.1:{up.port}"], gateway_socket=env["gw"]
    )
    await vp.start(timeout=30)
    await vp.open_group("main", env["main"] / "vault.sock")
    await vp.open_group("team", env["team"] / "vault.sock")
    yield up, gw
    await vp.stop()
    gw.server.close()
    up.close()


async def send(env: dict[str, Path], group: str, port: int) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(env[group] / "vault.sock"))
    try:
        writer.write(
            f"GET http://127.0.0.1:{port}/v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "x-token: placeholder\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def until(condition, seconds: float = 10) -> None:  # type: ignore[no-untyped-def]
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


async def test_group_outside_the_scope_is_reported_once_per_host(setup, env) -> None:
    up, gw = setup
    assert (await send(env, "main", up.port)).startswith(b"HTTP/1.1 200")
    assert up.requests[-1]["x-token"] == SECRET
    for _ in range(3):
        resp = await send(env, "team", up.port)
        assert resp.startswith(b"HTTP/1.1 200"), resp  # [vault] unscoped = "forward": sent bare
        assert up.requests[-1]["x-token"] == "placeholder"
    await until(lambda: gw.ops)
    await asyncio.sleep(0.5)  # a second notice would have arrived by now
    assert gw.ops == [
        {"op": "unscoped", "group": "team", "secret": "tok", "host": "127.0.0.1", "refused": False}
    ]
    assert SECRET not in repr(gw.ops)
