"""Metered usage: the `vault_usage` control op (strict validation, pricing, idempotent) and its table.

Real SQLite, and the gateway's real control socket for the op.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from core.config import Config, parse
from core.pricing import PriceTable
from gateway.control import ControlServer
from gateway.control_requests import ControlRequests
from gateway.store import MeteredRow, Store
from gateway.vault_usage import MAX_TOKENS, BadRecord, parse_record

NOW = time.time()


def record(n: int = 1, **overrides: Any) -> dict[str, Any]:
    return {
        "id": f"vault-a:{n}",
        "group": "team",
        "provider": "anthropic",
        "model": "claude-sonnet-4-5-20250929",
        "input_tokens": 1000,
        "output_tokens": 500,
        "cache_read_tokens": 10_000,
        "cache_write_tokens": 2000,
        "complete": True,
        "at": NOW,
        **overrides,
    }


@pytest.fixture
async def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = await Store.open(tmp_path / "db.sqlite")
    yield s
    await s.close()


@pytest.fixture
async def control(tmp_path: Path, store: Store):  # type: ignore[no-untyped-def]
    config = parse(
        '[prices."claude-sonnet-4-5"]\ninput = 3\noutput = 15\ncache_read = 0.3\ncache_write = 3.75\n',
        Path("c"),
    )
    gw = SimpleNamespace(store=store, config=config)

    async def status() -> str:
        return ""

    server = ControlServer(tmp_path / "gateway.sock", ControlRequests(gw, status))  # type: ignore[arg-type]
    await server.start()
    yield server.path
    await server.close()


async def ask(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(json.dumps(request).encode() + b"\n")
    await writer.drain()
    reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
    writer.close()
    return reply  # type: ignore[no-any-return]


async def test_report_is_priced_stored_once_and_totalled(control: Path, store: Store) -> None:
    batch = [
        record(1),
        record(2, group="other", provider="openai", model="gpt-4o-mini", cache_write_tokens=0),
    ]
    assert await ask(control, {"op": "vault_usage", "records": batch}) == {
        "ok": True,
        "stored": 2,
        "dropped": 0,
    }
    # the same records again (the vault resends what it was not sure was stored): nothing new
    assert await ask(control, {"op": "vault_usage", "records": batch}) == {
        "ok": True,
        "stored": 0,
        "dropped": 0,
    }
    assert await store.metered_row_ids() == ["vault-a:1", "vault-a:2"]
    team = await store.metered_totals("team", NOW - 1)
    assert len(team) == 1
    t = team[0]
    assert (t.group, t.model, t.calls) == ("team", "claude-sonnet-4-5-20250929", 1)
    assert (t.input_tokens, t.output_tokens, t.cache_read_tokens, t.cache_write_tokens) == (
        1000,
        500,
        10_000,
        2000,
    )
    assert t.cost_micros == 1000 * 3 + 500 * 15 + 10_000 * 0.3 + 2000 * 3.75  # the configured price
    other = await store.metered_totals("other", NOW - 1)
    assert other[0].cost_micros == round(1000 * 0.15 + 500 * 0.6 + 10_000 * 0.075)  # built-in gpt-4o-mini
    assert len(await store.metered_totals(None, NOW - 1)) == 2
    assert await store.metered_totals(None, NOW + 1) == []
    assert await store.metered_totals(None, NOW - 10, until=NOW) == []


async def test_rows_name_the_groups_running_turn(store: Store) -> None:
    async with store._transaction() as conn:
        cur = await conn.execute(
            "INSERT INTO runs (folder, status, started_at) VALUES ('team', 'running', ?)", (NOW,)
        )
        run_id = cur.lastrowid
        await conn.execute(
            "INSERT INTO runs (folder, status, started_at) VALUES ('other', 'done', ?)", (NOW,)
        )
    prices = PriceTable()
    rows = [parse_record(record(1), prices, NOW), parse_record(record(2, group="other"), prices, NOW)]
    assert await store.add_metered_usage(rows) == 2
    async with store._conn.execute("SELECT id, run_id FROM metered_usage ORDER BY id") as cur:
        assert [tuple(r) for r in await cur.fetchall()] == [("vault-a:1", run_id), ("vault-a:2", None)]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"id": ""}, "id"),
        ({"id": "x" * 81}, "id"),
        ({"id": "a b"}, "id"),
        ({"id": 5}, "id"),
        ({"group": ""}, "group"),
        ({"group": "g" * 101}, "group"),
        ({"group": None}, "group"),
        ({"provider": "google"}, "provider"),
        ({"model": 3}, "model"),
        ({"input_tokens": -1}, "input_tokens"),
        ({"output_tokens": 1.5}, "output_tokens"),
        ({"cache_read_tokens": True}, "cache_read_tokens"),
        ({"cache_write_tokens": "9"}, "cache_write_tokens"),
        ({"complete": 1}, "complete"),
        ({"at": "now"}, "at"),
        ({"at": float("nan")}, "at"),
    ],
)
def test_bad_fields_are_named(change: dict[str, Any], field: str) -> None:
    with pytest.raises(BadRecord, match=field):
        parse_record(record(**change), PriceTable(), NOW)
    with pytest.raises(BadRecord):
        parse_record({k: v for k, v in record().items() if k != field}, PriceTable(), NOW)


def test_absurd_values_are_clamped() -> None:
    row = parse_record(
        record(input_tokens=10**15, at=NOW + 10**9, model="m\x00" + "x" * 500), PriceTable(), NOW
    )
    assert row.input_tokens == MAX_TOKENS and row.at == NOW and row.model == "m" + "x" * 98
    assert parse_record(record(model=""), PriceTable(), NOW).model == "unknown"


async def test_bad_records_are_dropped_not_refused_and_bad_lines_are_errors(
    control: Path, store: Store
) -> None:
    batch = [record(1), record(2, input_tokens=-5), "junk", record(3)]
    assert await ask(control, {"op": "vault_usage", "records": batch}) == {
        "ok": True,
        "stored": 2,
        "dropped": 2,
    }
    assert await store.metered_row_ids() == ["vault-a:1", "vault-a:3"]
    assert (await ask(control, {"op": "vault_usage", "records": {"a": 1}}))["ok"] is False
    too_many = [record(i) for i in range(501)]
    reply = await ask(control, {"op": "vault_usage", "records": too_many})
    assert reply["ok"] is False and "500" in reply["error"]
    assert await store.metered_row_ids() == ["vault-a:1", "vault-a:3"]  # nothing of a refused line


async def test_a_full_batch_fits_on_one_control_line(control: Path, store: Store) -> None:
    batch = [record(i, id=f"{'v' * 40}:{i:039d}", group="g" * 100, model="m" * 100) for i in range(500)]
    assert len(json.dumps({"op": "vault_usage", "records": batch})) > 64 * 1024
    assert (await ask(control, {"op": "vault_usage", "records": batch}))["stored"] == 500


def test_store_rows_are_plain_data() -> None:
    row = parse_record(record(), PriceTable(), NOW)
    assert isinstance(row, MeteredRow) and row.run_id is None and row.cost_micros > 0
    assert Config().prices == {}
