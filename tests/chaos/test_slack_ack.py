"""Slack: an event is acknowledged only once it is stored — checked at the instant of the ack.

The real `clawgate run` talks Socket Mode to the fake Slack (tests/fakes/slack_api.py). At
every ack the fake receives, the test reads the database: the event's message must already
be there. Slack retries an event that was not acknowledged, so the test does what Slack
does — pushes unacknowledged envelopes again — across `kill -9`s and a full data disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.secrets import SecretStore
from tests.chaos.support import wait_ready, wait_until
from tests.e2e.test_crash_recovery import start
from tests.fakes.slack_api import FakeSlack, events_envelope, message_event

CHANNEL = "CSTRANGERS"  # not registered: messages are stored, no agent runs
NOW = int(time.time())  # message times must be recent: [retention] prunes old unregistered chats


def write_config(config_dir: Path, fake: FakeSlack, model_server, image: str) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "config.toml").write_text(
        f"""
assistant_name = "Andy"
main_chat = "slack:CMAIN"
[model]
provider = "anthropic"
name = "fake-model"
base_url = "{model_server.url}"
[sandbox]
image = "{image}"
[vault]
allow_private_upstreams = ["{model_server.host_port}"]
[console]
enabled = false
[slack]
enabled = true
bot_token = "xoxb-test-token"
app_token = "xapp-test-token"
base_url = "{fake.base_url}"
"""
    )
    secrets = SecretStore(config_dir)
    secrets.add("anthropic", "sk-ant-slack-chaos", model_server.host_port, "x-api-key", "{value}")


def stored_ts(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        try:
            rows = conn.execute("SELECT external_id FROM messages WHERE chat_id = ?", (f"slack:{CHANNEL}",))
        except sqlite3.OperationalError:
            return set()
        return {r[0] for r in rows.fetchall()}


class Events:
    """What Slack keeps: every event until it is acknowledged, and what the acks claimed."""

    def __init__(self, fake: FakeSlack, db: Path) -> None:
        self.db = db
        self.pending: dict[str, dict[str, Any]] = {}  # ts → event
        self.envelopes: dict[str, str] = {}  # envelope id → ts
        self.acked: set[str] = set()
        self.acked_unstored: list[str] = []
        self.retries = 0
        fake.on_ack = self.on_ack

    def on_ack(self, ack: dict[str, Any]) -> None:
        ts = self.envelopes.get(str(ack.get("envelope_id")))
        if ts is None:
            return
        if ts not in stored_ts(self.db):
            self.acked_unstored.append(ts)
        self.acked.add(ts)
        self.pending.pop(ts, None)

    async def push(self, fake: FakeSlack, event: dict[str, Any], retry: int = 0) -> None:
        envelope = events_envelope(event, f"Ev{event['ts'].replace('.', '')}", retry_attempt=retry)
        self.envelopes[envelope["envelope_id"]] = event["ts"]
        self.pending[event["ts"]] = event
        await fake.push(envelope)

    async def redeliver(self, fake: FakeSlack) -> None:
        for event in list(self.pending.values()):
            self.retries += 1
            await self.push(fake, event, retry=1)


@pytest.fixture
async def fake():  # type: ignore[no-untyped-def]
    server = FakeSlack()
    await server.start()
    yield server
    await server.stop()


async def test_every_ack_follows_the_commit_across_random_kills(
    fake, dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, fake, model_server, sandbox_image)
    events = Events(fake, data_dir / "clawgate.db")
    rng = random.Random(int(os.environ.get("CLAWGATE_CHAOS_SEED", "7")))
    total = 0
    for _ in range(int(os.environ.get("CLAWGATE_CHAOS_ROUNDS", "5"))):
        gateway = await start(dict(os.environ))
        await wait_ready(gateway)
        await events.redeliver(fake)  # what Slack retries after the connection came back
        for _ in range(rng.randint(30, 70)):
            total += 1
            await events.push(fake, message_event(f"message {total}", f"{NOW}.{total:06d}", CHANNEL))
            await asyncio.sleep(rng.uniform(0, 0.01))
        await asyncio.sleep(rng.uniform(0, 0.3))
        with contextlib.suppress(ProcessLookupError):
            gateway.kill()
        await gateway.wait()
        assert not events.acked_unstored, f"acknowledged before stored: {events.acked_unstored[:5]}"
    gateway = await start(dict(os.environ))
    try:
        await wait_ready(gateway)
        await events.redeliver(fake)
        assert await wait_until(lambda: not events.pending, 120), f"{len(events.pending)} never acknowledged"
    finally:
        gateway.send_signal(signal.SIGTERM)
        await asyncio.wait_for(gateway.wait(), 60)
    assert not events.acked_unstored
    assert len(stored_ts(events.db)) == total


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as the data disk needs root")
async def test_a_full_data_disk_acknowledges_nothing_it_did_not_store(
    fake, dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(data_dir)], check=True)
    try:
        write_config(config_dir, fake, model_server, sandbox_image)
        events = Events(fake, data_dir / "clawgate.db")
        gateway = await start(dict(os.environ))
        try:
            await wait_ready(gateway)
            await events.push(fake, message_event("before", f"{NOW}.000000", CHANNEL))
            assert await wait_until(lambda: not events.pending, 60)
            filler = data_dir / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            for n in range(200):
                await events.push(
                    fake, message_event(f"full {n} " + "x" * 3000, f"{NOW + 1}.{n:06d}", CHANNEL)
                )
            await asyncio.sleep(5)
            assert events.pending, "the disk never filled; the test proves nothing"
            assert not events.acked_unstored, f"acknowledged before stored: {events.acked_unstored[:5]}"
            filler.unlink()
            await events.redeliver(fake)
            assert await wait_until(lambda: not events.pending, 120), (
                "retries not taken in after space came back"
            )
            assert not events.acked_unstored
            assert len(stored_ts(events.db)) == 201
        finally:
            with contextlib.suppress(ProcessLookupError):
                gateway.kill()
            await gateway.wait()
    finally:
        subprocess.run(["umount", "-l", str(data_dir)], check=False)
