"""The budget's blind spots, probed through the real vault process as a hostile sandbox would.

Embeddings and legacy completions are metered and stored per group exactly as the fake model
server reported them (a streamed completion without `include_usage` is made to carry it). A
group under a budget gets 403 in the provider's shape for what the vault cannot meter — batch
creation, images, speech, realtime (a WebSocket upgrade too), fine-tuning, legacy Text
Completions, background Responses, a Responses body the vault cannot read — however the path
is spelled, and the model server sees none of it; free endpoints still work. Without a budget
the same calls reach the model server and the audit log marks them "unmetered". An exhausted
budget refuses embeddings and completions too.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.secrets import SecretStore
from tests.fakes.model_payloads import Tokens
from tests.fakes.model_server import Recorded, recorded_answer
from tests.vault.metered_vault import Setup, metered_vault
from tests.vault.test_vault_metering_e2e import dechunk, until

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "sk-proj-REAL-unmetered-e2e-98765"
GROUPS = ("alpha", "beta", "gamma")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    def secret(store: SecretStore, host_port: str) -> None:
        store.add("openai", KEY, host_port, header="authorization", fmt="Bearer {value}", groups=list(GROUPS))

    async with metered_vault(tmp_path_factory.mktemp("unmetered"), GROUPS, secret) as s:

        def answer(record: Recorded) -> Any:
            marker = str(record.body.get("metadata", {}).get("marker", ""))
            if marker in s.reported:
                return recorded_answer(record, s.reported[marker])
            return 200, {"id": "batch_fake", "object": "whatever", "status": "queued"}

        s.model.default = answer
        yield s


async def send(
    setup: Setup,
    group: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """One raw request through the group's vault socket: (status, body)."""
    port = setup.model.port
    lines = [f"{method} http://127.0.0.1:{port}{path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if "Transfer-Encoding" not in (headers or {}):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    reader, writer = await asyncio.open_unix_connection(str(setup.sock(group)))
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status_line, _, rest = raw.partition(b"\r\n")
    head, _, payload = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        payload = dechunk(payload)
    return int(status_line.split(b" ")[1]), payload


def js(value: object) -> bytes:
    return json.dumps(value).encode()


async def post(setup: Setup, group: str, path: str, body: object) -> tuple[int, bytes]:
    return await send(setup, group, "POST", path, js(body), {"Content-Type": "application/json"})


async def metered(setup: Setup, group: str, path: str, body: dict[str, Any], tokens: Tokens) -> bytes:
    marker = f"{group}-{len(setup.reported)}"
    setup.reported[marker] = tokens
    status, payload = await post(setup, group, path, {**body, "metadata": {"marker": marker}})
    assert status == 200, payload[:300]
    return payload


async def rows(setup: Setup, group: str) -> list[tuple[object, ...]]:
    async with setup.receiver.store._conn.execute(
        "SELECT model, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, complete"
        " FROM metered_usage WHERE group_folder = ? ORDER BY at",
        (group,),
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


def limit(key: str, remaining: int) -> dict[str, Any]:
    return {
        "key": key,
        "unit": "tokens",
        "remaining": remaining,
        "message": f"clawgate budget: {key} is used up",
    }


async def audit_lines(setup: Setup, group: str, count: int) -> list[dict[str, Any]]:
    """The group's audit lines, once at least `count` are written (bounded wait)."""
    for _ in range(200):
        found = [e for e in read_entries(setup.state) if e.get("group") == group]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} audit lines for {group}")


EMBED = {"model": "text-embedding-3-small", "input": ["one", "two"]}
COMPLETE = {"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "max_tokens": 7}
JSON = {"Content-Type": "application/json"}
WEBSOCKET = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
    "OpenAI-Beta": "realtime=v1",
}
BATCH = {"input_file_id": "file-abc", "endpoint": "/v1/chat/completions", "completion_window": "24h"}
BACKGROUND = {"model": "gpt-5", "input": "write a long essay", "background": True}


async def test_embeddings_and_legacy_completions_are_stored_per_group_as_reported(setup: Setup) -> None:
    expected: dict[str, list[tuple[object, ...]]] = {"alpha": [], "beta": []}
    for n, group in enumerate(("alpha", "beta")):
        t = Tokens(input=50_000 + n)
        await metered(setup, group, "/v1/embeddings", EMBED, t)
        expected[group].append(("text-embedding-3-small", "openai", t.input, 0, 0, 0, 1))
        t = Tokens(input=321 + n, output=45 + n)
        await metered(setup, group, "/v1/completions", COMPLETE, t)
        expected[group].append(("gpt-3.5-turbo-instruct", "openai", t.input, t.output, 0, 0, 1))
        # streamed without stream_options: the vault asks for usage, or the stream would carry none
        t = Tokens(input=4000 + n, output=600 + n)
        payload = await metered(setup, group, "/v1/completions", {**COMPLETE, "stream": True}, t)
        assert payload.rstrip().endswith(b"[DONE]")
        expected[group].append(("gpt-3.5-turbo-instruct", "openai", t.input, t.output, 0, 0, 1))

    async def stored() -> bool:
        return [len(await rows(setup, g)) for g in expected] == [3, 3]

    await until(stored)
    for group, want in expected.items():
        assert sorted(await rows(setup, group)) == sorted(want)
    streamed = [r for r in setup.model.requests if r.path == "/v1/completions" and r.body.get("stream")]
    assert len(streamed) == 2 and all(r.body["stream_options"] == {"include_usage": True} for r in streamed)
    assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in setup.model.requests)
    totals = await setup.receiver.store.metered_totals("alpha", 0)
    embedding = next(t for t in totals if t.model == "text-embedding-3-small")
    assert embedding.cost_micros == 1000  # 50,000 tokens at $0.02 per million


REFUSED: list[tuple[str, str, bytes, dict[str, str], str]] = [
    # (method, path, body, headers, what the refusal names)
    ("POST", "/v1/messages/batches", js({"requests": []}), JSON, "Anthropic message batch creation"),
    ("POST", "/v1/batches", js(BATCH), JSON, "OpenAI batch creation"),
    ("POST", "/v1/images/generations", js({"prompt": "a cat", "n": 10}), JSON, "OpenAI image generation"),
    ("POST", "/v1/audio/speech", js({"model": "tts-1", "input": "hi"}), JSON, "OpenAI text-to-speech"),
    ("POST", "/v1/complete", js({"prompt": "\n\nHuman: hi\n\nAssistant:"}), JSON, "Anthropic legacy Text"),
    ("POST", "/v1/fine_tuning/jobs", js({"training_file": "file-1"}), JSON, "OpenAI fine-tuning job"),
    ("GET", "/v1/realtime?model=gpt-realtime", b"", WEBSOCKET, "OpenAI Realtime"),
    ("POST", "/v1/realtime/client_secrets", js({}), JSON, "OpenAI Realtime"),
    ("POST", "/v1/responses", js(BACKGROUND), JSON, "OpenAI background response"),
    ("POST", "/v1/responses?x=1", b'{"model":"gpt-5","background":"true"}', JSON, "background response"),
    ("POST", "/v1/responses", b'{"background":false,"background":true}', JSON, "background response"),
    ("POST", "/v1/responses", b'{"backgro\\u0075nd":true}', JSON, "background response"),
    # the path spelled to slip past a naive table
    ("POST", "/v1/%62atches", js(BATCH), JSON, "OpenAI batch creation"),
    ("POST", "/v1/%2562atches", js(BATCH), JSON, "OpenAI batch creation"),
    ("POST", "/V1//./Batches/?beta=true", js(BATCH), JSON, "OpenAI batch creation"),
    ("POST", "/v1/files/%2e%2e/batches", js(BATCH), JSON, "OpenAI batch creation"),
    ("POST", "/v1/batches;x=1", js(BATCH), JSON, "OpenAI batch creation"),
    ("POST", "/v1/images/%67enerations", js({"prompt": "x"}), JSON, "OpenAI image generation"),
    ("GET", "/v1//realtime/", b"", WEBSOCKET, "OpenAI Realtime"),
]


async def test_a_group_under_a_budget_gets_no_unmeterable_call_through(setup: Setup) -> None:
    await setup.vault.set_budgets({"prices": {}, "limits": {"gamma": [limit("gamma:daily_tokens:d", 10**9)]}})
    setup.model.requests.clear()
    for method, path, body, headers, what in REFUSED:
        status, payload = await send(setup, "gamma", method, path, body, headers)
        assert status == 403, (path, payload[:300])
        error = json.loads(payload)["error"]
        assert error["message"].startswith("clawgate budget: "), path
        assert what in error["message"] and "/budget set" in error["message"], path
        if what.startswith("Anthropic"):
            assert error["type"] == "permission_error"
        else:
            assert error["type"] == "insufficient_quota" and error["code"] == "budget_exhausted"
    # A Responses body the vault would have to stream (unknown length) cannot be read first.
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(js(BACKGROUND)), js(BACKGROUND))
    headers = {**JSON, "Transfer-Encoding": "chunked"}
    status, payload = await send(setup, "gamma", "POST", "/v1/responses", chunked, headers)
    assert status == 403 and b"cannot check for background" in payload
    # Nor can a compressed one, or one nested deeper than the vault parses (whatever it says).
    gzipped = gzip.compress(js({"model": "gpt-5", "background": False}))
    headers = {**JSON, "Content-Encoding": "gzip"}
    status, payload = await send(setup, "gamma", "POST", "/v1/responses", gzipped, headers)
    assert status == 403 and b"cannot check for background" in payload
    deep = b'{"background":true,"input":' + b"[" * 5000 + b"]" * 5000 + b"}"
    status, payload = await send(setup, "gamma", "POST", "/v1/responses", deep, JSON)
    assert status == 403 and b"cannot check for background" in payload
    assert setup.model.requests == []  # the model server saw none of them
    lines = await audit_lines(setup, "gamma", len(REFUSED) + 3)
    assert all(
        e["status"] == 403 and e["refusal"].startswith("clawgate budget: unmeterable: ") for e in lines
    )
    assert all(e["spend"] is None for e in lines)

    # Metered calls with headroom, and free endpoints, still work for the same group.
    await metered(setup, "gamma", "/v1/embeddings", EMBED, Tokens(input=10))
    assert (await post(setup, "gamma", "/v1/responses", {"model": "gpt-5", "background": False}))[0] == 200
    assert (await post(setup, "gamma", "/v1/messages/count_tokens", {"model": "m", "messages": []}))[0] == 200
    assert (await post(setup, "gamma", "/v1/moderations", {"input": "hi"}))[0] == 200
    assert (
        await send(setup, "gamma", "POST", "/v1/files", b"--x--", {"Content-Type": "multipart/form-data"})
    )[0] == 200
    for path in ("/v1/models", "/v1/batches/batch_1", "/v1/messages/batches/msgbatch_1/results"):
        assert (await send(setup, "gamma", "GET", path))[0] == 200
    assert len(setup.model.requests) == 8

    # A shared ("*") limit is a budget for every group.
    await setup.vault.set_budgets({"prices": {}, "limits": {"*": [limit("*:monthly_tokens:m", 10**9)]}})
    assert (await post(setup, "alpha", "/v1/batches", BATCH))[0] == 403
    assert len(setup.model.requests) == 8


async def test_without_a_budget_the_same_calls_pass_and_are_audited_unmetered(setup: Setup) -> None:
    await setup.vault.set_budgets({"prices": {}, "limits": {"gamma": [limit("gamma:daily_tokens:d", 10**9)]}})
    setup.model.requests.clear()
    before = len([e for e in read_entries(setup.state) if e.get("group") == "beta"])
    setup.reported["beta-metered"] = Tokens(input=5)  # answered with usage: neither mark
    calls = [
        ("/v1/batches", BATCH, "unmetered: OpenAI batch creation"),
        ("/v1/messages/batches", {"requests": []}, "unmetered: Anthropic message batch creation"),
        ("/v1/images/generations", {"prompt": "a cat"}, "unmetered: OpenAI image generation"),
        ("/v1/realtime/client_secrets", {}, "unmetered: OpenAI Realtime"),
        ("/v1/responses", BACKGROUND, "unmetered: OpenAI background response"),
        ("/v1/embeddings", {**EMBED, "metadata": {"marker": "beta-metered"}}, None),  # metered: no mark
    ]
    for path, body, _spend in calls:
        assert (await post(setup, "beta", path, body))[0] == 200, path
    assert (await send(setup, "beta", "GET", "/v1/realtime?model=gpt-realtime"))[0] == 200
    assert [r.path for r in setup.model.requests] == [p for p, _b, _s in calls] + [
        "/v1/realtime?model=gpt-realtime"
    ]
    assert all(
        {k.lower(): v for k, v in r.headers.items()}["authorization"] == f"Bearer {KEY}"
        for r in setup.model.requests
    )
    lines = (await audit_lines(setup, "beta", before + len(calls) + 1))[before:]
    assert [e["spend"] for e in lines] == [s for _p, _b, s in calls] + ["unmetered: OpenAI Realtime"]
    assert all(e["refusal"] is None and e["status"] == 200 for e in lines)


async def test_an_exhausted_budget_refuses_embeddings_and_completions_too(setup: Setup) -> None:
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 0)]}})
    setup.model.requests.clear()
    for path, body in (
        ("/v1/embeddings", EMBED),
        ("/v1/completions", COMPLETE),
        ("/v1/completions", {**COMPLETE, "stream": True}),
        ("/v1/%65mbeddings", EMBED),
    ):
        status, payload = await post(setup, "alpha", path, body)
        assert status == 403, path
        assert json.loads(payload)["error"]["message"] == "clawgate budget: alpha:daily_tokens:d is used up"
    assert setup.model.requests == []
    # Headroom back: the same call goes through and is metered.
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 10**6)]}})
    await metered(setup, "alpha", "/v1/embeddings", EMBED, Tokens(input=7))
    assert len(setup.model.requests) == 1


async def test_openai_compatible_prefixes_are_metered_and_refused_like_the_providers(setup: Setup) -> None:
    """OpenRouter's `/api/v1/…`, Azure's `/openai/deployments/<name>/…`, Groq's `/openai/v1/…`:
    the same key, another prefix. Before, a group over its budget spent freely through them."""
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    await setup.vault.set_budgets({"prices": {}, "limits": {}})  # the module's vault: no earlier limits
    before = Counter(await rows(setup, "alpha"))  # earlier tests' rows (the last may still arrive)
    setup.model.requests.clear()
    t1, t2, t3, t4 = (Tokens(input=1000 + i, output=100 + i) for i in range(4))
    await metered(setup, "alpha", "/api/v1/chat/completions", chat, t1)
    payload = await metered(setup, "alpha", "/api/v1/chat/completions", {**chat, "stream": True}, t2)
    assert payload.rstrip().endswith(b"[DONE]")
    await metered(
        setup, "alpha", "/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21", chat, t3
    )
    await metered(setup, "alpha", "/openai/v1/responses", {"model": "gpt-4.1", "input": "hi"}, t4)
    want = [
        ("gpt-4o-2024-08-06", "openai", t1.input, t1.output, 0, 0, 1),
        ("gpt-4o-mini-2024-07-18", "openai", t2.input, t2.output, 0, 0, 1),  # the stream's usage, asked for
        ("gpt-4o-2024-08-06", "openai", t3.input, t3.output, 0, 0, 1),
        ("gpt-4.1-2025-04-14", "openai", t4.input, t4.output, 0, 0, 1),
    ]

    async def stored() -> bool:
        return not Counter(want) - (Counter(await rows(setup, "alpha")) - before)

    await until(stored)
    new = Counter(await rows(setup, "alpha")) - before
    late = new - Counter(want)  # at most the previous test's last call, stored after `before`
    assert not Counter(want) - new and all(r[0] == "text-embedding-3-small" for r in late), late
    [streamed] = [r for r in setup.model.requests if r.body.get("stream")]
    assert streamed.body["stream_options"] == {"include_usage": True}

    # Used up: the prefixed calls are refused like /v1/chat/completions, and a background
    # Response under a prefix is unmeterable while any budget applies.
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 0)]}})
    setup.model.requests.clear()
    for path, body in (
        ("/api/v1/chat/completions", chat),
        ("/openai/deployments/gpt4o/chat/completions", chat),
        ("/API/V1//embeddings", EMBED),
    ):
        status, payload = await post(setup, "alpha", path, body)
        assert status == 403 and b"alpha:daily_tokens:d is used up" in payload, path
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 10**6)]}})
    status, payload = await post(setup, "alpha", "/openai/v1/responses", BACKGROUND)
    assert status == 403 and b"background response" in payload
    assert setup.model.requests == []
    await setup.vault.set_budgets({"prices": {}, "limits": {}})
