"""`ipc_conn_flood_other_group_p99_ms`: one group's IPC flood must not slow the others down.

A hostile group holds its maximum number of IPC connections (`[ipc] max_connections`),
each with a half-sent line of nearly `max_line_bytes`, and keeps trying to connect more
as fast as it can (refused at once, and past a rate not even accepted: see
`GroupIpc._accept`). Meanwhile the main group's message latency is measured (message
ingested -> its running agent has it over IPC), as in the warm figure of
benchmarks/run.py. The flooder is a separate process, as a sandbox would be. Rounds with
and without the flood alternate in the same run, so both see the same machine load; the
baseline is the no-flood rounds.

Run alone: `python -m benchmarks.ipc_flood` (needs Docker and the sandbox image).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import BenchGateway, bench_gateway, ensure_image  # noqa: E402
from core.models import Group  # noqa: E402
from groups.folders import group_dirs  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_IPC_FLOOD_ROUNDS", "6"))
PER_ROUND = int(os.environ.get("BENCH_IPC_FLOOD_PER_ROUND", "40"))
FLOODER = Group("flooder", "console:flooder", "flooder", "@Andy", requires_trigger=False)

# The attacker: fill every free slot with a half-sent line, report, then churn new connects.
FLOOD = r"""
import socket, sys, time
path, slots, line_bytes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
half = b'{"id": 1, "method": "log", "params": {"level": "info", "message": "' + b"x" * (line_bytes - 100)
held = []
for _ in range(slots):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(half)
    held.append(s)
print("ready", flush=True)
attempts, start, shown = 0, time.monotonic(), 0.0
while time.monotonic() - start < 600:
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)  # as fast as possible: a full backlog answers EAGAIN at once
    try:
        s.connect(path)
    except OSError:
        pass
    s.close()
    attempts += 1
    if time.monotonic() - shown > 0.5:
        shown = time.monotonic()
        print(f"attempts {attempts} {shown - start:.3f}", flush=True)
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _start_flood(bench: BenchGateway, socket_path: Path) -> asyncio.subprocess.Process:
    limits = bench.gateway.config.ipc
    ipc = bench.gateway.pool.live[FLOODER.folder].ipc
    free = limits.max_connections - ipc.connections
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOD,
        str(socket_path),
        str(free),
        str(limits.max_line_bytes),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    if line.strip() != b"ready":
        raise RuntimeError(f"the flooder did not start: {line!r}")
    for _ in range(3000):  # until the gateway has accepted every slot (30 s at most)
        if ipc.connections >= limits.max_connections:
            return proc
        await asyncio.sleep(0.01)
    proc.kill()
    raise RuntimeError(f"the flooder holds only {ipc.connections} of {limits.max_connections} slots")


async def _stop_flood(proc: asyncio.subprocess.Process) -> float:
    """Stops the flooder; returns the connects per second it attempted."""
    proc.kill()
    out, _ = await proc.communicate()
    rates = [line.split() for line in out.decode().splitlines() if line.startswith("attempts ")]
    if not rates:
        return 0.0
    _, attempts, elapsed = rates[-1]
    return int(attempts) / float(elapsed)


async def run() -> dict[str, Any]:
    flooded: list[float] = []
    baseline: list[float] = []
    churn: list[float] = []
    refused = 0
    flood_s = 0.0
    async with bench_gateway("docker") as bench:
        await bench.gateway.registry.register(FLOODER)
        await bench.gateway.pool.ensure(FLOODER)
        socket_path = group_dirs(bench.gateway.data_dir, FLOODER.folder).run / "ipc.sock"
        for i in range(10):  # the main group's sandbox is warm before anything is measured
            await bench.one(f"warm-up {i}")
        for round_no in range(ROUNDS):
            baseline += [await bench.one(f"base {round_no}.{i}") for i in range(PER_ROUND)]
            proc = await _start_flood(bench, socket_path)
            ipc = bench.gateway.pool.live[FLOODER.folder].ipc
            refused_before, started = ipc.refused_connections, time.perf_counter()
            try:
                flooded += [await bench.one(f"flood {round_no}.{i}") for i in range(PER_ROUND)]
                held = ipc.connections
            finally:
                refused += ipc.refused_connections - refused_before
                flood_s += time.perf_counter() - started
                churn.append(await _stop_flood(proc))
    return {
        "ipc_conn_flood_other_group_p99_ms": round(pct(flooded, 0.99) * 1000, 3),
        "ipc_conn_flood_other_group_p50_ms": round(pct(flooded, 0.5) * 1000, 3),
        "ipc_conn_flood_baseline_p99_ms": round(pct(baseline, 0.99) * 1000, 3),
        "ipc_conn_flood_baseline_p50_ms": round(pct(baseline, 0.5) * 1000, 3),
        "ipc_conn_flood_samples": len(flooded),
        "ipc_conn_flood_held_connections": held,
        "ipc_conn_flood_attempted_connects_per_s": round(sum(churn) / len(churn)),
        "ipc_conn_flood_refused_connects_per_s": round(refused / flood_s),
    }


if __name__ == "__main__":
    ensure_image()
    print(json.dumps(asyncio.run(run())))
