"""Budgets in the real vault process: the `budgets` control op, a model call past the headroom
refused with 403 in the provider's error shape (the model server sees none), headroom decremented
by the vault's own metering before the next call, and a shared ("*") limit across two groups."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.process import VaultProcess, VaultUnavailable
from tests.fakes.model_server import FakeModelServer, anthropic_text

pytestmark = pytest.mark.asyncio(loop_scope="module")

GROUPS = ("team", "other")


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("budget")
    d = {k: base / k for k in ("cfg", "state", *GROUPS)}
    for p in d.values():
        p.mkdir(mode=0o700)
    return d


@pytest.fixture(scope="module")
def model() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vault(model: FakeModelServer, dirs: dict[str, Path]) -> AsyncIterator[VaultProcess]:
    (dirs["cfg"] / "config.toml").write_text('[vault.egress]\nteam = ["127.0.0.1"]\nother = ["127.0.0.1"]\n')
    vp = VaultProcess(dirs["cfg"], dirs["state"], allow_private=[model.host_port])
    await vp.start(timeout=30)
    for group in GROUPS:
        await vp.open_group(group, dirs[group] / "vault.sock")
    yield vp
    await vp.stop()


async def post(sock: Path, port: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    data = json.dumps(body).encode()
    head = (
        f"POST http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(head + data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status = int(raw.split(b" ", 2)[1])
    return status, json.loads(raw.split(b"\r\n\r\n", 1)[1] or b"{}")


async def audited(state: Path, refusal: str) -> bool:
    """The audit log is written in the background: wait (bounded) for the refusal's entry."""
    for _ in range(200):
        if any(e.get("status") == 403 and e.get("refusal") == refusal for e in read_entries(state)):
            return True
        await asyncio.sleep(0.05)
    return False


def limit(key: str, remaining: int, unit: str = "tokens") -> dict[str, Any]:
    return {"key": key, "unit": unit, "remaining": remaining, "message": f"clawgate budget: {key} is used up"}


def used(text: str, input_tokens: int, output_tokens: int) -> dict[str, Any]:
    message = anthropic_text(text)
    message["usage"] = {"input_tokens": input_tokens, "output_tokens": output_tokens}
    message["model"] = "claude-sonnet-4-5-20250929"  # priced by the "claude-sonnet-4-5" prefix
    return message


CALL = {"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


async def test_pushed_state_refuses_model_calls_in_the_providers_shape_and_shares_the_global_limit(
    vault: VaultProcess, model: FakeModelServer, dirs: dict[str, Path]
) -> None:
    await vault.set_budgets({"prices": {}, "limits": {"team": [limit("team:daily_usd:d", 0, "usd_micros")]}})
    model.requests.clear()
    status, refused = await post(dirs["team"] / "vault.sock", model.port, "/v1/messages?beta=true", CALL)
    assert status == 403
    assert refused == {
        "type": "error",
        "error": {"type": "permission_error", "message": "clawgate budget: team:daily_usd:d is used up"},
    }
    # Another group, and non-model requests of the same group, are not affected.
    assert (await post(dirs["other"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 200
    assert (await post(dirs["team"] / "vault.sock", model.port, "/v1/other", {}))[0] == 200
    assert [r.path for r in model.requests] == ["/v1/messages", "/v1/other"]
    assert await audited(dirs["state"], "clawgate budget: team:daily_usd:d exhausted")

    # The shared limit ("*") refuses every group; OpenAI endpoints get OpenAI's error shape.
    await vault.set_budgets({"prices": {}, "limits": {"*": [limit("*:daily_tokens:d", -5)]}})
    model.requests.clear()
    openai_call = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    for group in GROUPS:
        status, refused = await post(
            dirs[group] / "vault.sock", model.port, "/v1/chat/completions", openai_call
        )
        assert status == 403 and refused["error"]["code"] == "budget_exhausted"
        assert refused["error"]["type"] == "insufficient_quota"
        assert refused["error"]["message"] == "clawgate budget: *:daily_tokens:d is used up"
        assert (await post(dirs[group] / "vault.sock", model.port, "/v1/responses", openai_call))[0] == 403
    assert model.requests == []
    # The gateway lifts it (a /budget set): the next call goes through at once.
    await vault.set_budgets({"prices": {}, "limits": {"*": [limit("*:daily_tokens:d", 1000)]}})
    assert (await post(dirs["team"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 200


async def test_call_past_the_headroom_is_refused_mid_turn_and_never_reaches_the_model(
    vault: VaultProcess, model: FakeModelServer, dirs: dict[str, Path]
) -> None:
    await vault.set_budgets({"prices": {}, "limits": {"team": [limit("team:daily_tokens:d", 100)]}})
    model.requests.clear()
    model.responses.append((200, used("first", 80, 30)))  # 110 tokens: past the 100 left
    status, first = await post(dirs["team"] / "vault.sock", model.port, "/v1/messages", CALL)
    assert status == 200 and first["content"][0]["text"] == "first"
    # The next call of the same turn: the vault metered the first before its response ended.
    status, refused = await post(dirs["team"] / "vault.sock", model.port, "/v1/messages?beta=true", CALL)
    assert status == 403
    assert refused == {
        "type": "error",
        "error": {"type": "permission_error", "message": "clawgate budget: team:daily_tokens:d is used up"},
    }
    assert len(model.requests) == 1  # the refused call never left the vault
    # Another group, and non-model requests of the same group, are not affected.
    status, _ = await post(dirs["other"] / "vault.sock", model.port, "/v1/messages", CALL)
    assert status == 200
    status, _ = await post(dirs["team"] / "vault.sock", model.port, "/v1/other", {})
    assert status == 200
    assert await audited(dirs["state"], "clawgate budget: team:daily_tokens:d exhausted")
    # The gateway lifts it (a /budget set): the next call goes through.
    await vault.set_budgets({"prices": {}, "limits": {"team": [limit("team:daily_tokens:d", 1000)]}})
    status, _ = await post(dirs["team"] / "vault.sock", model.port, "/v1/messages", CALL)
    assert status == 200


async def test_shared_limit_counts_both_groups_and_usd_uses_the_pushed_prices(
    vault: VaultProcess, model: FakeModelServer, dirs: dict[str, Path]
) -> None:
    prices = {"claude-sonnet-4-5": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}}
    shared = limit("*:daily_usd:d", 1000, "usd_micros")  # $0.001
    await vault.set_budgets({"prices": prices, "limits": {"*": [shared]}})
    model.requests.clear()
    model.responses.append((200, used("a", 200, 0)))  # 200 x $3/M = 600 micro-USD
    assert (await post(dirs["team"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 200
    model.responses.append((200, used("b", 100, 10)))  # 300 + 150 = 450: 1050 in all
    assert (await post(dirs["other"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 200
    openai_call = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    status, refused = await post(dirs["team"] / "vault.sock", model.port, "/v1/chat/completions", openai_call)
    assert status == 403 and refused["error"]["code"] == "budget_exhausted"
    assert refused["error"]["type"] == "insufficient_quota"
    assert refused["error"]["message"].startswith("clawgate budget:")
    assert (await post(dirs["other"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 403
    assert len(model.requests) == 2


async def test_malformed_state_is_refused_and_the_previous_one_stays(
    vault: VaultProcess, model: FakeModelServer, dirs: dict[str, Path]
) -> None:
    await vault.set_budgets({"prices": {}, "limits": {"team": [limit("team:x", 0)]}})
    with pytest.raises(VaultUnavailable, match="budgets"):
        await vault.set_budgets({"prices": {"m": {"input": -1}}, "limits": {}})
    with pytest.raises(VaultUnavailable, match="budgets"):
        await vault.set_budgets({"prices": {}, "limits": {"team": [{"key": "k", "unit": "euros"}]}})
    model.requests.clear()
    assert (await post(dirs["team"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 403
    assert model.requests == []
    await vault.set_budgets({"prices": {}, "limits": {}})
    assert (await post(dirs["team"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 200


async def test_a_restarted_vault_gets_the_last_state_before_it_serves_a_group(
    vault: VaultProcess, model: FakeModelServer, dirs: dict[str, Path]
) -> None:
    """The supervisor restarts a crashed vault and replays the budgets before re-opening the group
    sockets, so there is no window without limits; the gateway is then told to push fresh ones."""
    await vault.set_budgets({"prices": {}, "limits": {"team": [limit("team:daily_tokens:d", 0)]}})
    restarted = asyncio.Event()
    vault.on_restart = restarted.set
    before, pid = vault.restarts, vault.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await asyncio.wait_for(restarted.wait(), 60)
    assert vault.restarts == before + 1 and vault.pid != pid
    model.requests.clear()
    assert (await post(dirs["team"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 403
    assert (await post(dirs["other"] / "vault.sock", model.port, "/v1/messages", CALL))[0] == 200
    assert [r.path for r in model.requests] == ["/v1/messages"]
