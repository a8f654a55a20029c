"""Google's Gemini API through the real vault process, reported to a real gateway store.

Before, a group under a hard budget with a Gemini key in the vault spent without limit: the vault
neither metered `…:generateContent` nor refused anything Gemini. Here, with the key injected as
`x-goog-api-key`: every response shape (one JSON object; `:streamGenerateContent?alt=sse`; the
streamed JSON array without it, sent in pieces) is stored per group exactly as the model server
reported it; a group with no headroom gets the vault's 403 in Gemini's own error shape and the
model server sees nothing, however the verb is spelled; and what the vault cannot meter (batches,
embeddings, Imagen/Veo, context caches, the Live API's WebSocket, gRPC, a model call asking for a
protobuf answer) is refused while any budget applies, and passes marked "unmetered" in the audit
log without one.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from core.pricing import DEFAULT_PRICES
from proxy.audit import read_entries
from proxy.secrets import SecretStore
from tests.fakes.model_payloads import Tokens
from tests.fakes.model_server import Recorded, recorded_answer
from tests.vault.metered_vault import Setup, metered_vault
from tests.vault.test_vault_metering_e2e import until
from tests.vault.test_vault_unmetered_e2e import audit_lines, limit, rows, send

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "AIzaSyREAL-gemini-e2e-0123456789abcdef"
GROUPS = ("alpha", "beta", "gamma")
MODEL = "/v1beta/models/gemini-2.5-flash"
JSON = {"Content-Type": "application/json"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    def secret(store: SecretStore, host_port: str) -> None:
        store.add("gemini", KEY, host_port, header="x-goog-api-key", fmt="{value}", groups=list(GROUPS))

    async with metered_vault(tmp_path_factory.mktemp("gemini"), GROUPS, secret) as s:

        def answer(record: Recorded) -> Any:
            marker = str((record.body.get("labels") or {}).get("marker", ""))
            if marker in s.reported:
                return recorded_answer(record, s.reported[marker])
            return 200, {"name": "operations/fake", "totalTokens": 3}

        s.model.default = answer
        yield s


def request(marker: str = "") -> dict[str, Any]:
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}
    if marker:
        body["labels"] = {"marker": marker}
    return body


async def call(
    setup: Setup, group: str, path: str, tokens: Tokens, method: str = "POST"
) -> tuple[int, bytes]:
    marker = f"{group}-{len(setup.reported)}"
    setup.reported[marker] = tokens
    return await send(setup, group, method, path, json.dumps(request(marker)).encode(), JSON)


SHAPES = [
    f"{MODEL}:generateContent",
    f"{MODEL}:streamGenerateContent?alt=sse",
    f"{MODEL}:streamGenerateContent",  # the streamed JSON array
    f"{MODEL}%3AstreamGenerateContent",  # the colon escaped: still a model call
]


async def test_every_shape_is_stored_per_group_as_the_model_reported(setup: Setup) -> None:
    expected: dict[str, list[tuple[object, ...]]] = {"alpha": [], "beta": []}
    for n, group in enumerate(expected):
        for i, path in enumerate(SHAPES):
            t = Tokens(input=10_000 + 1000 * i + n, output=600 + 10 * i + n, cache_read=(i % 2) * 2048)
            status, payload = await call(setup, group, path, t)
            assert status == 200, payload[:300]
            if "alt=sse" in path:
                assert payload.count(b"data: ") == 5 and b'"finishReason":"STOP"' in payload
            elif "Stream" in path:
                assert payload.startswith(b"[") and payload.endswith(b"]") and len(json.loads(payload)) == 5
            expected[group].append(("gemini-2.5-flash", "gemini", t.input, t.output, t.cache_read, 0, 1))

    async def stored() -> bool:
        return [len(await rows(setup, g)) for g in expected] == [len(SHAPES)] * 2

    await until(stored)
    for group, want in expected.items():
        assert sorted(await rows(setup, group)) == sorted(want)
    assert len(setup.model.requests) == 2 * len(SHAPES)
    for r in setup.model.requests:
        assert r.headers["x-goog-api-key"] == KEY  # injected; the sandbox never held it
        assert r.headers["accept-encoding"] == "identity"
    price = DEFAULT_PRICES["gemini-2.5-flash"]
    for group, want in expected.items():
        (total,) = await setup.receiver.store.metered_totals(group, 0)
        cost = sum(
            int(str(r[2])) * price.input + int(str(r[3])) * price.output + int(str(r[4])) * price.cache_read
            for r in want
        )
        assert total.model == "gemini-2.5-flash" and abs(total.cost_micros - cost) <= len(want)


def assert_gemini_refusal(status: int, payload: bytes, says: str) -> None:
    assert status == 403, payload[:300]
    body = json.loads(payload)
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "status"}
    assert body["error"]["code"] == 403 and body["error"]["status"] == "PERMISSION_DENIED"
    assert body["error"]["message"].startswith("clawgate budget: ") and says in body["error"]["message"]


async def test_a_group_over_its_budget_gets_geminis_403_and_the_model_sees_nothing(setup: Setup) -> None:
    # Headroom of 100 tokens: one call goes through and its metered usage uses the headroom up.
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 100)]}})
    setup.model.requests.clear()
    status, _ = await call(setup, "alpha", f"{MODEL}:streamGenerateContent", Tokens(input=5000, output=50))
    assert status == 200 and len(setup.model.requests) == 1
    setup.model.requests.clear()
    for path, method, headers in (
        (f"{MODEL}:generateContent", "POST", JSON),
        (f"{MODEL}:streamGenerateContent?alt=sse&key=placeholder", "POST", JSON),
        (f"{MODEL}%3AstreamGenerateContent", "POST", JSON),
        ("/V1BETA//models/gemini-2.5-pro%253AGenerateContent/", "POST", JSON),
        ("/v1beta/models/./x/../gemini-2.5-flash:generateContent", "POST", JSON),
        (f"{MODEL}:generateContent", "GET", {**JSON, "X-HTTP-Method-Override": "POST"}),
    ):
        status, payload = await send(setup, "alpha", method, path, json.dumps(request()).encode(), headers)
        assert_gemini_refusal(status, payload, "alpha:daily_tokens:d is used up")
    assert setup.model.requests == []
    # Headroom back: the same call goes through.
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 10**6)]}})
    status, _ = await call(setup, "alpha", f"{MODEL}:generateContent", Tokens(input=7, output=1))
    assert status == 200 and len(setup.model.requests) == 1
    await setup.vault.set_budgets({"prices": {}, "limits": {}})


UPGRADE = {
    "Upgrade": "websocket",
    "Connection": "Upgrade",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}
LIVE = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
UNMETERABLE: list[tuple[str, str, dict[str, str], str]] = [
    # (method, path, headers, what the refusal names)
    ("POST", f"{MODEL}:batchGenerateContent", JSON, "Gemini batch creation"),
    ("POST", "/v1beta/models/gemini-embedding-001:asyncBatchEmbedContent", JSON, "Gemini embedding batch"),
    ("POST", "/v1beta/models/gemini-embedding-001:embedContent", JSON, "Gemini embedContent"),
    ("POST", "/v1beta/models/gemini-embedding-001:batchEmbedContents", JSON, "Gemini batchEmbedContents"),
    ("POST", "/v1beta/models/imagen-4.0-generate-001:predict", JSON, "Gemini predict (Imagen)"),
    ("POST", "/v1beta/models/veo-3.0-generate-001:predictLongRunning", JSON, "Gemini predictLongRunning"),
    ("POST", "/v1beta/cachedContents", JSON, "Gemini context cache creation"),
    ("GET", f"{LIVE}?key=placeholder", UPGRADE, "Gemini Live API"),
    ("POST", "/google.ai.generativelanguage.v1beta.GenerativeService/GenerateContent", JSON, "Gemini gRPC"),
    # respelled
    ("POST", f"{MODEL}%3AbatchGenerateContent", JSON, "Gemini batch creation"),
    ("POST", "/V1BETA/Models/veo-3.0%253ApredictLongRunning", JSON, "Gemini predictLongRunning"),
    ("POST", "/v1beta/models/imagen;v=1:predict", JSON, "Gemini predict (Imagen)"),
    ("POST", "/v1beta/%63achedContents/", JSON, "Gemini context cache creation"),
    ("GET", "/v1beta/cachedContents", {**JSON, "X-HTTP-Method-Override": "POST"}, "Gemini context cache"),
    # a model call asking for an answer in protobuf: the meter could not read its usage
    ("POST", f"{MODEL}:generateContent?alt=proto", JSON, "protobuf answer"),
    ("POST", f"{MODEL}:streamGenerateContent?%24alt=proto", JSON, "protobuf answer"),
    ("POST", f"{MODEL}:generateContent", {"Content-Type": "application/x-protobuf"}, "protobuf answer"),
]


async def test_unmeterable_gemini_calls_are_refused_under_a_budget_and_pass_unmetered_without(
    setup: Setup,
) -> None:
    await setup.vault.set_budgets({"prices": {}, "limits": {"gamma": [limit("gamma:daily_tokens:d", 10**9)]}})
    setup.model.requests.clear()
    body = json.dumps(request()).encode()
    for method, path, headers, what in UNMETERABLE:
        status, payload = await send(setup, "gamma", method, path, body if method == "POST" else b"", headers)
        assert_gemini_refusal(status, payload, what)
        assert "/budget set" in payload.decode()
    assert setup.model.requests == []
    lines = await audit_lines(setup, "gamma", len(UNMETERABLE))
    assert all(
        e["status"] == 403 and e["refusal"].startswith("clawgate budget: unmeterable: Gemini") for e in lines
    )
    # Free calls and reads still pass for the budgeted group, and metered ones are metered.
    assert (await send(setup, "gamma", "POST", f"{MODEL}:countTokens", body, JSON))[0] == 200
    assert (await send(setup, "gamma", "GET", "/v1beta/models"))[0] == 200
    status, _ = await call(setup, "gamma", f"{MODEL}:generateContent", Tokens(input=3, output=2))
    assert status == 200 and len(setup.model.requests) == 3

    # Without a budget the same calls reach the model server, marked in the audit log.
    setup.model.requests.clear()
    before = len([e for e in read_entries(setup.state) if e.get("group") == "beta"])
    passing = [(m, p, w) for m, p, _h, w in UNMETERABLE if m == "POST"][:7]
    for _method, path, _what in passing:
        assert (await send(setup, "beta", "POST", path, body, JSON))[0] == 200, path
    assert len(setup.model.requests) == len(passing)
    lines = (await audit_lines(setup, "beta", before + len(passing)))[before:]
    assert [e["spend"].startswith(f"unmetered: {w}") for e, (_m, _p, w) in zip(lines, passing, strict=True)]
    assert all(e["spend"].startswith("unmetered: Gemini") and e["refusal"] is None for e in lines)
    await setup.vault.set_budgets({"prices": {}, "limits": {}})
