"""`make bench`: clawgate's hot paths next to baselines measured in the same run; prints one JSON object.

- warm: message ingested -> the group's (already running) agent acknowledges it, over
  >= 200 messages, next to a bare JSON-lines round trip on a unix socket.
- cold: message ingested -> agent ready in a brand-new container, next to a bare
  `docker run --rm --entrypoint true <image>`.
- runsc cold: the same bare `docker run` under gVisor (`--runtime runsc`), measured in
  alternating rounds with the runc one so both see the same machine load.
- bwrap cold: the same cold path with the bubblewrap backend.
- ingest: messages persisted per second across 100 groups with the store's durable
  setting (`synchronous=FULL`, reported as `ingest_synchronous`), next to a raw sqlite3
  single-transaction insert of the same rows.
- mount cases: generated mount requests checked against the allowlist (invariant 3).
- disk walk: one disk-quota measurement of a 20,000-entry group folder (`groups.groupfs.usage`),
  next to a plain `os.walk` + `lstat` of the same tree (see benchmarks/disk_walk.py).
- audit page: one page of a full-size vault audit log for the dashboard's Vault page (read
  backwards in blocks), time and peak memory, next to `clawgate vault log`'s whole-log read
  (see benchmarks/audit_page.py).
- activity: the dashboard's turn and spend charts' queries over 100,000 runs and 100,000
  metered calls, next to fetching the same raw rows (see benchmarks/activity_charts.py).
- load: 100 groups, 10,000 messages, a model with a small delay (see benchmarks/load.py).
- vault: HTTPS requests/s and added latency through the vault, next to a bare mitmdump and
  direct to the upstream, in rounds that alternate the subjects (medians and per-round
  figures); `vault_metering_rps`: streamed model calls with metering on, next to the same
  stream on an unmetered path (`vault_stream_rps`) and `vault_rps`; `vault_metering_json_rps`:
  non-streamed model calls metered, next to `vault_rps` and the same call unmetered
  (`vault_json_rps`) (see benchmarks/vault.py).
- held request: the owner's Approve click -> a request the vault held for approval arriving at
  the upstream with its credential (`held_request_forward_ms`), next to the same request
  without a hold (see benchmarks/held_request.py).
- IPC flood: the main group's message latency while another group holds its maximum IPC
  connections and churns more, next to rounds without the flood (see benchmarks/ipc_flood.py).
- fuzz: executions (and crashes, which must be 0) of the CI-bounded fuzz run of the
  hostile-input parsers (see benchmarks/fuzz.py, tests/fuzz).
- agent runtimes: message in -> reply out minus the model server's own time, builtin vs
  claude (warm), and the claude runtime's cold start (see benchmarks/agent_runtimes.py).
- kill rounds: random `kill -9`s of the real gateway polling the fake Bot API; messages
  acknowledged but not stored (`kill_rounds_lost`) and stored or answered twice
  (`kill_rounds_duplicated`), both must be 0 (see benchmarks/kill_rounds.py).
Needs Docker and the sandbox image (built if missing). Talks only to loopback.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.activity_charts import run as activity_charts_run  # noqa: E402
from benchmarks.agent_runtimes import run as agent_runtimes_run  # noqa: E402
from benchmarks.audit_page import run as audit_page_run  # noqa: E402
from benchmarks.disk_walk import run as disk_walk_run  # noqa: E402
from benchmarks.fuzz import run as fuzz_run  # noqa: E402
from benchmarks.harness import IMAGE, bench_gateway, ensure_image  # noqa: E402
from benchmarks.held_request import run_async as held_request_run  # noqa: E402
from benchmarks.ipc_flood import run as ipc_flood_run  # noqa: E402
from benchmarks.kill_rounds import run as kill_rounds_run  # noqa: E402
from benchmarks.load import run_load  # noqa: E402
from benchmarks.mount_cases import run as mount_cases_run  # noqa: E402
from benchmarks.vault import run as vault_run  # noqa: E402
from benchmarks.wallet_approve import run_async as wallet_approve_run  # noqa: E402
from benchmarks.wallet_sign import run as wallet_sign_run  # noqa: E402
from core.models import Group, InboundMessage  # noqa: E402
from gateway.faults import POINTS as CRASH_POINTS  # noqa: E402
from gateway.store import Store  # noqa: E402

WARM_MESSAGES = int(os.environ.get("BENCH_WARM_MESSAGES", "300"))
COLD_STARTS = int(os.environ.get("BENCH_COLD_STARTS", "7"))
INGEST_GROUPS = 100
INGEST_PER_GROUP = int(os.environ.get("BENCH_INGEST_PER_GROUP", "200"))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


async def socket_rtt(samples: int) -> list[float]:
    """Baseline: one JSON line to a unix-socket echo server and back, same event loop."""
    path = Path(tempfile.mkdtemp(prefix="cgb")) / "echo.sock"

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()

    server = await asyncio.start_unix_server(echo, path=str(path))
    reader, writer = await asyncio.open_unix_connection(str(path))
    payload = json.dumps({"id": 1, "method": "next_messages", "params": {}}).encode() + b"\n"
    times = []
    for _ in range(samples + 20):
        start = time.perf_counter()
        writer.write(payload)
        await writer.drain()
        await reader.readline()
        times.append(time.perf_counter() - start)
    writer.close()
    server.close()
    return times[20:]


def bare_docker_runs(samples: int) -> tuple[list[float], list[float] | None, str | None]:
    """(runc times, runsc times or None, why runsc was not measured) of a bare `docker run`.

    One round runs each subject once, in alternating order; the first round is a warm-up.
    """
    import docker

    from groups.sandbox.runsc import probe

    client = docker.from_env()
    try:
        problem = probe(client, IMAGE)
    finally:
        client.close()
    times: dict[str, list[float]] = {"runc": []}
    if problem is None:
        times["runsc"] = []
    for round_no in range(samples + 1):
        order = list(times) if round_no % 2 == 0 else list(reversed(times))
        for runtime in order:
            start = time.perf_counter()
            subprocess.run(
                ["docker", "run", "--rm", "--runtime", runtime, "--network", "none"]
                + ["--entrypoint", "true", IMAGE],
                check=True,
                capture_output=True,
            )
            if round_no:
                times[runtime].append(time.perf_counter() - start)
    return times["runc"], times.get("runsc"), problem


async def gateway_latencies() -> tuple[list[float], list[float]]:
    """(warm, cold) message->agent-ready latencies through the real gateway, Docker backend."""
    async with bench_gateway("docker") as bench:
        cold = [await bench.cold(f"cold {i}") for i in range(COLD_STARTS + 1)][1:]
        warm = [await bench.one(f"warm {i}") for i in range(WARM_MESSAGES + 10)][10:]
    return warm, cold


async def bwrap_cold_starts() -> list[float]:
    async with bench_gateway("bwrap") as bench:
        return [await bench.cold(f"cold {i}") for i in range(COLD_STARTS + 1)][1:]


_SYNCHRONOUS = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


async def ingest_throughput() -> tuple[float, float, str]:
    """(clawgate msgs/s, raw sqlite3 msgs/s, the store's `synchronous` setting as measured).

    INGEST_GROUPS x INGEST_PER_GROUP messages through the router and the store's group
    commit, with the durability setting the gateway runs with (read back from the store's
    own connection, not assumed).
    """
    tmp = Path(tempfile.mkdtemp(prefix="cgb"))
    store = await Store.open(tmp / "bench.db")
    async with store._conn.execute("PRAGMA synchronous") as cur:  # the setting the store chose
        (level,) = await cur.fetchone()  # type: ignore[misc]
    synchronous = _SYNCHRONOUS.get(int(level), str(level))
    groups = [Group(f"g{i}", f"tg:{i}", f"g{i}", "@Andy") for i in range(INGEST_GROUPS)]
    for group in groups:
        await store.register_group(group)
    from gateway.router import Router

    by_chat = {g.chat_id: g for g in groups}
    router = Router(store, by_chat.get, lambda folder: None)
    now = time.time()

    async def feed(group: Group) -> None:
        for n in range(INGEST_PER_GROUP):
            await router.ingest(
                InboundMessage(
                    group.chat_id, str(n), "u1", "alice", f"message {n} without trigger", now, "bench"
                )
            )

    start = time.perf_counter()
    await asyncio.gather(*(feed(g) for g in groups))
    elapsed = time.perf_counter() - start
    total = INGEST_GROUPS * INGEST_PER_GROUP
    assert await store.count_messages() == total
    await store.close()

    raw = sqlite3.connect(tmp / "raw.db")
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE m (chat TEXT, ext TEXT, text TEXT, ts REAL, UNIQUE(chat, ext))")
    rows = [(g.chat_id, str(n), f"message {n}", now) for g in groups for n in range(INGEST_PER_GROUP)]
    start = time.perf_counter()
    with raw:
        raw.executemany("INSERT INTO m VALUES (?, ?, ?, ?)", rows)
    raw_elapsed = time.perf_counter() - start
    raw.close()
    return total / elapsed, total / raw_elapsed, synchronous


async def main() -> None:
    ensure_image()
    rtt = await socket_rtt(WARM_MESSAGES)
    docker_run, runsc_run, runsc_problem = bare_docker_runs(COLD_STARTS)
    warm, cold = await gateway_latencies()
    ipc_flood = await ipc_flood_run()  # another group's latency under an IPC connection flood
    bwrap_cold = await bwrap_cold_starts()
    ingest, raw_ingest, synchronous = await ingest_throughput()
    mount_cases = await asyncio.to_thread(mount_cases_run)
    disk_walk = await asyncio.to_thread(disk_walk_run)  # the disk-quota measurement vs os.walk
    audit_page = await asyncio.to_thread(audit_page_run)  # a Vault page of the audit log vs the CLI's read
    activity = await asyncio.to_thread(activity_charts_run)  # the dashboard's charts over 100k rows
    load = await run_load("bwrap")
    vault = await vault_run()  # HTTPS via the vault vs bare mitmdump vs direct (benchmarks/vault.py)
    near_sign = await asyncio.to_thread(wallet_sign_run)  # analyze + policy + sign vs bare ed25519
    approve = await wallet_approve_run()  # Approve click -> signed tx at the NEAR RPC vs bare send_tx
    held = await held_request_run()  # Approve click -> held HTTP request at the upstream vs no hold
    fuzz = await asyncio.to_thread(fuzz_run)  # the CI-bounded fuzz run: executions, crashes (tests/fuzz)
    kills = await kill_rounds_run()  # random kill -9s of the real gateway: lost / duplicated (both 0)
    runtimes = await agent_runtimes_run()  # builtin vs claude: turn overhead, claude cold start
    result = {
        "warm_p50_ms": ms(pct(warm, 0.5)),
        "warm_p99_ms": ms(pct(warm, 0.99)),
        "warm_samples": len(warm),
        "socket_rtt_p50_ms": ms(pct(rtt, 0.5)),
        "socket_rtt_p99_ms": ms(pct(rtt, 0.99)),
        "cold_start_p50_ms": ms(pct(cold, 0.5)),
        "bwrap_cold_start_p50_ms": ms(pct(bwrap_cold, 0.5)),
        "cold_start_samples": len(cold),
        "docker_run_p50_ms": ms(pct(docker_run, 0.5)),
        "cold_vs_docker_run": round(statistics.median(cold) / statistics.median(docker_run), 3),
        "runsc_cold_start_p50_ms": ms(pct(runsc_run, 0.5)) if runsc_run else None,
        "runsc_vs_docker_run": (
            round(statistics.median(runsc_run) / statistics.median(docker_run), 3) if runsc_run else None
        ),
        **({"runsc_unusable": runsc_problem} if runsc_problem else {}),
        "ingest_msgs_per_s": round(ingest),
        "ingest_synchronous": synchronous,
        "ingest_groups": INGEST_GROUPS,
        "raw_sqlite_msgs_per_s": round(raw_ingest),
        "mount_cases_checked": mount_cases,
        **disk_walk,
        **audit_page,
        **activity,
        **ipc_flood,
        **load,
        **vault,
        **near_sign,
        **approve,
        **held,
        **fuzz,
        **kills,
        **runtimes,
        "crash_kill_points": len(CRASH_POINTS),
        "targets": {
            "warm_p50_ms": 10,
            "cold_vs_docker_run": 1.5,
            "runsc_vs_docker_run": 3,
            "ingest_msgs_per_s": 5000,
            "bwrap_cold_start_p50_ms": 100,
            "vault_vs_mitmdump_rps": 0.9,
            "vault_metering_vs_stream_rps": 0.9,
            "vault_metering_json_vs_json_rps": 0.9,
            "near_sign_per_s": 5000,
            "ipc_conn_flood_other_group_p99_ms": 200,
            "fuzz_crashes": 0,
            "kill_rounds_lost": 0,
            "kill_rounds_duplicated": 0,
        },
    }
    print(json.dumps(result))


if __name__ == "__main__":
    asyncio.run(main())
