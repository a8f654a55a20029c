"""The audit log's `spend` field, through the real vault process: every model call says whether
its spend was metered (None), estimated, or not metered at all.

1. A buffered (non-streamed) model answer without usage — garbage, an error body sent with 200,
   JSON cut short — is stored as an estimate by the meter, so its audit line must say
   "estimated: …" (it said nothing while the audit wrote its line before the meter had read the
   body).
2. Without a budget, a `/v1/responses` request whose body the vault cannot read before
   forwarding (unknown length, compressed, nested too deep) passes; when the answer shows it was
   queued in the background (no usage, which only a later GET carries), its line must say
   "unmetered: OpenAI background response" and the dashboard's "spent unmetered" filter must
   list it — also when the sandbox has the answer made larger than the meter keeps whole.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.audit_pages import AuditFilter, page
from proxy.secrets import SecretStore
from tests.fakes.model_payloads import Tokens, anthropic_error, chat_json, responses_background
from tests.fakes.model_server import Raw
from tests.vault.metered_vault import Setup, metered_vault
from tests.vault.test_vault_metering_e2e import until
from tests.vault.test_vault_unmetered_e2e import rows, send

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "sk-proj-REAL-audit-spend-e2e-24680"
GROUPS = ("buffered", "hidden")
JSON = {"Content-Type": "application/json"}
ESTIMATED = "estimated: "
BACKGROUND = "unmetered: OpenAI background response"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    def secret(store: SecretStore, host_port: str) -> None:
        store.add("openai", KEY, host_port, header="authorization", fmt="Bearer {value}", groups=list(GROUPS))

    async with metered_vault(tmp_path_factory.mktemp("auditspend"), GROUPS, secret) as s:
        await s.vault.set_budgets({"prices": {}, "limits": {}})  # no budget anywhere
        yield s


def js(value: object) -> bytes:
    return json.dumps(value).encode()


async def lines_of(setup: Setup, group: str, count: int) -> list[dict[str, Any]]:
    """The group's audit lines once `count` are written (the log is flushed in the background)."""
    for _ in range(200):
        found = [e for e in read_entries(setup.state) if e.get("group") == group]
        if len(found) >= count:
            assert len(found) == count, found
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"fewer than {count} audit lines for {group}")


async def test_a_buffered_answer_without_usage_is_audited_estimated(setup: Setup) -> None:
    chat = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi " * 300}]}
    answers = [
        Raw(200, "text/html", b"<html><body>502 Bad Gateway</body></html>"),  # garbage
        Raw(200, "application/json", anthropic_error()),  # an error body sent with 200
        Raw(200, "application/json", chat_json(Tokens(input=900, output=40))[:-60]),  # JSON cut short
        Raw(200, "application/json", chat_json(Tokens(input=900, output=40))),  # metered: no mark
    ]
    setup.model.responses.extend(answers)
    for _ in answers:
        assert (await send(setup, "buffered", "POST", "/v1/chat/completions", js(chat), JSON))[0] == 200
    lines = await lines_of(setup, "buffered", len(answers))
    spends = [e["spend"] for e in lines]
    assert [str(s).startswith(ESTIMATED) for s in spends] == [True, True, True, False], spends
    assert spends[3] is None and all(e["status"] == 200 and e["refusal"] is None for e in lines)

    # What the audit says is what was stored: three incomplete estimates, one reported call.
    async def stored() -> bool:
        return len(await rows(setup, "buffered")) == len(answers)

    await until(stored)
    complete = sorted(r[-1] for r in await rows(setup, "buffered"))
    assert complete == [0, 0, 0, 1]


async def test_a_background_call_the_vault_could_not_read_is_audited_unmetered(setup: Setup) -> None:
    asked = js({"model": "gpt-5", "input": "write a long essay", "background": True})
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(asked), asked)  # unknown length: streamed on
    deep = b'{"background":true,"input":' + b"[" * 5000 + b"]" * 5000 + b"}"  # too deep to read
    streamed = {**JSON, "Transfer-Encoding": "chunked"}
    unreadable = [
        (chunked, streamed, responses_background("queued")),
        (gzip.compress(asked), {**JSON, "Content-Encoding": "gzip"}, responses_background("in_progress")),
        (deep, JSON, responses_background("queued")),
        # The answer echoes the request's instructions: made larger than the meter keeps whole.
        (chunked, streamed, responses_background(instructions="x" * (3 << 20))),
    ]
    # The same unreadable bodies, answered as a call that is not in the background: not unmetered.
    plain = [
        (chunked, streamed, js({"id": "resp_1", "status": "queued"})),
        (deep, JSON, js({"id": "resp_2", "background": False, "status": "queued", "usage": None})),
    ]
    setup.model.requests.clear()
    for body, headers, answer in unreadable + plain:
        setup.model.responses.append(Raw(200, "application/json", answer))
        status, _payload = await send(setup, "hidden", "POST", "/v1/responses", body, headers)
        assert status == 200
    assert len(setup.model.requests) == len(unreadable) + len(plain)  # no budget: all passed
    lines = await lines_of(setup, "hidden", len(unreadable) + len(plain))
    spends = [e["spend"] for e in lines]
    assert spends[: len(unreadable)] == [BACKGROUND] * len(unreadable), spends
    assert all(str(s).startswith(ESTIMATED) for s in spends[len(unreadable) :]), spends
    # The dashboard's "spent unmetered" filter lists exactly those calls.
    listed = page(setup.state, AuditFilter(group="hidden", kind="unmetered"), limit=50)
    assert [e["spend"] for e in listed.entries] == [BACKGROUND] * len(unreadable)
