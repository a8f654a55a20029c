"""Telegram: an update is acknowledged (the next getUpdates offset) only once it is stored.

The real `clawgate run` polls the fake Bot API (tests/fakes/telegram_api.py), which keeps
Telegram's rule — an offset above an update's id forgets it for good — and calls back at
the exact moment an offset arrives. The attacks on the promise are a `kill -9` at that
moment, random kills, and a data disk that fills up; after each, the database is compared
with what Telegram was told had been received.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from proxy.secrets import SecretStore
from tests.chaos.support import wait_ready, wait_until
from tests.e2e.test_crash_recovery import start
from tests.fakes.telegram_api import TOKEN, FakeBotApi

STRANGERS = -1009999  # not registered: messages are stored, no agent runs
OWNER_CHAT = 4242


def write_config(config_dir: Path, api: FakeBotApi, model_server, image: str) -> None:  # type: ignore[no-untyped-def]
    (config_dir / "config.toml").write_text(
        f"""
assistant_name = "Andy"
main_chat = "tg:{OWNER_CHAT}"
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
[telegram]
enabled = true
token = "{TOKEN}"
base_url = "{api.base_url}"
"""
    )
    SecretStore(config_dir).add(
        "anthropic", "sk-ant-tg-chaos", model_server.host_port, "x-api-key", "{value}"
    )


def stored_ids(db: Path, chat: int = STRANGERS) -> list[str]:
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        try:
            rows = conn.execute("SELECT external_id FROM messages WHERE chat_id = ?", (f"tg:{chat}",))
        except sqlite3.OperationalError:  # created, not yet migrated
            return []
        return [r[0] for r in rows.fetchall()]


def external_id(update: dict) -> str:  # type: ignore[type-arg]
    message = update["message"]
    return f"{message['chat']['id']}:{message['message_id']}"


def confirmed_but_not_stored(api: FakeBotApi, db: Path) -> set[str]:
    with api.lock:
        confirmed = {external_id(u) for u in api.updates if u["update_id"] in api.confirmed_ids}
    return confirmed - set(stored_ids(db))


@pytest.fixture
def api():  # type: ignore[no-untyped-def]
    fake = FakeBotApi().start()
    yield fake
    fake.stop()


async def test_kill_at_the_acknowledge_boundary_loses_nothing(api, dirs, model_server, sandbox_image) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, api, model_server, sandbox_image)
    db = data_dir / "clawgate.db"
    for n in range(300):
        api.push_message(STRANGERS, f"message {n}")
    target: dict[str, int] = {}

    def kill_on_ack(offset: int) -> None:  # runs in the fake's HTTP thread, before it forgets
        pid = target.pop("pid", None)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)

    api.on_confirm = kill_on_ack
    kills = 0
    while api.confirmed_below <= 300 and kills < 10:
        gateway = await start(dict(os.environ))
        target["pid"] = gateway.pid
        await asyncio.wait_for(gateway.wait(), 120)
        assert gateway.returncode == -signal.SIGKILL, "the gateway ended without acknowledging anything"
        kills += 1
        lost = confirmed_but_not_stored(api, db)
        assert not lost, f"kill {kills}: {len(lost)} acknowledged message(s) were never stored"
    assert api.confirmed_below > 300
    ids = stored_ids(db)
    assert len(ids) == 300 and len(set(ids)) == 300


async def test_random_kills_lose_nothing_and_store_nothing_twice(
    api, dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, api, model_server, sandbox_image)
    db = data_dir / "clawgate.db"
    rounds = int(os.environ.get("CLAWGATE_CHAOS_ROUNDS", "10"))
    rng = random.Random(int(os.environ.get("CLAWGATE_CHAOS_SEED", "11")))
    sent = 0
    for _ in range(rounds):
        gateway = await start(dict(os.environ))
        await wait_ready(gateway)
        for _ in range(rng.randint(20, 80)):  # a stream of messages; the kill comes in the middle
            api.push_message(STRANGERS, f"message {sent}")
            sent += 1
            await asyncio.sleep(rng.uniform(0, 0.01))
        await asyncio.sleep(rng.uniform(0, 0.3))
        with contextlib.suppress(ProcessLookupError):
            gateway.kill()
        await gateway.wait()
        lost = confirmed_but_not_stored(api, db)
        assert not lost, f"{len(lost)} acknowledged message(s) were never stored"
    gateway = await start(dict(os.environ))  # a last, undisturbed run takes in the rest
    try:
        assert await wait_until(lambda: len(stored_ids(db)) >= sent, 120)
    finally:
        gateway.send_signal(signal.SIGTERM)
        await asyncio.wait_for(gateway.wait(), 60)
    ids = stored_ids(db)
    assert len(ids) == sent and len(set(ids)) == sent


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs as the data disk needs root")
async def test_a_full_data_disk_acknowledges_nothing_it_did_not_store(
    api, dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = dirs
    data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(data_dir)], check=True)
    try:
        write_config(config_dir, api, model_server, sandbox_image)
        db = data_dir / "clawgate.db"
        gateway = await start(dict(os.environ))
        try:
            await wait_ready(gateway)
            api.push_message(STRANGERS, "before the disk fills")
            assert await wait_until(lambda: len(stored_ids(db)) == 1, 60)
            filler = data_dir / "filler"
            with open(filler, "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            before = len(api.sent)
            for n in range(200):
                api.push_message(STRANGERS, f"while full {n} " + "x" * 3000)
            notices = lambda: [m for m in api.sent[before:] if m["chat"]["id"] == STRANGERS]  # noqa: E731
            assert await wait_until(lambda: notices(), 60), "the sender was not told"
            await asyncio.sleep(3)  # retries happen meanwhile; none may acknowledge
            assert not confirmed_but_not_stored(api, db)
            assert len(stored_ids(db)) < 201, "the disk never filled; the test proves nothing"
            assert len(notices()) == 1, "the sender must be told once, not on every retry"
            filler.unlink()
            assert await wait_until(lambda: len(stored_ids(db)) == 201, 120), (
                "not taken in after space came back"
            )
            assert not confirmed_but_not_stored(api, db)
        finally:
            with contextlib.suppress(ProcessLookupError):
                gateway.kill()
            await gateway.wait()
    finally:
        subprocess.run(["umount", "-l", str(data_dir)], check=False)
