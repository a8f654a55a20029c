"""The gateway's end of the vault's usage reports (`{"op": "vault_usage", "records": [...]}`).

The vault meters every model call it relays (proxy/metering.py) and reports the records here in
batches, keeping each in its spool until this answers `{"ok": true, "stored": n}` — which it does
only after the rows are committed (invariant 13). The vault is trusted, but bugs are not: every
field is checked (types, sizes, token counts >= 0), absurd values are clamped with a log line,
and a record that cannot be stored at all is dropped with a log line rather than refused, since
refusing it would make the vault resend it forever and hold up every record behind it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from core.pricing import PriceTable, cost_micros
from gateway.store import MeteredRow, Store
from gateway.store.budgets import SpendRow

log = logging.getLogger(__name__)

MAX_RECORDS = 500  # per line (SPEND-INTERFACE §3); the vault never sends more
MAX_TOKENS = 100_000_000  # per call: far beyond any model's context; larger is a bug, clamped
MAX_MODEL = 100
MAX_GROUP = 100
PAST_S = 400 * 86400  # a record older than this (or from the future) gets the time it arrived
FUTURE_S = 300.0
PROVIDERS = frozenset({"anthropic", "openai", "gemini", "ollama"})
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
TOKEN_FIELDS = ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens")


class BadRecord(ValueError):
    """A record that cannot be stored; the message names the field."""


def _count(record: Mapping[str, Any], key: str) -> int:
    value = record.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRecord(f"{key} must be an integer")
    if value < 0:
        raise BadRecord(f"{key} must be >= 0")
    if value > MAX_TOKENS:
        log.warning(
            "vault_usage: %s = %d clamped to %d (record %s)", key, value, MAX_TOKENS, record.get("id")
        )
        return MAX_TOKENS
    return value


def _text(record: Mapping[str, Any], key: str, limit: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise BadRecord(f"{key} must be a non-empty string")
    if len(value) > limit:
        raise BadRecord(f"{key} is longer than {limit} characters")
    return value


def parse_record(record: object, prices: PriceTable, now: float) -> MeteredRow:
    """One record, validated and priced; BadRecord says why it cannot be stored."""
    if not isinstance(record, dict):
        raise BadRecord("a record must be an object")
    rid = record.get("id")
    if not isinstance(rid, str) or _ID.match(rid) is None:
        raise BadRecord("id must be 1-80 characters of [A-Za-z0-9_.:-]")
    group = _text(record, "group", MAX_GROUP)
    provider = record.get("provider")
    if provider not in PROVIDERS:
        raise BadRecord(f"provider must be one of {sorted(PROVIDERS)}")
    model = record.get("model")
    if not isinstance(model, str):
        raise BadRecord("model must be a string")
    model = "".join(c for c in model[:MAX_MODEL] if c.isprintable()) or "unknown"
    counts = {key: _count(record, key) for key in TOKEN_FIELDS}
    complete = record.get("complete")
    if not isinstance(complete, bool):
        raise BadRecord("complete must be true or false")
    at = record.get("at")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise BadRecord("at must be a finite number (unix time)")
    if not now - PAST_S <= at <= now + FUTURE_S:
        log.warning("vault_usage: record %s has time %s; stored with the time it arrived", rid, at)
        at = now
    row = MeteredRow(
        rid, group, None, str(provider), model, **counts, cost_micros=0, complete=complete, at=float(at)
    )
    return dataclasses.replace(row, cost_micros=cost_micros(row, prices))


async def store_report(store: Store, request: Mapping[str, object], prices: PriceTable) -> dict[str, object]:
    """Validate, price and commit one report; the reply the vault acknowledges its records by."""
    records = request.get("records")
    if not isinstance(records, list):
        raise ValueError("vault_usage needs a list 'records'")
    if len(records) > MAX_RECORDS:
        raise ValueError(f"vault_usage takes at most {MAX_RECORDS} records per line")
    now = time.time()
    rows: list[MeteredRow] = []
    dropped = 0
    for record in records:
        try:
            rows.append(parse_record(record, prices, now))
        except BadRecord as exc:
            dropped += 1
            rid = record.get("id") if isinstance(record, dict) else None
            log.warning("vault_usage: dropped record %.80r: %s", rid, exc)
    stored = await store.add_metered_usage(rows)
    return {"ok": True, "stored": stored, "dropped": dropped}


def start_of_day(now: float) -> float:
    """Local midnight before `now`: "today" for /status."""
    return datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()


def spend_by_group(totals: Iterable[SpendRow]) -> dict[str, tuple[int, int]]:
    """Per group: (tokens of all four kinds, cost in USD millionths), summed over its models."""
    out: dict[str, tuple[int, int]] = {}
    for t in totals:
        tokens, micros = out.get(t.group, (0, 0))
        out[t.group] = (tokens + t.tokens, micros + t.cost_micros)
    return out
