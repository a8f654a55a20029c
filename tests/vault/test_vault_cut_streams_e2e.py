"""Attack: spend under a hard budget by hanging up every model stream before its final usage.

OpenAI Chat Completions streams state usage (input AND output) only in their last chunk, Ollama
only on its `done` line, Anthropic the output only in the final `message_delta`; the provider
bills whatever it generated until the cut. Through the real vault process (budgets pushed over
its control socket, its reports stored by the gateway's real `vault_usage` handler in a real
SQLite store), a client that cuts each stream — after the first content chunk, or after the last
one it wants — must be refused with the budget's 403 after a bounded number of calls, the model
server must see no call after that, and every cut call must be stored with non-zero, estimated
(`complete = 0`) counts and marked "estimated" in the audit log.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.pricing import PriceTable
from gateway.control import ControlServer
from gateway.store import Store
from gateway.vault_usage import store_report
from proxy.audit import read_entries
from proxy.process import VaultProcess
from tests.fakes.model_payloads import Tokens, anthropic_sse, chat_sse
from tests.fakes.model_server import FakeModelServer, Raw
from tests.fakes.ollama_payloads import NDJSON, ollama_ndjson

pytestmark = pytest.mark.asyncio(loop_scope="module")

GROUPS = ("chat", "claude", "llama")
BUDGET = 2000  # tokens per group
MAX_CALLS = 8  # the estimates must use the budget up within this many cut calls
PROMPT = "Please summarise the following notes in detail. " * 30  # ~1.5 KB of request body
WORDS = ["Alpha", *[" lorem ipsum dolor"] * 60, " END"]
# What the model server reports — never seen, the streams are cut before it: Anthropic states a
# small input at message_start, the others nothing at all.
REPORTED = Tokens(input=12, output=5000)


def _hang_before_usage(path: str) -> Raw:
    """The provider's stream, sent up to (not including) its final usage event, then held."""
    if path.startswith("/v1/chat/"):
        body = chat_sse(REPORTED, words=WORDS)
        at = body.rfind(b"\n\n", 0, body.index(b'"usage":{')) + 2
        return Raw(200, "text/event-stream", body, pieces=9, hang_at=at)
    if path.startswith("/api/"):
        body = ollama_ndjson(REPORTED, "chat", words=WORDS)
        at = body.rfind(b"\n", 0, len(body) - 1) + 1
        return Raw(200, NDJSON, body, pieces=9, hang_at=at)
    body = anthropic_sse(REPORTED, words=WORDS)
    return Raw(200, "text/event-stream", body, pieces=9, hang_at=body.index(b"event: message_delta"))


class Receiver:
    """The gateway's end of the vault's usage reports: the real handler and store."""

    def __init__(self, path: Path, store: Store) -> None:
        self.server = ControlServer(path, self.handle)
        self.store = store

    async def handle(self, request: dict[str, object]) -> dict[str, object]:
        if request.get("op") != "vault_usage":
            return {"ok": True}
        return await store_report(self.store, request, PriceTable())


class Setup:
    def __init__(
        self, model: FakeModelServer, vault: VaultProcess, store: Store, dirs: dict[str, Path]
    ) -> None:
        self.model, self.vault, self.store, self.dirs = model, vault, store, dirs


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    base = tmp_path_factory.mktemp("cut")
    dirs = {k: base / k for k in ("cfg", "state", *GROUPS)}
    for p in dirs.values():
        p.mkdir(mode=0o700)
    model = FakeModelServer()
    model.__enter__()
    model.default = lambda record: _hang_before_usage(record.path)
    store = await Store.open(base / "db.sqlite")
    receiver = Receiver(base / "gw.sock", store)
    await receiver.server.start()
    egress = "".join(f'{g} = ["127.0.0.1"]\n' for g in GROUPS)
    (dirs["cfg"] / "config.toml").write_text(f"[vault.egress]\n{egress}")
    vault = VaultProcess(
        dirs["cfg"], dirs["state"], allow_private=[model.host_port], gateway_socket=base / "gw.sock"
    )
    await vault.start(timeout=30)
    for group in GROUPS:
        await vault.open_group(group, dirs[group] / "vault.sock")
    yield Setup(model, vault, store, dirs)
    await vault.stop()
    await receiver.server.close()
    await store.close()
    model.__exit__()


async def cut_call(sock: Path, port: int, path: str, body: dict[str, Any], until: bytes) -> tuple[int, bytes]:
    """A streamed model call that hangs up as soon as `until` has arrived (or reads a refusal)."""
    data = json.dumps(body).encode()
    head = (
        f"POST http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.open_unix_connection(str(sock))
    got = b""
    try:
        writer.write(head + data)
        await writer.drain()

        async def read() -> None:
            nonlocal got
            while until not in got.partition(b"\r\n\r\n")[2]:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                got += chunk

        await asyncio.wait_for(read(), 30)
    finally:
        writer.close()  # the cut: before the final usage event
    return int(got.split(b" ", 2)[1]), got


async def stored(store: Store, group: str) -> list[tuple[Any, ...]]:
    async with store._conn.execute(
        "SELECT input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, complete"
        " FROM metered_usage WHERE group_folder = ? ORDER BY rowid",
        (group,),
    ) as cur:
        return [tuple(r) for r in await cur.fetchall()]


async def until_rows(store: Store, group: str, n: int) -> None:
    for _ in range(400):
        if len(await stored(store, group)) >= n:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{group}: {n} metered row(s) not stored within 20 s")


CASES = [
    # group, path, body, what the client waits for before it hangs up
    ("chat", "/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True}, b"Alpha"),
    ("llama", "/api/chat", {"model": "llama3.2"}, b"Alpha"),  # Ollama streams by default
    ("claude", "/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 8000, "stream": True}, b"END"),
]


@pytest.mark.parametrize(("group", "path", "body", "until"), CASES, ids=[c[0] for c in CASES])
async def test_hanging_up_before_the_final_usage_still_uses_up_the_budget(
    setup: Setup, group: str, path: str, body: dict[str, Any], until: bytes
) -> None:
    limit = {"key": f"{group}:daily_tokens:d", "unit": "tokens", "remaining": BUDGET, "message": "used up"}
    await setup.vault.set_budgets({"prices": {}, "limits": {group: [limit]}})
    sock, port = setup.dirs[group] / "vault.sock", setup.model.port
    request = {**body, "messages": [{"role": "user", "content": PROMPT}]}
    reached = len(setup.model.requests)
    calls = 0
    for calls in range(1, MAX_CALLS + 1):
        status, got = await cut_call(sock, port, path, request, until)
        if status == 403:
            break
        assert status == 200 and until in got, got[:300]
        # The cut call was metered before the next one (the vault counts it the moment it ends).
        await until_rows(setup.store, group, calls)
    assert status == 403, f"{MAX_CALLS} cut calls, still not refused: the cut streams counted nothing"
    assert b"clawgate budget: used up" in got
    # The refused call, and any after it, never reached the model server.
    assert len(setup.model.requests) == reached + calls - 1
    status, _ = await cut_call(sock, port, path, request, until)
    assert status == 403 and len(setup.model.requests) == reached + calls - 1

    rows = await stored(setup.store, group)
    assert len(rows) == calls - 1
    for inp, out, cache_read, cache_write, complete in rows:
        assert complete == 0  # marked: counted with an estimate
        assert inp > 0 and out > 0
        if group == "claude":  # message_start stated the input; the output is the content relayed
            assert (inp, cache_read, cache_write) == (REPORTED.input, 0, 0)
            assert out >= len(WORDS)
        else:  # nothing stated: the request body's size
            assert inp >= len(json.dumps(request)) // 4
    assert sum(sum(r[:4]) for r in rows) >= BUDGET

    for _ in range(100):  # the audit log is written in the background
        marked = [
            e
            for e in read_entries(setup.dirs["state"])
            if e.get("group") == group and str(e.get("spend") or "").startswith("estimated:")
        ]
        if len(marked) >= calls - 1:
            break
        await asyncio.sleep(0.1)
    assert len(marked) == calls - 1, marked
    assert all(e["status"] == 200 and str(e["refusal"]).startswith("error:") for e in marked)


async def test_hanging_up_before_any_answer_counts_the_request(setup: Setup) -> None:
    """The whole request reached the model server, which may bill its input; the client hangs up
    before the first byte of the answer. The call counts its request body's size as input."""
    group = "chat"
    await setup.vault.set_budgets({"prices": {}, "limits": {}})
    before = len(await stored(setup.store, group))
    setup.model.responses.append(Raw(200, "text/event-stream", b"", hang_at=-1))
    request = {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    data = json.dumps(request).encode()
    port = setup.model.port
    head = (
        f"POST http://127.0.0.1:{port}/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    ).encode()
    reached = len(setup.model.requests)
    reader, writer = await asyncio.open_unix_connection(str(setup.dirs[group] / "vault.sock"))
    writer.write(head + data)
    await writer.drain()
    for _ in range(400):  # until the model server has the whole request
        if len(setup.model.requests) > reached:
            break
        await asyncio.sleep(0.05)
    assert len(setup.model.requests) == reached + 1
    writer.close()  # before any answer
    await until_rows(setup.store, group, before + 1)
    rows = await stored(setup.store, group)
    assert len(rows) == before + 1
    inp, out, cache_read, cache_write, complete = rows[-1]
    assert complete == 0 and (out, cache_read, cache_write) == (0, 0, 0)
    assert inp >= len(data) // 3  # the body as sent, 3 bytes a token
