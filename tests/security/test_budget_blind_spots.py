"""Attack: from inside a group's sandbox under a budget, spend the owner's money where the vault
cannot count it.

A budget applies to every group (`[budget.global]`, plenty of headroom left). The hostile agent
runs curl with its shell tool, in a real sandbox on every tier, through the real vault, straight
at the model server with the injected key: batch creation, image generation, a Realtime
WebSocket upgrade, a background Response, and the same batch call respelled (`%62atches`,
`//./`, `..`, case) with `--path-as-is` so curl does not tidy the path first, and Gemini's
batch (its `:verb` escaped as `%3A`), context cache and Imagen calls, and Ollama's legacy
`/api/embeddings` (respelled). Every one must be refused with the vault's "clawgate budget:" 403
and none may reach the model server; metered calls (OpenAI embeddings, an Ollama chat streamed
as NDJSON at a respelled `/API//chat`) still go through and are stored exactly as the model
reported them.

Then the other way past a budget: under a small one, the hostile agent streams chat completions
with curl and hangs up each one (`--max-time`) before the final chunk, the only one with usage.
The vault must count each cut call with its estimate, so the calls are refused with the budget's
403 after a few, the model server sees no more of them, the turn ends with the budget's message,
and every cut call is stored non-zero and marked incomplete (estimated).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gateway.app import Gateway
from tests.fakes.model_payloads import Tokens, chat_sse
from tests.fakes.model_server import FakeModelServer, Raw, Recorded, recorded_answer
from tests.security.conftest import HOSTILE, Attacker, Tier, add_model_key, with_hostile_group
from tests.waits import drained

BUDGET = "[budget.global]\ndaily_tokens = 100_000_000\n"
BATCH = {"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
REFUSED: dict[str, tuple[str, str, dict[str, Any] | None]] = {
    # name: (method, path, JSON body or None)
    "batch": ("POST", "/v1/batches", BATCH),
    "anthropic-batch": ("POST", "/v1/messages/batches", {"requests": []}),
    "image": ("POST", "/v1/images/generations", {"prompt": "a cat", "n": 10}),
    "background": ("POST", "/v1/responses", {"model": "gpt-5", "input": "essay", "background": True}),
    "escaped": ("POST", "/v1/%62atches", BATCH),
    "dots": ("POST", "//v1/./files/../Batches/", BATCH),
    "realtime": ("GET", "/v1/realtime?model=gpt-realtime", None),
    # Gemini's native API: the verb respelled, a context cache, Imagen
    "gemini-batch": ("POST", "/v1beta/models/gemini-2.5-flash%3AbatchGenerateContent", {"batch": {}}),
    "gemini-cache": ("POST", "/V1BETA//cachedContents/", {"model": "models/gemini-2.5-flash"}),
    "gemini-imagen": ("POST", "/v1beta/models/imagen-4.0-generate-001:predict", {"instances": []}),
    # Ollama's native API: its legacy embeddings carry no counts
    "ollama-embeddings": ("POST", "/ollama/API/%65mbeddings", {"model": "all-minilm", "prompt": "a"}),
}
EMBEDDING = Tokens(input=54_321)
OLLAMA_CHAT = Tokens(input=4_321, output=765)


@pytest.fixture
async def budgeted_gateway(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer
) -> AsyncIterator[Gateway]:
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model_server)
    async with with_hostile_group(tier.config(model_server, extra=BUDGET), config_dir, data_dir) as gateway:
        yield gateway


def answer(record: Recorded) -> Any:
    if (record.body.get("metadata") or {}).get("attack") == "embedding":
        return recorded_answer(record, EMBEDDING)
    if record.body.get("attack") == "ollama-chat":
        return recorded_answer(record, OLLAMA_CHAT)
    return FakeModelServer._echo(record)  # the agent's own calls


def curl(name: str, method: str, path: str, body: dict[str, Any] | None, url: str) -> str:
    data = f" -H 'content-type: application/json' -d '{json.dumps(body)}'" if body is not None else ""
    upgrade = (
        " -H 'Upgrade: websocket' -H 'Connection: Upgrade' -H 'Sec-WebSocket-Version: 13'"
        " -H 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=='"
        if method == "GET"
        else ""
    )
    return (
        f'echo {name}; curl -sS -m 30 --path-as-is --proxy "$http_proxy" -X {method}{upgrade}{data}'
        f" -H 'authorization: Bearer placeholder' -o /tmp/{name}.out -w 'status=%{{http_code}}\\n'"
        f" '{url}{path}'; head -c 300 /tmp/{name}.out; echo"
    )


async def test_a_sandbox_under_a_budget_cannot_spend_where_the_vault_cannot_count(
    budgeted_gateway: Gateway, model_server: FakeModelServer, tier: Tier
) -> None:
    model_server.default = answer
    attacker = Attacker(budgeted_gateway, model_server)
    embed = {"model": "text-embedding-3-small", "input": ["a", "b"], "metadata": {"attack": "embedding"}}
    commands = [curl(name, *spec, model_server.url) for name, spec in REFUSED.items()]
    commands.append(curl("embedding", "POST", "/v1/embeddings", embed, model_server.url))
    chat = {"model": "llama3.2", "messages": [{"role": "user", "content": "hi"}], "attack": "ollama-chat"}
    commands.append(curl("ollama-chat", "POST", "/API//chat", chat, model_server.url))
    out = await attacker.shell("; ".join(commands))
    for name in REFUSED:
        assert f"{name}\nstatus=403" in out, out
    assert out.count("clawgate budget: ") >= len(REFUSED), out
    assert "embedding\nstatus=200" in out and "ollama-chat\nstatus=200" in out, out
    reached = [r.path for r in model_server.requests]
    spent = ("atches", "images", "realtime", "responses", "atchGenerate", "ached", "predict", "mbeddings")
    assert not [p for p in reached if any(word in p.lower() for word in spent) and p != "/v1/embeddings"]
    assert reached.count("/v1/embeddings") == 1 and reached.count("/API//chat") == 1

    store = budgeted_gateway.store

    async def stored() -> list[tuple[object, ...]]:
        async with store._conn.execute(
            "SELECT group_folder, model, input_tokens, output_tokens, complete FROM metered_usage"
            " WHERE model IN ('text-embedding-3-small', 'llama3.2') ORDER BY model"
        ) as cur:
            return [tuple(r) for r in await cur.fetchall()]

    for _ in range(200):
        if len(await stored()) >= 2:
            break
        await asyncio.sleep(0.05)
    assert await stored() == [
        ("hostile", "llama3.2", OLLAMA_CHAT.input, OLLAMA_CHAT.output, 1),
        ("hostile", "text-embedding-3-small", EMBEDDING.input, 0, 1),
    ]


TIGHT = "[budget.global]\ndaily_tokens = 3000\n"
CUTS = 12  # the hostile loop's calls; the estimates (~540 tokens each) use 3000 up after about 6


@pytest.fixture
async def tight_gateway(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer
) -> AsyncIterator[Gateway]:
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model_server)
    async with with_hostile_group(tier.config(model_server, extra=TIGHT), config_dir, data_dir) as gateway:
        yield gateway


def hang_before_usage(record: Recorded) -> Any:
    if record.body.get("attack") != "cut":
        return FakeModelServer._echo(record)  # the agent's own calls
    body = chat_sse(Tokens(input=400, output=9000))
    at = body.rfind(b"\n\n", 0, body.index(b'"usage":{')) + 2
    return Raw(200, "text/event-stream", body, hang_at=at)  # the final chunk never comes


async def test_a_sandbox_hanging_up_every_stream_before_its_usage_is_refused_after_a_few(
    tight_gateway: Gateway, model_server: FakeModelServer, tier: Tier
) -> None:
    model_server.default = hang_before_usage
    gw = tight_gateway
    prompt = "Summarise these notes in full detail please. " * 33  # ~1.5 KB: ~500 tokens estimated
    body = json.dumps(
        {
            "model": "gpt-4o-mini",
            "stream": True,
            "attack": "cut",
            "messages": [{"role": "user", "content": prompt}],
        }
    )
    loop = (
        f"echo '{body}' > /tmp/req.json; for i in $(seq {CUTS}); do"
        ' curl -sS -N -m 2 --proxy "$http_proxy" -H "content-type: application/json"'
        " -H 'authorization: Bearer placeholder' -d @/tmp/req.json -o /dev/null"
        f" -w 'status=%{{http_code}}\\n' '{model_server.url}/v1/chat/completions'; done"
    )
    call = {
        "id": "msg_cut",
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_cut",
                "name": "shell",
                "input": {"command": loop, "timeout_s": 120},
            }
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    if gw.config.agent.runtime == "claude":
        call["content"][0].update(name="Bash", input={"command": loop, "timeout": 120_000})  # type: ignore[index]
    channel = gw.test_channel  # type: ignore[attr-defined]
    replies = len(channel.sent)
    model_server.responses.append((200, call))
    await gw.ingest(channel.message("@Andy please run toolu_cut", chat_id=HOSTILE.chat_id))
    await channel.wait_for(replies + 1, timeout=240)
    await drained(gw, 240, "the turn that cut the streams")

    cut = [r for r in model_server.requests if r.body.get("attack") == "cut"]
    assert 3 <= len(cut) < CUTS, f"{len(cut)} of {CUTS} cut calls reached the model server"
    # The agent's next model call is refused too: the turn ends with the budget's message.
    assert any("budget" in str(m).lower() for m in channel.sent[replies:]), channel.sent[replies:]

    async def estimated() -> list[tuple[int, int, int]]:
        async with gw.store._conn.execute(
            "SELECT input_tokens, output_tokens, complete FROM metered_usage"
            " WHERE group_folder = 'hostile' AND complete = 0"
        ) as cur:
            return [(int(a), int(b), int(c)) for a, b, c in await cur.fetchall()]

    for _ in range(200):
        if len(await estimated()) >= len(cut):
            break
        await asyncio.sleep(0.05)
    rows = await estimated()
    assert len(rows) == len(cut)
    assert all(inp >= len(body) // 4 and out > 0 for inp, out, _ in rows), rows
