"""Held HTTP/2 requests without content-length, through the real vault process (invariant 14).

curl, httpx and Go send a bodyless GET or DELETE over HTTP/2 as one HEADERS frame with
END_STREAM and no content-length. Such a request is whole when its headers arrive, so the vault
holds it like an HTTP/1.1 GET (proxy/stream_watch.py `ended_without_body`) instead of the 413
it used to answer. A body still coming without a declared size stays 413 — and the attacker who
sends one, hoping mitmproxy switches it to streaming (past 1 MiB) and so past the hold, gets
nothing to the upstream. Client, upstream and gateway stand-in are those of
tests/vault/test_vault_holds_h2_e2e.py (a real h2 client through the vault's TLS interception).
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import h2.exceptions
import pytest

from tests.vault.test_vault_holds_h2_e2e import (  # noqa: F401 - env and setup are fixtures
    SECRET,
    H2Client,
    connect,
    env,
    setup,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")


def seen(up: Any, path: str) -> list[dict[str, str]]:
    return [r for r in up.requests if r["path"] == path]


async def send_body(client: H2Client, sid: int, total: int, *, timeout: float = 20) -> int:
    """Send `total` body bytes in DATA frames as flow control allows, then END_STREAM.

    Returns the bytes sent: fewer when the vault ended or reset the stream first.
    """
    sent, deadline = 0, time.monotonic() + timeout
    try:
        while sent < total:
            window = min(client.conn.local_flow_control_window(sid), client.conn.max_outbound_frame_size)
            if window <= 0 or client.answers[sid].done():
                if client.answers[sid].done():
                    return sent
                assert time.monotonic() < deadline, f"no flow-control window after {sent} bytes"
                await asyncio.sleep(0.01)
                continue
            n = min(window, total - sent)
            client.conn.send_data(sid, b"A" * n)
            sent += n
            await client.flush()
        client.conn.end_stream(sid)
        await client.flush()
    except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
        pass  # the vault answered (413) or reset the stream while the body was still coming
    return sent


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_bodyless_request_without_content_length_is_held_and_approved_once(
    setup: Any,  # noqa: F811 - the imported fixture
    env: dict[str, Path],  # noqa: F811
    method: str,
) -> None:
    up, gw, _ = setup
    path = f"/admin/{method.lower()}-approved"
    client = await connect(setup, env)
    try:
        sid = await client.send(method, path)  # HEADERS + END_STREAM, no content-length (curl, Go)
        question, answer_to, _ = await gw.next()
        assert (question["method"], question["path"], question["body"]) == (method, path, "")
        assert seen(up, path) == []  # held: nothing went ahead of the owner's decision
        await gw.answer(answer_to, {"ok": True, "decision": "approved", "by": "tg:4242"})
        assert await client.answer(sid) == (200, b"done")
    finally:
        client.close()
    assert [r["x-token"] for r in seen(up, path)] == [SECRET]  # once, with the credential


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_bodyless_request_without_content_length_denied_forwards_nothing(
    setup: Any,  # noqa: F811 - the imported fixture
    env: dict[str, Path],  # noqa: F811
    method: str,
) -> None:
    up, gw, _ = setup
    path = f"/admin/{method.lower()}-denied"
    client = await connect(setup, env)
    try:
        sid = await client.send(method, path)
        question, answer_to, _ = await gw.next()
        assert question["method"] == method
        await gw.answer(answer_to, {"ok": True, "decision": "denied", "by": "tg:4242"})
        status, body = await client.answer(sid)
    finally:
        client.close()
    assert status == 403 and json.loads(body)["error"] == "approval_required", body
    assert "the owner denied it" in json.loads(body)["message"]
    assert seen(up, path) == []


async def test_attacker_body_past_a_mebibyte_without_content_length_reaches_nothing(
    setup: Any,  # noqa: F811 - the imported fixture
    env: dict[str, Path],  # noqa: F811
) -> None:
    """HEADERS without END_STREAM or content-length, then 1.5 MiB of DATA on a held path.

    Buffered, such a body would be switched to streaming by mitmproxy past 1 MiB — headers and
    body to the upstream before any hold. The vault must refuse it instead: 413 (or a reset),
    no question to the owner, nothing at the upstream.
    """
    up, gw, _ = setup
    path = "/admin/upload-streamed"
    client = await connect(setup, env)
    try:
        sid = await client.send("POST", path, end_stream=False)
        await client.flush()
        await send_body(client, sid, 3 * (1 << 19))
        status, body = await client.answer(sid, timeout=30)
    finally:
        client.close()
    assert status in (0, 413), (status, body[:300])  # 0: the stream was reset before an answer
    if status == 413:
        assert b"Content-Length" in body and b"held" in body, body  # says how to get held instead
    assert seen(up, path) == []
    assert gw.questions.empty()


async def test_attacker_ends_the_stream_with_an_empty_data_frame_still_nothing_before_the_owner(
    setup: Any,  # noqa: F811 - the imported fixture
    env: dict[str, Path],  # noqa: F811
) -> None:
    """HEADERS without END_STREAM, then an empty DATA frame carrying it, in one write.

    The client ended the stream before any body byte, so it is held; but mitmproxy saw headers
    that did not end the stream, and streams such a request if anyone asks it to (the vault's
    body gate does for a body of unknown size) — straight to the upstream, ahead of the hold.
    """
    up, gw, _ = setup
    path = "/admin/empty-data-frame"
    client = await connect(setup, env)
    try:
        sid = await client.send("DELETE", path, end_stream=False)
        client.conn.send_data(sid, b"", end_stream=True)
        await client.flush()
        question, answer_to, _ = await gw.next()
        assert (question["method"], question["path"]) == ("DELETE", path)
        assert seen(up, path) == []  # held, and not a byte of it upstream
        await gw.answer(answer_to, {"ok": True, "decision": "denied", "by": "tg:4242"})
        status, _body = await client.answer(sid)
    finally:
        client.close()
    assert status == 403
    assert seen(up, path) == []


async def test_a_body_without_content_length_in_the_same_write_is_still_refused(
    setup: Any,  # noqa: F811 - the imported fixture
    env: dict[str, Path],  # noqa: F811
) -> None:
    """Ended, but with a body byte: not "ended with its headers", so 413 as the README says."""
    up, gw, _ = setup
    path = "/admin/small-undeclared"
    client = await connect(setup, env)
    try:
        sid = await client.send("POST", path, end_stream=False)
        client.conn.send_data(sid, b"{}", end_stream=True)
        await client.flush()
        status, body = await client.answer(sid)
    finally:
        client.close()
    assert status == 413 and b"Content-Length: 0" in body, (status, body[:300])
    assert seen(up, path) == []
    assert gw.questions.empty()
