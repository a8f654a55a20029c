"""Attacks on the vault's availability from inside a hostile group's sandbox, on every tier.

- A connection flood through the sandbox's proxy port (each connection becomes one on the
  group's vault.sock): beyond the group's cap the vault answers 503 at once, and the main
  group's model call — through its own vault.sock — is still served.
- A 4 GiB upload: refused with 413 while the body is still being sent, nothing reaches the
  upstream, and the vault's memory (VmRSS read on the host) stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.sandboxes import PROXY_PORT
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.fakes.shared_front import SharedFront
from tests.security.conftest import HOSTILE, MAIN_CHAT, Attacker, Tier, wait_until
from tests.security.vault_support import gateway_with_front

CAP = 16
FLOOD_SIZE = 80  # the in-sandbox proxy uses two threads per connection: stay under pids_limit

# Waits for the host test to drop `flood.go` into the group folder (so the hostile agent has
# reported its tool call back before its own connections run out), holds its connections until
# `flood.stop` appears.
FLOOD = f"""
import os, select, socket, time
for _ in range(600):
    if os.path.exists("flood.go"):
        break
    time.sleep(0.2)
held, busy, failed = [], 0, 0
for _ in range({FLOOD_SIZE}):
    try:
        held.append(socket.create_connection(("127.0.0.1", {PROXY_PORT}), timeout=5))
    except OSError:
        failed += 1
pending, deadline = set(held), time.time() + 60
while len(pending) > {CAP} and time.time() < deadline:  # the cap's worth stay open and silent
    for s in select.select(list(pending), [], [], 1)[0]:
        try:
            busy += s.recv(64).startswith(b"HTTP/1.1 503")
        except OSError:
            pass
        pending.discard(s)
with open("flood.log", "w") as f:
    f.write(f"busy {{busy}} failed {{failed}} open {{len(pending)}}\\n")
open("flood.ready", "w").close()
for _ in range(600):
    if os.path.exists("flood.stop"):
        break
    time.sleep(0.2)
"""

UPLOAD = f"""
import select, socket
s = socket.create_connection(("127.0.0.1", {PROXY_PORT}))
s.sendall(b"POST http://127.0.0.1:{{port}}/upload HTTP/1.1\\r\\nHost: 127.0.0.1:{{port}}\\r\\n"
          b"Content-Length: 4294967296\\r\\n\\r\\n")
sent, reply, chunk = 0, b"", b"\\0" * (1 << 20)
while sent < (256 << 20) and b"\\r\\n\\r\\n" not in reply:
    r, w, _ = select.select([s], [s], [], 30)
    if r:
        data = s.recv(65536)
        if not data:
            break
        reply += data
    elif w:
        sent += s.send(chunk)
    else:
        break
print("sent_mib", sent >> 20, "reply", reply.split(b"\\r\\n")[0].decode(), flush=True)
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture
def front() -> Iterator[SharedFront]:
    server = SharedFront()
    yield server
    server.close()


async def test_vault_connection_flood_from_a_sandbox_leaves_the_main_chat_served(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer, front: SharedFront
) -> None:
    vault = f"max_connections_per_group = {CAP}"
    # idle = 600: the sandbox must outlive the flood, which runs between agent turns
    async with gateway_with_front(tier, dirs, model_server, [front], vault=vault, idle=600) as gateway:
        attacker = Attacker(gateway, model_server)
        folder = gateway.data_dir / "groups" / HOSTILE.folder
        await attacker.shell(
            f"cat > flood.py <<'EOF'\n{FLOOD}\nEOF\nsetsid python3 flood.py > flood.out 2>&1 & sleep 1"
        )
        (folder / "flood.go").write_text("")
        await wait_until(lambda: (folder / "flood.ready").exists(), timeout=180)
        try:
            # While the hostile group holds its cap (and is refused the rest), the main chat's
            # model call goes through its own vault.sock.
            channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
            before = len(channel.sent)
            await gateway.ingest(channel.message("are you there?", chat_id=MAIN_CHAT))
            replies = await channel.wait_for(before + 1, timeout=120)
            assert any(chat == MAIN_CHAT and "are you there" in text for chat, text in replies[before:]), (
                replies
            )
        finally:
            (folder / "flood.stop").write_text("")
        log = (folder / "flood.log").read_text()
    counts = dict(zip(log.split()[::2], map(int, log.split()[1::2]), strict=True))
    # At most the cap's worth of the flood was let through; the rest was turned away at once
    # (503, or closed while the vault's accept queue was full), none left waiting.
    assert counts["open"] <= CAP, log
    assert counts["busy"] >= FLOOD_SIZE - CAP - 4, log


async def test_huge_upload_from_a_sandbox_is_refused_early_and_the_vault_stays_small(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer, front: SharedFront
) -> None:
    async with gateway_with_front(tier, dirs, model_server, [front]) as gateway:
        pid = gateway.vault.pid
        assert pid is not None
        attacker = Attacker(gateway, model_server)
        await attacker.shell("true")  # the sandbox is up before measuring
        before = rss_kib(pid)
        script = UPLOAD.replace("{port}", str(front.port))
        out = await attacker.shell(f"cat > up.py <<'EOF'\n{script}\nEOF\npython3 up.py")
        after = rss_kib(pid)
    assert "reply HTTP/1.1 413" in out, out
    sent_mib = int(out.split("sent_mib", 1)[1].split()[0])
    assert sent_mib < 256, out  # answered while the body was still being sent
    assert front.requests == []
    assert after - before < 200 * 1024, (before, after)
