"""proxy/usage_report.py: the spool (0600, torn lines, compaction) and the sender (batches, retries).

A real unix socket stands in for the gateway's control socket; the spool is a real file.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from proxy import usage_report
from proxy.metering import Usage
from proxy.usage_report import SPOOL_FILE, UsageReporter

U = Usage("anthropic", "claude-sonnet-4-5", 10, 20, 30, 40, True)


class Gateway:
    """Acknowledges every report (or refuses, or hangs up, while told to)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.batches: list[list[dict[str, Any]]] = []
        self.mode = "ok"
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            request = json.loads(await reader.readline())
            if self.mode == "hangup":
                writer.close()
                return
            self.batches.append(request["records"])
            reply = {"ok": True, "stored": len(request["records"])} if self.mode == "ok" else {"ok": False}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_unix_server(serve, path=str(self.path), limit=1 << 20)

    @property
    def ids(self) -> list[str]:
        return [r["id"] for batch in self.batches for r in batch]


async def until(condition: Any, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(usage_report, "BACKOFF_INITIAL_S", 0.02)
    monkeypatch.setattr(usage_report, "BACKOFF_MAX_S", 0.05)


async def test_records_are_spooled_sent_in_batches_and_acknowledged(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw.sock")
    await gw.start()
    reporter = UsageReporter(tmp_path, gw.path)
    reporter.start()
    for _ in range(1200):
        reporter.add("team", U)
    await until(lambda: len(gw.ids) >= 1200 and reporter.pending == 0)
    assert len(set(gw.ids)) == 1200 and max(len(b) for b in gw.batches) <= 500
    record = gw.batches[0][0]
    assert record["group"] == "team" and record["input_tokens"] == 10 and record["complete"] is True
    assert record["id"].startswith(reporter.prefix + ":")
    spool = tmp_path / SPOOL_FILE
    assert stat.S_IMODE(spool.stat().st_mode) == 0o600
    await reporter.close()
    # everything was acknowledged: a restart has nothing to resend
    again = UsageReporter(tmp_path, gw.path)
    assert again.load() == 0


async def test_refusals_and_hangups_are_retried_until_acknowledged(tmp_path: Path) -> None:
    gw = Gateway(tmp_path / "gw.sock")
    await gw.start()
    gw.mode = "refuse"
    reporter = UsageReporter(tmp_path, gw.path)
    reporter.start()
    reporter.add("team", U)
    await until(lambda: len(gw.batches) >= 2)  # refused, tried again
    gw.mode = "hangup"
    await asyncio.sleep(0.1)
    assert reporter.pending == 1
    gw.mode = "ok"
    await until(lambda: reporter.pending == 0)
    await reporter.close()


async def test_unacknowledged_records_survive_a_restart_and_a_torn_line(tmp_path: Path) -> None:
    missing = tmp_path / "nobody.sock"  # the gateway is away
    reporter = UsageReporter(tmp_path, missing)
    reporter.start()
    for _ in range(5):
        reporter.add("team", U)
    spool = tmp_path / SPOOL_FILE
    await until(lambda: spool.read_bytes().count(b'"r"') == 5)
    await reporter.close()
    with open(spool, "ab") as f:
        f.write(b'{"r": {"id": "torn')  # a crash in the middle of a write
    gw = Gateway(missing)
    await gw.start()
    again = UsageReporter(tmp_path, missing)
    assert again.load() == 5
    again.start()
    await until(lambda: len(gw.ids) == 5)
    assert {i.split(":")[0] for i in gw.ids} == {reporter.prefix}  # the earlier run's ids, resent
    await again.close()


async def test_the_spool_is_compacted_after_many_acknowledgements(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(usage_report, "COMPACT_AFTER", 50)
    gw = Gateway(tmp_path / "gw.sock")
    await gw.start()
    reporter = UsageReporter(tmp_path, gw.path)
    reporter.start()
    for _ in range(120):
        reporter.add("team", U)
        await asyncio.sleep(0.001)
    await until(lambda: reporter.pending == 0 and len(gw.ids) == 120)
    await reporter.close()
    lines = (tmp_path / SPOOL_FILE).read_bytes().splitlines()
    assert len(lines) < 120  # rewritten with only what was unacknowledged, then appended to
    assert UsageReporter(tmp_path, gw.path).load() == 0


async def test_without_a_gateway_socket_nothing_is_spooled(tmp_path: Path) -> None:
    reporter = UsageReporter(tmp_path, None)
    reporter.start()
    reporter.add("team", U)
    await reporter.close()
    assert not (tmp_path / SPOOL_FILE).exists() and reporter.pending == 0
