"""The spend ledger: policy verdicts recorded atomically with the spend they allow, on a real SQLite store.

The decide callback runs inside the store's write transaction, so concurrent requests see each
other's spend and together can never pass the daily limit (invariant 5, docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.models import WalletDraft
from core.wallet.amounts import parse_near
from core.wallet.settings import WalletPolicy
from gateway.store import Store
from gateway.wallet.analysis import TxAnalysis, analyze
from gateway.wallet.decision import DaySpend, Decision
from gateway.wallet.policy import PolicyEngine, utc_day
from gateway.wallet.transactions import Transaction, Transfer
from tests.wallet.known_keys import KEY

MIDNIGHT = datetime(2025, 6, 2, tzinfo=UTC).timestamp()
LAST_MS = MIDNIGHT - 0.001  # 2025-06-01 23:59:59.999 UTC
DAY_D, DAY_NEXT = utc_day(LAST_MS), utc_day(MIDNIGHT)
ENGINE = PolicyEngine(WalletPolicy(auto_approve_max="0.1", daily_limit="1"))
LIMIT = parse_near("1")


@dataclass(frozen=True, slots=True)
class FullAccess:
    kind: str = "full_access"
    receiver_id: str | None = None
    method_names: tuple[str, ...] = ()
    allowance: int | None = None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "db.sqlite")
    try:
        yield s
    finally:
        await s.close()


def transfer(yocto: int, nonce: int = 1) -> TxAnalysis:
    return analyze(
        Transaction("alice.near", KEY.public_key, nonce, "bob.near", bytes(32), (Transfer(yocto),))
    )


def draft(analysis: TxAnalysis) -> WalletDraft:
    return WalletDraft(
        "main",
        "k",
        analysis.signer_id,
        analysis.receiver_id,
        "transaction",
        analysis.summary,
        analysis.total_value,
    )


def decider(analysis: TxAnalysis, *, owner_approved: bool = False) -> Callable[[DaySpend], Decision]:
    return lambda spent: ENGINE.decide(
        analysis,
        group="main",
        key_name="k",
        key_permission=FullAccess(),
        spent_today=spent.near,
        owner_approved=owner_approved,
        tokens_spent_today=spent.tokens,
    )


async def request(store: Store, analysis: TxAnalysis, day: str, now: float) -> tuple[int, Decision, int]:
    return await store.wallet_decide(draft(analysis), decider(analysis), day, now)


async def test_concurrent_requests_never_pass_the_daily_limit(store: Store) -> None:
    value = parse_near("0.03")
    analyses = [transfer(value, nonce) for nonce in range(50)]
    results = await asyncio.gather(*(request(store, a, DAY_D, LAST_MS) for a in analyses))
    outcomes = [verdict.outcome for _, verdict, _ in results]
    assert outcomes.count("auto_approve") == LIMIT // value == 33
    assert outcomes.count("deny") == 50 - 33
    assert await store.wallet_spent(DAY_D) == 33 * value <= LIMIT
    # Each verdict saw the spend of every request decided before it, never a stale total.
    assert sorted(spent.near for _, _, spent in results) == sorted(min(i, 33) * value for i in range(50))
    denied = [verdict for _, verdict, _ in results if not verdict.signs]
    assert all("would exceed the daily limit 1 NEAR" in d.reasons[0] for d in denied)
    rows = await store.wallet_requests(limit=100)
    assert sorted(r.state for r in rows) == ["denied"] * 17 + ["signing"] * 33


async def test_owner_approval_is_rechecked_against_grown_spend(store: Store) -> None:
    big = transfer(parse_near("0.6"))
    request_id, verdict, _ = await request(store, big, DAY_D, 1000.0)
    assert verdict.outcome == "needs_approval"
    assert await store.wallet_spent(DAY_D) == 0  # pending requests do not count yet
    # While the owner is thinking, auto-approved spending grows to 0.5 NEAR.
    for nonce in range(5):
        _, small, _ = await request(store, transfer(parse_near("0.1"), nonce), DAY_D, 1001.0)
        assert small.signs
    cleared = await store.wallet_clear_approved(
        request_id, big.total_value, decider(big, owner_approved=True), DAY_D, 1002.0
    )
    assert cleared is not None
    recheck, spent = cleared
    assert spent.near == parse_near("0.5")
    assert recheck == Decision(
        "deny", ("today's spend 0.5 NEAR + this 0.6 NEAR would exceed the daily limit 1 NEAR",)
    )
    row = await store.wallet_request(request_id)
    assert row is not None and row.state == "denied" and row.spend_day is None
    assert await store.wallet_spent(DAY_D) == parse_near("0.5")
    # A decision is taken once: a second approval finds nothing pending.
    assert (
        await store.wallet_clear_approved(
            request_id, big.total_value, decider(big, owner_approved=True), DAY_D, 1003.0
        )
        is None
    )


async def test_owner_approval_within_the_limit_signs_and_counts(store: Store) -> None:
    big = transfer(parse_near("0.6"))
    request_id, verdict, _ = await request(store, big, DAY_D, 1000.0)
    assert verdict.outcome == "needs_approval"
    cleared = await store.wallet_clear_approved(
        request_id, big.total_value, decider(big, owner_approved=True), DAY_D, 1001.0
    )
    assert cleared is not None and cleared[0].signs
    assert await store.wallet_spent(DAY_D) == parse_near("0.6")


async def test_spend_resets_at_utc_midnight(store: Store) -> None:
    assert (DAY_D, DAY_NEXT) == ("2025-06-01", "2025-06-02")
    for nonce in range(10):
        _, verdict, _ = await request(store, transfer(parse_near("0.1"), nonce), utc_day(LAST_MS), LAST_MS)
        assert verdict.signs
    _, full, _ = await request(store, transfer(1, 99), utc_day(LAST_MS), LAST_MS)
    assert full.outcome == "deny"  # day D is exactly at its limit: one more yocto is too much
    assert await store.wallet_spent(DAY_D) == LIMIT

    _, verdict, spent = await request(store, transfer(parse_near("0.1"), 100), utc_day(MIDNIGHT), MIDNIGHT)
    assert verdict.signs and spent == DaySpend()
    assert await store.wallet_spent(DAY_NEXT) == parse_near("0.1")
    assert await store.wallet_spent(DAY_D) == LIMIT


async def test_request_approved_after_midnight_counts_on_the_new_day(store: Store) -> None:
    pending = transfer(parse_near("0.6"))
    request_id, verdict, _ = await request(store, pending, utc_day(LAST_MS), LAST_MS)
    assert verdict.outcome == "needs_approval"
    for nonce in range(1, 11):  # day D fills up while the owner decides
        assert (await request(store, transfer(parse_near("0.1"), nonce), utc_day(LAST_MS), LAST_MS))[1].signs
    cleared = await store.wallet_clear_approved(
        request_id, pending.total_value, decider(pending, owner_approved=True), utc_day(MIDNIGHT), MIDNIGHT
    )
    assert cleared is not None and cleared[0].signs and cleared[1] == DaySpend()  # judged against the new day
    row = await store.wallet_request(request_id)
    assert row is not None and row.state == "signing" and row.spend_day == DAY_NEXT
    assert await store.wallet_spent(DAY_NEXT) == parse_near("0.6")
    assert await store.wallet_spent(DAY_D) == LIMIT
