"""Ollama's native API through the real vault process, reported to a real gateway store.

Before, a group under a token budget pointed at Ollama (`ollama serve`, its paid cloud models, a
hosted Ollama-compatible service) spent without limit: the vault neither metered `/api/chat`,
`/api/generate` or `/api/embed` nor refused anything Ollama. Here, with a key injected as
`Authorization: Bearer`: every shape (NDJSON streams sent in pieces, `"stream": false` objects,
embed, Open WebUI's `/ollama/` prefix, respelled paths) is stored per group exactly as the model
server reported it; a group with no token headroom gets the vault's 403 in Ollama's own error
shape (`{"error": "…"}`) and the model server sees nothing, however the path is spelled; the
legacy `/api/embeddings` (no counts) is refused while any budget applies and passes marked
"unmetered" without one; model management passes. And a USD budget is neither spent by a local
model nor by `[prices.default]`, at the vault and in the gateway's stored cost.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from core.pricing import Price, PriceTable
from gateway.vault_usage import store_report
from proxy.audit import read_entries
from proxy.secrets import SecretStore
from tests.fakes.model_payloads import Tokens
from tests.fakes.model_server import Recorded, recorded_answer
from tests.vault.metered_vault import Setup, metered_vault
from tests.vault.test_vault_metering_e2e import Receiver, until
from tests.vault.test_vault_unmetered_e2e import audit_lines, limit, rows, send

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "ollama-cloud-REAL-0123456789abcdef"
GROUPS = ("alpha", "beta", "gamma")
JSON = {"Content-Type": "application/json"}
# The owner's table: a default meant for unknown paid models, and one Ollama cloud model priced.
PRICES = PriceTable({"default": Price(3.0, 15.0, 3.0, 3.0), "gpt-oss:120b-cloud": Price(1.0, 2.0, 1.0, 1.0)})


class PricedReceiver(Receiver):
    """The gateway's end, pricing with the owner's table (the default included)."""

    async def handle(self, request: dict[str, object]) -> dict[str, object]:
        if request.get("op") != "vault_usage":
            return {"ok": True}
        return await store_report(self.store, request, PRICES)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    def secret(store: SecretStore, host_port: str) -> None:
        store.add("ollama", KEY, host_port, groups=list(GROUPS))

    async with metered_vault(tmp_path_factory.mktemp("ollama"), GROUPS, secret, PricedReceiver) as s:

        def answer(record: Recorded) -> Any:
            marker = str(record.body.get("marker", ""))
            if marker in s.reported:
                return recorded_answer(record, s.reported[marker])
            if record.path.endswith("/api/embeddings"):
                return 200, {"embedding": [0.5, 0.25]}
            return 200, {"status": "success"}

        s.model.default = answer
        yield s


def request(path: str, marker: str = "", *, stream: bool = True, model: str = "llama3.2") -> dict[str, Any]:
    body: dict[str, Any] = {"model": model}
    if path.rstrip("/").endswith("embed"):
        body["input"] = ["one", "two"]
    elif "generate" in path.lower():
        body["prompt"] = "Why is the sky blue?"
    else:
        body["messages"] = [{"role": "user", "content": "Why is the sky blue?"}]
    if not stream:
        body["stream"] = False  # Ollama streams unless told not to
    if marker:
        body["marker"] = marker
    return body


async def call(
    setup: Setup, group: str, path: str, tokens: Tokens, *, stream: bool = True, model: str = "llama3.2"
) -> tuple[int, bytes]:
    marker = f"{group}-{len(setup.reported)}"
    setup.reported[marker] = tokens
    body = json.dumps(request(path, marker, stream=stream, model=model)).encode()
    return await send(setup, group, "POST", path, body, JSON)


SHAPES: list[tuple[str, bool]] = [
    ("/api/chat", True),  # NDJSON, Ollama's default
    ("/api/chat", False),
    ("/api/generate", True),
    ("/api/generate", False),
    ("/api/embed", False),
    ("/ollama/api/chat", True),  # Open WebUI's Ollama proxy
    ("/API//%63hat/", True),  # respelled: still a model call
]


async def test_every_shape_is_stored_per_group_as_the_model_reported(setup: Setup) -> None:
    expected: dict[str, list[tuple[object, ...]]] = {"alpha": [], "beta": []}
    for n, group in enumerate(expected):
        for i, (path, stream) in enumerate(SHAPES):
            t = Tokens(input=2000 + 100 * i + n, output=0 if "embed" in path else 300 + 10 * i + n)
            status, payload = await call(setup, group, path, t, stream=stream)
            assert status == 200, payload[:300]
            lines = payload.strip().split(b"\n")
            if stream:
                assert len(lines) == 4 and json.loads(lines[-1])["done"] is True
            else:
                assert len(lines) == 1
            model = "all-minilm" if "embed" in path else "llama3.2"
            expected[group].append((model, "ollama", t.input, t.output, 0, 0, 1))

    async def stored() -> bool:
        return [len(await rows(setup, g)) for g in expected] == [len(SHAPES)] * 2

    await until(stored)
    for group, want in expected.items():
        assert sorted(await rows(setup, group)) == sorted(want)
    assert len(setup.model.requests) == 2 * len(SHAPES)
    for r in setup.model.requests:
        assert r.headers["authorization"] == f"Bearer {KEY}"  # injected; the sandbox never held it
    for group in expected:  # local models: $0, although the owner's table has a default
        totals = await setup.receiver.store.metered_totals(group, 0)
        assert totals and all(t.cost_micros == 0 for t in totals)


async def test_an_ollama_cloud_model_the_owner_priced_costs_its_price(setup: Setup) -> None:
    status, _ = await call(
        setup, "beta", "/api/chat", Tokens(input=1000, output=1000), model="gpt-oss:120b-cloud"
    )
    assert status == 200

    async def priced() -> bool:
        return any(
            t.model == "gpt-oss:120b-cloud" for t in await setup.receiver.store.metered_totals("beta", 0)
        )

    await until(priced)
    (cloud,) = [
        t for t in await setup.receiver.store.metered_totals("beta", 0) if t.model == "gpt-oss:120b-cloud"
    ]
    assert cloud.cost_micros == 3000  # 1000 x $1/M + 1000 x $2/M


def assert_ollama_refusal(status: int, payload: bytes, says: str) -> None:
    assert status == 403, payload[:300]
    body = json.loads(payload)
    assert set(body) == {"error"} and isinstance(body["error"], str)  # what Ollama's clients read
    assert body["error"].startswith("clawgate budget: ") and says in body["error"]


REFUSED = [
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/ollama/api/generate",
    "/Api/Chat/",
    "/api/%2563hat",  # escaped twice
    "/api/./x/../generate",
    "/api/chat;v=1",
    "/api//embed?x=1",
]


async def test_a_group_over_its_token_budget_gets_ollamas_403_and_the_model_sees_nothing(
    setup: Setup,
) -> None:
    # Headroom of 100 tokens: one streamed call goes through and its metered usage uses it up.
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 100)]}})
    setup.model.requests.clear()
    status, _ = await call(setup, "alpha", "/api/chat", Tokens(input=5000, output=50))
    assert status == 200 and len(setup.model.requests) == 1
    setup.model.requests.clear()
    for path in REFUSED:
        body = json.dumps(request(path)).encode()
        status, payload = await send(setup, "alpha", "POST", path, body, JSON)
        assert_ollama_refusal(status, payload, "alpha:daily_tokens:d is used up")
    assert setup.model.requests == []
    # Model management is not a model call: it still passes.
    assert (await send(setup, "alpha", "POST", "/api/pull", b'{"model":"llama3.2"}', JSON))[0] == 200
    assert (await send(setup, "alpha", "GET", "/api/tags"))[0] == 200
    assert len(setup.model.requests) == 2
    # Headroom back: the same call goes through.
    await setup.vault.set_budgets({"prices": {}, "limits": {"alpha": [limit("alpha:daily_tokens:d", 10**6)]}})
    status, _ = await call(setup, "alpha", "/api/generate", Tokens(input=7, output=1), stream=False)
    assert status == 200 and len(setup.model.requests) == 3
    await setup.vault.set_budgets({"prices": {}, "limits": {}})


async def test_a_usd_budget_is_not_spent_by_a_local_model_priced_by_no_entry(setup: Setup) -> None:
    """The vault prices with the gateway's whole table, `default` included: an Ollama call of a
    model no entry names costs nothing there, so $0.001 of headroom survives huge local calls
    (at the default's $3/$15 the first would have used it up and the second been refused); a
    cloud model the owner priced spends it like any model call."""
    usd = {"key": "gamma:daily_usd:d", "unit": "usd_micros", "remaining": 1000, "message": "used up"}
    await setup.vault.set_budgets({"prices": PRICES.to_json(), "limits": {"gamma": [usd]}})
    setup.model.requests.clear()
    for _ in range(3):
        status, payload = await call(setup, "gamma", "/api/chat", Tokens(input=100_000, output=100_000))
        assert status == 200, payload[:300]
    cloud = Tokens(input=1000, output=1000)  # $0.003 > the $0.001 left
    assert (await call(setup, "gamma", "/api/chat", cloud, model="gpt-oss:120b-cloud"))[0] == 200
    status, payload = await call(setup, "gamma", "/api/chat", Tokens(input=1, output=1))
    assert_ollama_refusal(status, payload, "used up")
    assert len(setup.model.requests) == 4
    await setup.vault.set_budgets({"prices": {}, "limits": {}})


async def test_legacy_embeddings_are_refused_under_a_budget_and_pass_unmetered_without(setup: Setup) -> None:
    body = json.dumps({"model": "all-minilm", "prompt": "one"}).encode()
    await setup.vault.set_budgets({"prices": {}, "limits": {"gamma": [limit("gamma:daily_tokens:d", 10**9)]}})
    setup.model.requests.clear()
    for path in ("/api/embeddings", "/ollama/api/Embeddings", "/api/embed%64ings"):
        status, payload = await send(setup, "gamma", "POST", path, body, JSON)
        assert_ollama_refusal(status, payload, "Ollama legacy embeddings")
        assert "no token counts" in payload.decode() and "/budget set" in payload.decode()
    assert setup.model.requests == []
    await setup.vault.set_budgets({"prices": {}, "limits": {}})
    before = len([e for e in read_entries(setup.state) if e.get("group") == "gamma"])
    assert (await send(setup, "gamma", "POST", "/api/embeddings", body, JSON))[0] == 200
    assert len(setup.model.requests) == 1
    lines = await audit_lines(setup, "gamma", before + 1)
    (line,) = [e for e in lines if e.get("spend") and e["status"] == 200]
    assert line["spend"] == "unmetered: Ollama legacy embeddings" and line["refusal"] is None
