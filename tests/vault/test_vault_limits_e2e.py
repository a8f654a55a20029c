"""Availability attacks on the real vault process: connection floods, idle connections, huge and
endless request bodies, a secret split across body chunks. Assertions are functional (who got
served, what the upstream received) and on resources (VmRSS), never on timing."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from proxy.audit import read_entries
from proxy.process import VaultProcess
from proxy.secrets import SecretStore
from tests.fakes.shared_front import SharedFront

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "limits-REAL-token-93ae01c4d2"
CAP = 16
BURST = 300  # connects beyond the cap in one burst: deeper than asyncio's default backlog (100)
MiB = 1 << 20


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("lim")
    d = {k: base / k for k in ("cfg", "state", "flood", "other")}
    for p in d.values():
        p.mkdir(mode=0o700)
    return d


@pytest.fixture(scope="module")
def front() -> Iterator[SharedFront]:
    server = SharedFront(keep_bodies=True)
    yield server
    server.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def vault(front: SharedFront, dirs: dict[str, Path]) -> AsyncIterator[VaultProcess]:
    # max_request_bytes is left at its default (32 MiB): the default must protect the vault.
    (dirs["cfg"] / "config.toml").write_text(
        f"[vault]\nmax_connections_per_group = {CAP}\n"
        '[vault.egress]\nflood = ["127.0.0.1"]\nother = ["127.0.0.1"]\n'
    )
    store = SecretStore(dirs["cfg"])
    store.add("front", TOKEN, f"127.0.0.1:{front.port}", groups=["flood", "other"])
    vp = VaultProcess(dirs["cfg"], dirs["state"], allow_private=[f"127.0.0.1:{front.port}"])
    await vp.start(timeout=30)
    await vp.open_group("flood", dirs["flood"] / "vault.sock")
    await vp.open_group("other", dirs["other"] / "vault.sock")
    yield vp
    await vp.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def request(port: int, path: str = "/ok", method: str = "GET", extra: str = "") -> bytes:
    return (
        f"{method} http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer placeholder\r\n{extra}Connection: close\r\n\r\n"
    ).encode()


async def roundtrip(sock: Path, data: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_connection_flood_from_one_group_leaves_another_group_served(
    vault: VaultProcess, front: SharedFront, dirs
) -> None:
    flood_sock = dirs["flood"] / "vault.sock"
    held = [await asyncio.open_unix_connection(str(flood_sock)) for _ in range(CAP)]
    try:
        await asyncio.sleep(0.5)  # let the relay attach them (no assertion on time)
        # Beyond the cap, every further connection is answered 503 at once and closed:
        # read() returns at EOF, it does not wait for a slot. The burst arrives while the
        # vault is frozen (as a busy event loop would be), so all of it waits in the accept
        # queue: a shallow queue would fail some connects, which asyncio turns into sockets
        # whose first read raises EINVAL, instead of answering them.
        assert vault.pid is not None
        os.kill(vault.pid, signal.SIGSTOP)
        try:
            extra = [await asyncio.open_unix_connection(str(flood_sock)) for _ in range(BURST)]
        finally:
            os.kill(vault.pid, signal.SIGCONT)
        answers = await asyncio.wait_for(asyncio.gather(*(r.read() for r, _ in extra)), 60)
        for _, w in extra:
            w.close()
        assert all(a.startswith(b"HTTP/1.1 503") for a in answers), answers[0]
        assert b"max_connections_per_group" in answers[0]

        # Another group is untouched by the flood.
        front.requests.clear()
        resp = await roundtrip(dirs["other"] / "vault.sock", request(front.port, "/other"))
        assert resp.startswith(b"HTTP/1.1 200"), resp
        assert [(r.target, r.headers["authorization"]) for r in front.requests] == [
            ("/other", f"Bearer {TOKEN}")
        ]
    finally:
        for _, w in held:
            w.close()
    # The flooding group gets its slots back once its connections close.
    for _ in range(100):
        resp = await roundtrip(flood_sock, request(front.port, "/again"))
        if resp.startswith(b"HTTP/1.1 200"):
            break
        await asyncio.sleep(0.1)
    assert resp.startswith(b"HTTP/1.1 200"), resp


def stream_declared_body(sock: Path, port: int, declared: int, budget: int) -> tuple[bytes, int]:
    """Declare `declared` bytes, send up to `budget` while watching for an early answer."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(sock))
    s.sendall(request(port, "/upload", "POST", f"Content-Length: {declared}\r\n"))
    sent, reply, chunk = 0, b"", b"\0" * MiB
    try:
        while sent < budget:
            readable, writable, _ = select.select([s], [s], [], 30)
            if readable:
                data = s.recv(65536)
                if not data:
                    break
                reply += data
                if b"\r\n\r\n" in reply:
                    break
            elif writable:
                sent += s.send(chunk)
            else:
                break
        s.settimeout(30)
        while b"\r\n\r\n" not in reply and (data := s.recv(65536)):
            reply += data
    except OSError:
        pass
    finally:
        s.close()
    return reply, sent


async def test_declared_oversized_body_is_refused_before_it_is_sent_and_rss_stays_bounded(
    vault: VaultProcess, front: SharedFront, dirs
) -> None:
    assert vault.pid is not None
    front.requests.clear()
    before = rss_kib(vault.pid)
    reply, sent = await asyncio.to_thread(
        stream_declared_body, dirs["flood"] / "vault.sock", front.port, 4 << 30, 256 * MiB
    )
    after = rss_kib(vault.pid)
    assert reply.startswith(b"HTTP/1.1 413"), (reply[:300], sent)
    assert b"max_request_bytes" in reply
    assert sent < 256 * MiB  # answered while the body was still coming
    assert front.requests == []  # nothing of it reached the upstream
    assert after - before < 200 * 1024, (before, after)
    found: list[dict] = []
    for _ in range(30):  # audited under the host the client asked for, not the vault's responder
        found = [e for e in read_entries(vault.state_dir) if e.get("path") == "/upload"]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found and (found[-1]["host"], found[-1]["port"], found[-1]["status"]) == (
        "127.0.0.1",
        front.port,
        413,
    )
    assert "max_request_bytes" in found[-1]["refusal"]


def stream_chunked_body(sock: Path, port: int, total: int) -> tuple[bytes, int]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(str(sock))
    sent, reply = 0, b""
    piece = b"\0" * (256 * 1024)
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    try:
        s.sendall(request(port, "/chunked", "POST", "Transfer-Encoding: chunked\r\n"))
        while sent < total:
            s.sendall(frame)
            sent += len(piece)
        s.sendall(b"0\r\n\r\n")
        while data := s.recv(65536):
            reply += data
    except OSError:
        pass
    finally:
        s.close()
    return reply, sent


async def test_endless_chunked_body_is_cut_at_the_limit_and_never_completes_upstream(
    vault: VaultProcess, front: SharedFront, dirs
) -> None:
    assert vault.pid is not None
    front.requests.clear()
    before = rss_kib(vault.pid)
    reply, sent = await asyncio.to_thread(
        stream_chunked_body, dirs["flood"] / "vault.sock", front.port, 48 * MiB
    )
    after = rss_kib(vault.pid)
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:300]
    for _ in range(50):  # the front notices the cut connection
        if front.requests:
            break
        await asyncio.sleep(0.1)
    assert [r.complete for r in front.requests] == [False]
    assert front.requests[0].body_len <= 32 * MiB
    assert after - before < 200 * 1024, (before, after)
    entries = [e for e in read_entries(vault.state_dir) if e.get("path") == "/chunked"]
    for _ in range(30):
        if entries:
            break
        await asyncio.sleep(0.2)
        entries = [e for e in read_entries(vault.state_dir) if e.get("path") == "/chunked"]
    assert entries and "max_request_bytes" in str(entries[-1]["refusal"])


def send_split(sock: Path, port: int, first: bytes, second: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(str(sock))
    reply = b""
    try:
        s.sendall(request(port, "/split", "POST", f"Content-Length: {len(first) + len(second)}\r\n") + first)
        select.select([s], [], [], 1.0)  # a pause so the two halves arrive as separate reads
        s.sendall(second)
        while data := s.recv(65536):
            reply += data
    except OSError:
        pass
    finally:
        s.close()
    return reply


async def test_secret_split_across_streamed_chunks_never_leaves(
    vault: VaultProcess, front: SharedFront, dirs
) -> None:
    front.requests.clear()
    body = b"." * (2 * MiB) + b"token=" + TOKEN.encode() + b"&" + b"." * (2 * MiB)
    cut = 2 * MiB + 6 + len(TOKEN) // 2
    reply = await asyncio.to_thread(
        send_split, dirs["flood"] / "vault.sock", front.port, body[:cut], body[cut:]
    )
    assert not reply.startswith(b"HTTP/1.1 200"), reply[:300]
    for _ in range(50):
        if front.requests:
            break
        await asyncio.sleep(0.1)
    for r in front.requests:  # the headers may have gone ahead (streaming); the secret never did
        assert not r.complete
        assert TOKEN[: len(TOKEN) // 2].encode() not in r.body
    found = []
    for _ in range(30):
        found = [e for e in read_entries(vault.state_dir) if e.get("path") == "/split"]
        if found:
            break
        await asyncio.sleep(0.2)
    assert found and found[-1]["refusal"] == "leak: stored secret front"
    assert TOKEN not in (vault.state_dir / "audit.jsonl").read_text()
    assert TOKEN not in vault.log_path.read_text()


@pytest_asyncio.fixture(loop_scope="module")
async def idle_vault(tmp_path: Path) -> AsyncIterator[tuple[VaultProcess, Path]]:
    for d in ("cfg", "state", "grp"):
        (tmp_path / d).mkdir(mode=0o700)
    (tmp_path / "cfg" / "config.toml").write_text("[model]\ntimeout_s = 0.5\n[vault]\nidle_timeout_s = 1\n")
    vp = VaultProcess(tmp_path / "cfg", tmp_path / "state", allow_private=[])
    await vp.start(timeout=30)
    await vp.open_group("g", tmp_path / "grp" / "vault.sock")
    yield vp, tmp_path / "grp" / "vault.sock"
    await vp.stop()


async def test_idle_connection_is_closed_and_gives_its_slot_back(idle_vault) -> None:
    _, sock = idle_vault
    reader, writer = await asyncio.open_unix_connection(str(sock))
    try:
        # Sends nothing: the vault closes it (EOF) instead of keeping it forever.
        assert await asyncio.wait_for(reader.read(), 60) == b""
    finally:
        writer.close()
