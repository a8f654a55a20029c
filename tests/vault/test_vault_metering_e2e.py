"""Metering through the real vault process, reported to a real gateway control socket and store.

Issue 15's first acceptance item: requests from two groups to the fake model server, which
answers in the recorded shapes of both providers (Anthropic Messages, OpenAI Chat Completions
and Responses; JSON and SSE, the streams written in arbitrary pieces) with token counts chosen
here. The rows stored per group must equal what the model server reported, exactly. Then the
durability promises: the receiving side dies after committing but before acknowledging (the
vault resends; every id is stored once), and the vault is killed with records only in its spool
(the restarted vault sends them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import stat
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from core.pricing import PriceTable
from gateway.control import ControlServer
from gateway.store import Store
from gateway.vault_usage import store_report
from proxy.process import VaultProcess
from proxy.secrets import SecretStore
from proxy.usage_report import SPOOL_FILE
from tests.fakes.model_payloads import Tokens
from tests.fakes.model_server import FakeModelServer, Recorded, recorded_answer

pytestmark = pytest.mark.asyncio(loop_scope="module")

KEY = "sk-ant-REAL-metering-e2e-1234567"
GROUPS = ("alpha", "beta")
MODELS = {"anthropic": "claude-sonnet-4-5-20250929", "openai-chat": "gpt-4o-mini-2024-07-18"}


class Receiver:
    """The gateway's control socket with the real `vault_usage` handler and store, and faults."""

    def __init__(self, path: Path, store: Store) -> None:
        self.path, self.store = path, store
        self.received: Counter[str] = Counter()  # record id -> times it arrived
        self.die_after_commit = False
        self.server: ControlServer | None = None

    async def start(self) -> None:
        self.server = ControlServer(self.path, self.handle)
        await self.server.start()

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None

    async def handle(self, request: dict[str, object]) -> dict[str, object]:
        if request.get("op") != "vault_usage":
            return {"ok": True}
        records = request.get("records")
        assert isinstance(records, list)
        self.received.update(r["id"] for r in records)
        reply = await store_report(self.store, request, PriceTable())
        if self.die_after_commit:  # committed, then gone before the answer leaves
            self.die_after_commit = False
            await self.stop()
            raise ConnectionResetError("receiver killed between commit and acknowledgement")
        return reply


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("me")
    d = {k: base / k for k in ("cfg", "state", *GROUPS)}
    for p in d.values():
        p.mkdir(mode=0o700)
    d["gw"] = base / "gw.sock"
    d["db"] = base / "db.sqlite"
    return d


class Setup:
    def __init__(self, model: FakeModelServer, receiver: Receiver, vault: VaultProcess, store: Store) -> None:
        self.model, self.receiver, self.vault, self.store = model, receiver, vault, store
        self.reported: dict[str, Tokens] = {}  # request marker -> what the model server reported


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def setup(env: dict[str, Path]) -> AsyncIterator[Setup]:
    model = FakeModelServer()
    model.__enter__()
    store = await Store.open(env["db"])
    receiver = Receiver(env["gw"], store)
    await receiver.start()
    (env["cfg"] / "config.toml").write_text(
        f'[model]\nbase_url = "http://{model.host_port}"\n'
        f'[vault]\nallow_private_upstreams = ["{model.host_port}"]\n'
    )
    SecretStore(env["cfg"]).add(
        "anthropic", KEY, model.host_port, header="x-api-key", fmt="{value}", groups=list(GROUPS)
    )
    vault = VaultProcess(env["cfg"], env["state"], allow_private=[model.host_port], gateway_socket=env["gw"])
    await vault.start(timeout=30)
    for group in GROUPS:
        await vault.open_group(group, env[group] / "vault.sock")
    s = Setup(model, receiver, vault, store)

    def answer(record: Recorded) -> Any:
        marker = str(record.body.get("metadata", {}).get("marker", ""))
        tokens = s.reported[marker]
        kind = "openai-chat" if "/chat/" in record.path else "anthropic"
        return recorded_answer(
            record, tokens, model=MODELS.get(kind) if "/responses" not in record.path else None
        )

    model.default = answer
    yield s
    await vault.stop()
    await receiver.stop()
    await store.close()
    model.__exit__()


async def call(
    env: dict[str, Path], setup: Setup, group: str, path: str, body: dict[str, Any], tokens: Tokens
) -> bytes:
    """One model call from `group` through its vault socket; returns the response body."""
    marker = f"{group}-{len(setup.reported)}"
    setup.reported[marker] = tokens
    data = json.dumps({**body, "metadata": {"marker": marker}}).encode()
    port = setup.model.port
    head = (
        f"POST http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "x-api-key: placeholder\r\nAccept-Encoding: gzip, br\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    reader, writer = await asyncio.open_unix_connection(str(env[group] / "vault.sock"))
    try:
        writer.write(head.encode() + data)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    status, _, rest = raw.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 200"), raw[:500]
    headers, _, payload = rest.partition(b"\r\n\r\n")
    if b"transfer-encoding: chunked" in headers.lower():
        payload = dechunk(payload)
    return payload


def dechunk(data: bytes) -> bytes:
    out, pos = b"", 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return out
        out += data[end + 2 : end + 2 + size]
        pos = end + 2 + size + 2


VARIANTS = [
    ("/v1/messages", {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": False}, "anthropic"),
    ("/v1/messages?beta=true", {"model": "claude-sonnet-4-5", "max_tokens": 64, "stream": True}, "anthropic"),
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "stream": False}, "openai"),
    # no stream_options: the vault must ask for usage itself, or this stream would carry none
    ("/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True}, "openai"),
    (
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": False}},
        "openai",
    ),
    ("/v1/responses", {"model": "gpt-4.1", "stream": False}, "openai"),
    ("/v1/responses", {"model": "gpt-4.1", "stream": True}, "openai"),
]


def stored_rows(rows: list[Any]) -> Counter[tuple[object, ...]]:
    return Counter(tuple(r) for r in rows)


async def rows_of(store: Store) -> list[Any]:
    async with store._conn.execute(
        "SELECT group_folder, provider, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
        " complete FROM metered_usage"
    ) as cur:
        return list(await cur.fetchall())


async def until(condition: Any, seconds: float = 20) -> None:
    for _ in range(int(seconds / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_stored_usage_per_group_matches_what_the_model_reported(
    setup: Setup, env: dict[str, Path]
) -> None:
    rng = random.Random(15)
    expected: Counter[tuple[object, ...]] = Counter()
    for group in GROUPS:
        for path, body, provider in VARIANTS:
            t = Tokens(
                input=rng.randint(1, 50_000),
                output=rng.randint(1, 8000),
                cache_read=rng.randint(0, 200_000),
                cache_write=rng.randint(0, 20_000) if provider == "anthropic" else 0,
            )
            payload = await call(env, setup, group, path, body, t)
            assert payload  # the client got the whole response (the meter does not eat bytes)
            if body.get("stream"):
                assert payload.rstrip().endswith((b"[DONE]", b'message_stop"}', b"}")), payload[-200:]
            expected[(group, provider, t.input, t.output, t.cache_read, t.cache_write, 1)] += 1
    n = sum(expected.values())

    async def all_stored() -> bool:
        return len(await rows_of(setup.store)) >= n

    await until(all_stored)
    assert stored_rows(await rows_of(setup.store)) == expected
    # what reached the model: identity encoding, and chat streams asked for usage
    chat_streams = [r for r in setup.model.requests if "/chat/" in r.path and r.body.get("stream")]
    assert chat_streams and all(r.body["stream_options"]["include_usage"] is True for r in chat_streams)
    assert all(r.headers.get("accept-encoding") == "identity" for r in setup.model.requests)
    assert all(r.headers.get("x-api-key") == KEY for r in setup.model.requests)
    # per-group totals through the store's query, priced
    for group in GROUPS:
        totals = await setup.store.metered_totals(group, 0)
        assert sum(t.calls for t in totals) == len(VARIANTS)
        assert sum(t.input_tokens for t in totals) == sum(
            k[2] * v for k, v in expected.items() if k[0] == group
        )
        assert all(t.cost_micros > 0 for t in totals)
    assert {t.model for t in await setup.store.metered_totals(None, 0)} == {
        "claude-sonnet-4-5-20250929",
        "gpt-4o-mini-2024-07-18",
        "gpt-4.1-2025-04-14",
    }
    spool = env["state"] / SPOOL_FILE
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600


async def test_receiver_killed_between_commit_and_ack_stores_each_record_once(
    setup: Setup, env: dict[str, Path]
) -> None:
    before = set(await setup.store.metered_row_ids())
    setup.receiver.die_after_commit = True
    for i in range(3):
        await call(
            env, setup, "alpha", "/v1/messages", {"model": "m", "stream": True}, Tokens(10 + i, 20, 30, 40)
        )

    async def committed_and_dead() -> bool:
        return setup.receiver.server is None and len(await setup.store.metered_row_ids()) > len(before)

    await until(committed_and_dead)
    await asyncio.sleep(0.5)  # the vault retries against a dead socket meanwhile
    await setup.receiver.start()  # the gateway is back

    async def resent() -> bool:
        new = set(await setup.store.metered_row_ids()) - before
        return len(new) == 3 and any(setup.receiver.received[i] >= 2 for i in new)

    await until(resent)
    ids = await setup.store.metered_row_ids()
    assert len(ids) == len(set(ids)) == len(before) + 3  # resent, stored once


async def test_vault_killed_with_records_only_in_its_spool_sends_them_after_restart(
    setup: Setup, env: dict[str, Path]
) -> None:
    before = set(await setup.store.metered_row_ids())
    await setup.receiver.stop()  # the gateway is away: records wait in the spool
    for i in range(4):
        await call(
            env, setup, "beta", "/v1/responses", {"model": "gpt-4.1", "stream": True}, Tokens(100 + i, 5)
        )
    spool = env["state"] / SPOOL_FILE

    async def spooled() -> bool:
        return spool.read_bytes().count(b'"group":"beta"') >= 4 + 7  # 7 beta records earlier

    await until(spooled)
    pid, restarts = setup.vault.pid, setup.vault.restarts
    assert pid is not None
    os.kill(pid, signal.SIGKILL)

    async def restarted() -> bool:
        return setup.vault.restarts > restarts and setup.vault.ready.is_set()

    await until(restarted, 60)
    await setup.receiver.start()

    async def arrived() -> bool:
        return len(set(await setup.store.metered_row_ids()) - before) == 4

    await until(arrived)
    new = set(await setup.store.metered_row_ids()) - before
    async with setup.store._conn.execute(
        f"SELECT input_tokens FROM metered_usage WHERE id IN ({','.join('?' * len(new))})", list(new)
    ) as cur:
        assert sorted(r[0] for r in await cur.fetchall()) == [100, 101, 102, 103]
    with contextlib.suppress(FileNotFoundError):
        assert stat.S_IMODE(spool.stat().st_mode) == 0o600


async def test_cut_and_garbage_streams_pass_unchanged_and_count_what_was_seen(
    setup: Setup, env: dict[str, Path]
) -> None:
    """Metering never changes what the client gets; a stream cut short counts what it showed, or
    more: an estimate from the bytes relayed."""
    from tests.fakes.model_payloads import anthropic_sse
    from tests.fakes.model_server import Raw

    full = anthropic_sse(Tokens(input=777, output=55, cache_read=66, cache_write=88))
    cut = full[: full.index(b"event: message_delta") + 30]  # ends inside the final usage event
    garbage = b"data: {not json\n\n\x00\xff" * 200 + b'event: message_delta\ndata: {"usage": [1]}\n\n'
    before = set(await setup.store.metered_row_ids("alpha"))
    for body in (cut, garbage):
        setup.model.responses.append(Raw(200, "text/event-stream", body, pieces=5))
        got = await call(
            env, setup, "alpha", "/v1/messages", {"model": "claude-haiku-4-5", "stream": True}, Tokens()
        )
        assert got == body  # byte for byte

    async def both() -> bool:
        return len(set(await setup.store.metered_row_ids("alpha")) - before) == 2

    await until(both)
    new = sorted(set(await setup.store.metered_row_ids("alpha")) - before)
    async with setup.store._conn.execute(
        "SELECT model, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, complete"
        f" FROM metered_usage WHERE id IN ({','.join('?' * len(new))})",
        new,
    ) as cur:
        rows = sorted(tuple(r) for r in await cur.fetchall())
    garbage_row, cut_row = rows
    # message_start seen, final usage not: its input and cache counts stand, the output is the
    # five words relayed (proxy/meter_estimate.py), incomplete
    assert cut_row[:2] == ("claude-sonnet-4-5-20250929", 777) and cut_row[3:] == (66, 88, 0)
    assert cut_row[2] >= 5
    # nothing readable: the request's model, its body's size as input, no content, incomplete
    request_bytes = len(
        json.dumps({"model": "claude-haiku-4-5", "stream": True, "metadata": {"marker": "alpha-00"}})
    )
    assert garbage_row[0] == "claude-haiku-4-5" and garbage_row[1] >= request_bytes // 3
    assert garbage_row[2:] == (0, 0, 0, 0)


async def test_a_large_streamed_chat_request_is_made_to_carry_usage(
    setup: Setup, env: dict[str, Path]
) -> None:
    """A body over 1 MiB is streamed by the vault, not buffered; it is still rewritten whole."""
    history = [{"role": "user", "content": "x" * 1000 + str(i)} for i in range(1200)]
    body = {"model": "gpt-4o-mini", "stream": True, "messages": history}
    before = set(await setup.store.metered_row_ids("beta"))
    tokens = Tokens(input=123_456, output=789, cache_read=1000)
    payload = await call(env, setup, "beta", "/v1/chat/completions", body, tokens)
    assert payload.rstrip().endswith(b"[DONE]")
    seen = setup.model.requests[-1]
    assert seen.body["stream_options"] == {"include_usage": True}
    assert seen.body["messages"] == history  # nothing else changed

    async def stored() -> bool:
        return len(set(await setup.store.metered_row_ids("beta")) - before) == 1

    await until(stored)
    (new,) = set(await setup.store.metered_row_ids("beta")) - before
    async with setup.store._conn.execute(
        "SELECT model, input_tokens, output_tokens, cache_read_tokens, complete FROM metered_usage"
        " WHERE id = ?",
        (new,),
    ) as cur:
        assert tuple(await cur.fetchone()) == ("gpt-4o-mini-2024-07-18", 123_456, 789, 1000, 1)  # type: ignore[arg-type]
