"""A hostile group tries to exhaust what all groups share through its IPC socket (issue 11, break 4).

Each attack runs inside the hostile group's real sandbox, through the agent's shell tool, on
every tier: thousands of connections, half-sent 250 KB lines, 100,000 nested brackets and a
request flood on `/run/clawgate/ipc.sock`. The host is checked afterwards, and while the
attack still holds its connections: the main group still gets its answer, and the gateway's
descriptors and memory grew by a bounded amount (resource assertions, never timings).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.app import Gateway
from groups.sandbox.base import SandboxUnavailable
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.security.conftest import HOSTILE, MAIN_CHAT, Attacker, Tier, add_model_key

HALF_LINES = 1500  # each holds 250 KB of a line that never ends
BARE = 1500  # connections that only sit there
PER_PROCESS = 700  # under every tier's nofile limit (bwrap: 1024)
THREADS = 16  # per process: 5 x 17 tasks, well under the sandbox's pids limit

FLOOD = r"""
import json, os, resource, socket, sys, threading, time
half_lines, bare, per_process, threads = map(int, sys.argv[1:5])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
threading.stack_size(256 * 1024)
line = b'{"id": 1, "method": "log", "params": {"level": "info", "message": "' + b"x" * 250_000
jobs = [True] * half_lines + [False] * bare
children = []
for n, start in enumerate(range(0, len(jobs), per_process)):
    if os.fork():
        children.append(n)
        continue
    held, failures = [], []
    def attack(mine):
        for half in mine:
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(0.25)  # past the cap the backlog is full: a connect that waits counts as failed
            try:
                s.connect("/run/clawgate/ipc.sock")
                s.settimeout(2)
                if half:
                    s.sendall(line)
            except OSError:
                failures.append(1)
                s.close()
                continue
            held.append(s)
    # The same connects as one after the other, `threads` at a time: the ones that wait out
    # their 0.25 s on a full backlog wait together, not in a row.
    mine = jobs[start:start + per_process]
    pool = [threading.Thread(target=attack, args=(mine[i::threads],)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    failed = len(failures)
    time.sleep(1)
    kept = refused = 0
    for s in held:  # refused: the gateway answered with one error line and closed
        try:
            data = s.recv(4096, socket.MSG_DONTWAIT)
            refused += 1 if (not data or b"too_many_connections" in data) else 0
        except BlockingIOError:
            kept += 1
        except OSError:
            refused += 1
    with open(f"/tmp/flood-{n}.json", "w") as out:
        json.dump({"kept": kept, "refused": refused, "failed": failed}, out)
    time.sleep(600)  # hold every connection that is still open
    os._exit(0)
deadline = time.time() + 120
while time.time() < deadline and not all(os.path.exists(f"/tmp/flood-{n}.json") for n in children):
    time.sleep(0.1)
totals = {"kept": 0, "refused": 0, "failed": 0, "unfinished": 0}
for n in children:
    try:
        with open(f"/tmp/flood-{n}.json") as f:
            for key, value in json.load(f).items():
                totals[key] += value
    except FileNotFoundError:  # still connecting when time ran out
        totals["unfinished"] += per_process
print("FLOOD " + json.dumps(totals), flush=True)
time.sleep(600)
"""

NESTED_AND_FLOOD = r"""
import json, socket, time
s = socket.socket(socket.AF_UNIX)
s.connect("/run/clawgate/ipc.sock")
f = s.makefile("rwb")
def call(raw):
    f.write(raw)
    f.flush()
    line = f.readline()
    return json.loads(line) if line else None
def code(reply):
    return None if reply is None else reply.get("error", {}).get("code", "ok")
report = {
    "nested": code(call(b"[" * 100000 + b"\n")),
    "nested_params": code(call(b'{"id": 1, "method": "log", "params": ' + b"[" * 100000 + b"\n")),
}
start = time.monotonic()
def spam(i):
    return json.dumps({"id": i, "method": "send_message", "params": {"text": f"spam {i}"}}).encode() + b"\n"
codes = [code(call(spam(i))) for i in range(2000)]
report.update(
    elapsed=time.monotonic() - start,
    ok=codes.count("ok"),
    limited=codes.count("rate_limited"),
    other=sorted(set(codes) - {"ok", "rate_limited"}, key=str),
)
print("REPORT " + json.dumps(report))
"""


def gateway_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def gateway_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def reported(out: str, tag: str) -> dict:
    for line in out.splitlines():
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])
    raise AssertionError(f"the attack script did not report: {out[-2000:]}")


@pytest.fixture
async def gateway(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer
) -> AsyncIterator[Gateway]:
    """The hostile gateway of tests/security/conftest.py, with half-sent lines kept for the whole test.

    `line_timeout_s` is raised so that what holds the attack back is the connection cap, not
    the timeout dropping the lines first.
    """
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model_server)
    config = tier.config(model_server, extra="[ipc]\nline_timeout_s = 300\n")
    gw = Gateway(config, config_dir, data_dir)
    channel = CaptureChannel()
    await gw.start([channel])
    await gw.registry.register(HOSTILE)
    gw.test_channel = channel  # type: ignore[attr-defined]
    try:
        yield gw
    finally:
        await gw.stop(grace_s=5)


async def ask_main(gateway: Gateway) -> str:
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
    before = len(channel.sent)
    await gateway.ingest(channel.message("@Andy are you still there", chat_id=MAIN_CHAT))
    await channel.wait_until(lambda: any(chat == MAIN_CHAT for chat, _ in channel.sent[before:]), timeout=180)
    return next(text for chat, text in channel.sent[before:] if chat == MAIN_CHAT)


async def test_thousands_of_connections_and_half_sent_lines_from_a_sandbox(
    tier: Tier, gateway: Gateway, model_server: FakeModelServer
) -> None:
    attacker = Attacker(gateway, model_server)
    assert "[exit code 0]" in await attacker.shell("true")  # the hostile sandbox is up
    fds, rss = gateway_fds(), gateway_rss_mb()
    out = await attacker.shell(
        f"cat > /tmp/flood.py <<'EOF'\n{FLOOD}\nEOF\n"
        f"setsid python3 /tmp/flood.py {HALF_LINES} {BARE} {PER_PROCESS} {THREADS} "
        "> /tmp/flood.log 2>&1 < /dev/null &\n"
        "for i in $(seq 1500); do grep -q FLOOD /tmp/flood.log && break; sleep 0.1; done; cat /tmp/flood.log",
        timeout_s=300,
    )
    flood = reported(out, "FLOOD")
    # While the attacker still holds what it got, the main group is answered...
    reply = await ask_main(gateway)
    assert reply.startswith("echo: ") and "still there" in reply, reply
    # ... and the gateway paid a bounded price (before the fix: +3,000 descriptors, +375 MB).
    assert gateway_fds() - fds < 300, (fds, gateway_fds(), flood)
    assert gateway_rss_mb() - rss < 150, (rss, gateway_rss_mb(), flood)
    cap = gateway.config.ipc.max_connections
    # The attack happened at scale (connects that timed out on a full backlog count as failed)...
    assert flood["kept"] + flood["refused"] + flood["failed"] >= 1000, flood
    assert flood["kept"] < cap, flood  # ... and kept no more than the cap (the agent holds one slot)
    assert gateway.pool.live[HOSTILE.folder].ipc.connections <= cap


async def test_nested_json_and_a_request_flood_from_a_sandbox(
    tier: Tier, gateway: Gateway, model_server: FakeModelServer
) -> None:
    attacker = Attacker(gateway, model_server)
    out = await attacker.shell(f"python3 - <<'EOF'\n{NESTED_AND_FLOOD}\nEOF", timeout_s=300)
    report = reported(out, "REPORT")
    # 100,000 nested brackets: a clear refusal on a connection that keeps serving, no traceback.
    assert report["nested"] == "too_deep" and report["nested_params"] == "too_deep", report
    # The flood: the burst, then the rate, then `rate_limited` answers; nothing else went wrong.
    limits = gateway.config.ipc
    allowed = limits.requests_burst + limits.requests_per_s * report["elapsed"] + 5
    assert 0 < report["ok"] <= allowed and report["limited"] > 0 and report["other"] == [], report
    reply = await ask_main(gateway)
    assert reply.startswith("echo: "), reply
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]

    def spam() -> int:
        return sum(chat == HOSTILE.chat_id and text.startswith("spam ") for chat, text in channel.sent)

    await channel.wait_until(lambda: spam() >= report["ok"], timeout=60)
    assert spam() == report["ok"], (spam(), report)  # each accepted request acted exactly once


@pytest.mark.parametrize("tier", ["docker"], indirect=True)
async def test_descriptor_exhaustion_is_named_not_blamed_on_the_vault(tier: Tier, gateway: Gateway) -> None:
    """Out of descriptors, a sandbox start says so (the vault is fine), and works once they are back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held: list[int] = []
    resource.setrlimit(resource.RLIMIT_NOFILE, (gateway_fds() + 64, hard))
    try:
        with contextlib.suppress(OSError):
            while True:
                held.append(os.open(os.devnull, os.O_RDONLY))
        with pytest.raises(SandboxUnavailable) as err:
            await gateway.pool.ensure(HOSTILE)
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert "out of file descriptors" in str(err.value), err.value
    assert "vault" not in str(err.value), err.value
    assert await gateway.vault.healthy()
    live = await gateway.pool.ensure(HOSTILE)
    assert not live.sandbox.exited.done()
