"""Failure classification, backoff, and the outbox's retry/dead-letter path on a real SQLite store."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from core.config import RetryConfig
from gateway.failures import backoff_delay, is_transient, retry_after_s
from gateway.outbox import Outbox
from gateway.store import Store
from tests.fakes.channel import CaptureChannel


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        ("model error: HTTP 529 from upstream (overloaded)", True),
        ("model error: HTTP 429 from upstream", True),
        ("model error: HTTP 503 from upstream", True),
        ("model unreachable: [Errno 111] Connection refused", True),
        ("the assistant did not finish within 900s", True),
        ("the assistant stopped unexpectedly (the sandbox exited (code 137))", True),
        ("model error: HTTP 400 from upstream (invalid_request_error)", False),
        ("model error: HTTP 401 from upstream", False),
        ("refused by policy", False),
        ("model error: bad response (response is not JSON)", True),
        ("model error: HTTP 529 from upstream (overloaded); retry after 30s", True),
        # the vault's budget refusal (proxy/budget.py), even naming a group like "connection-team"
        ("clawgate budget: group connection-team's daily USD budget ($2.00) is used up", False),
    ],
)
def test_classification(error: str, transient: bool) -> None:
    assert is_transient(error) is transient


def test_retry_after_is_read_from_the_error() -> None:
    assert retry_after_s("model error: HTTP 529 from upstream (overloaded); retry after 30s") == 30
    assert retry_after_s("model error: HTTP 503 from upstream") is None


def test_backoff_grows_is_capped_and_jittered() -> None:
    policy = RetryConfig(max_attempts=10, base_delay_s=1, max_delay_s=8)
    rng = random.Random(7)
    delays = [backoff_delay(policy, n, rng) for n in range(1, 8)]
    bounds = [(0.5 * min(8, 2 ** (n - 1)), 1.5 * min(8, 2 ** (n - 1))) for n in range(1, 8)]
    assert all(low <= d <= high for d, (low, high) in zip(delays, bounds, strict=True))
    assert len({round(d, 6) for d in delays}) == len(delays)  # jitter: no two retries in lockstep


async def test_channel_outage_delays_then_delivers_once(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    channel = CaptureChannel()
    channel.fail_sends = True
    outbox = Outbox(store, [channel], RetryConfig(max_attempts=5, base_delay_s=0.05, max_delay_s=0.1))
    await outbox.post(1, 0, "console:main", "the answer")
    assert channel.sent == []
    assert [e.text for e in await store.pending_outbox()] == ["the answer"]  # kept, not lost
    channel.fail_sends = False
    assert await channel.wait_for(1, timeout=5) == [("console:main", "the answer")]
    await asyncio.sleep(0.3)
    assert channel.sent == [("console:main", "the answer")]  # exactly once
    outbox.close()
    await store.close()


async def test_permanent_outage_becomes_one_dead_letter_and_a_notice(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    channel = CaptureChannel(prefix="tg:")
    channel.fail_sends = True
    outbox = Outbox(
        store, [channel], RetryConfig(max_attempts=3, base_delay_s=0.02, max_delay_s=0.05), lambda: "tg:main"
    )
    await outbox.post(1, 0, "tg:-1", "lost?")
    for _ in range(300):  # the reply, then its notice (the channel is down for both)
        if len(await store.dead_letters()) == 2:
            break
        await asyncio.sleep(0.02)
    [(letter, kind, ref, reason), (_, notice_kind, _, _)] = await store.dead_letters()
    assert kind == "reply" and notice_kind == "reply" and "ConnectionError" in reason
    # One notice for the reply's dead letter, none for the notice's own: no notice about a notice.
    notices = [text for text, _ in await store.outbox_for_chat("tg:main")]
    assert len(notices) == 1 and f"/retry {letter}" in notices[0]
    assert await store.pending_outbox() == []
    # The owner's /retry revives it once the channel is back.
    channel.fail_sends = False
    assert await store.revive_reply(int(ref))
    await outbox.flush()
    assert channel.sent == [("tg:-1", "lost?")]
    outbox.close()
    await store.close()


async def test_reply_caught_mid_send_is_dead_lettered_not_resent(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db.sqlite")
    entry = await store.enqueue_reply(3, 0, "console:main", "maybe sent")
    assert entry is not None and await store.claim_outbox(entry)
    await store.mark_outbox_handed(entry)  # then the process "dies"
    channel = CaptureChannel()
    outbox = Outbox(store, [channel])
    assert await outbox.recover() == (0, 1)
    await outbox.flush()
    assert channel.sent == []
    [(_, kind, _, reason)] = await store.dead_letters()
    assert kind == "reply" and "unknown" in reason
    await store.close()
