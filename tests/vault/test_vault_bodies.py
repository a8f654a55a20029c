"""The streaming body guard (proxy/bodies.py) with the real leak scanner, and the [vault] limits."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from mitmproxy.test import tflow

from core.config import ConfigError, parse
from proxy.bodies import MIN_OVERLAP, StreamGuard
from proxy.leaks import LeakScanner

SECRET = "gitsrv-REAL-token-6c1e0b9f-split"
ANTHROPIC = "sk-ant-api03-" + "Q" * 40


def feed(guard: StreamGuard, body: bytes, cuts: list[int]) -> bytes:
    """Send `body` in chunks cut at `cuts`, then the end marker; returns what was forwarded."""
    out = b""
    start = 0
    for cut in [*cuts, len(body)]:
        for piece in guard(body[start:cut]) if cut > start else []:
            out += piece
        start = cut
    for piece in guard(b""):
        out += piece
    return out


def guard_for(limit: int = 1 << 30) -> tuple[StreamGuard, list[tuple[str, str]]]:
    hits: list[tuple[str, str]] = []
    scanner = LeakScanner([("gitsrv", SECRET)])
    return StreamGuard(tflow.tflow(), limit, scanner, lambda f, kind, d: hits.append((kind, d))), hits


def test_clean_body_passes_unchanged_whatever_the_chunking() -> None:
    body = bytes(range(256)) * 400  # ~100 KB, no credential format in it
    for cuts in ([], [1], [5000, 5001, 70000], list(range(0, len(body), 777))):
        guard, hits = guard_for()
        assert feed(guard, body, cuts) == body
        assert hits == []


@pytest.mark.parametrize(
    "secret",
    [SECRET.encode(), quote(SECRET, safe="").encode(), ANTHROPIC.encode()],
    ids=["raw", "url", "format"],
)
def test_secret_split_across_chunks_is_caught_at_every_split_point(secret: bytes) -> None:
    body = b"." * (3 * MIN_OVERLAP) + secret + b"." * 100
    at = 3 * MIN_OVERLAP
    for offset in range(1, len(secret)):
        guard, hits = guard_for()
        forwarded = feed(guard, body, [at + offset])
        assert [k for k, _ in hits] == ["leak"], offset
        assert secret[:8] not in forwarded  # not even its beginning left before the whole was seen


def test_secret_in_three_chunks_and_tiny_chunks() -> None:
    body = b"x=" + SECRET.encode() + b"&y=1"
    guard, hits = guard_for()
    forwarded = feed(guard, body, list(range(1, len(body))))  # one byte at a time
    assert hits and hits[0][0] == "leak" and SECRET.encode()[:8] not in forwarded


def test_size_cap_counts_streamed_bytes() -> None:
    guard, hits = guard_for(limit=10_000)
    forwarded = feed(guard, b"a" * 25_000, [4000, 8000, 12000, 16000])
    assert hits == [("size", "request body exceeds [vault] max_request_bytes = 10000")]
    assert len(forwarded) < 10_000
    assert guard(b"more") == []  # nothing after the cut


def test_max_request_bytes_has_a_positive_default_and_zero_is_refused() -> None:
    cfg = parse("", Path("t.toml"))
    assert cfg.vault.max_request_bytes == 32 * 1024 * 1024
    assert cfg.vault.max_connections_per_group == 64
    with pytest.raises(ConfigError, match="max_request_bytes.*no longer means unlimited"):
        parse("[vault]\nmax_request_bytes = 0\n", Path("t.toml"))


def test_vault_idle_timeout_must_outlast_a_model_call() -> None:
    with pytest.raises(ConfigError, match="idle_timeout_s"):
        parse("[model]\ntimeout_s = 600\n[vault]\nidle_timeout_s = 300\n", Path("t.toml"))
