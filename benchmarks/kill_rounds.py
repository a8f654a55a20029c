"""Random `kill -9`s of the real gateway: how many messages were lost, how many doubled.

The real `clawgate run` polls the fake Bot API (tests/fakes/telegram_api.py) with real
Docker sandboxes and the real vault. Each round streams messages into two chats — one
nobody registered (stored only) and the owner's main chat (every message answered by
the fake model, which echoes it) — and kills the gateway at a random moment. A last,
undisturbed run takes in what is left. Then:

- lost: an update Telegram was told had been received (a getUpdates offset above it)
  that is not in the database;
- duplicated: a message stored twice, plus every extra `sendMessage` answering the
  same inbound message (the echo names the message it answers).

Both must be 0. `BENCH_KILL_ROUNDS` (default 10) and `BENCH_KILL_SEED` change the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.harness import IMAGE  # noqa: E402
from tests.chaos.support import wait_ready, wait_until  # noqa: E402
from tests.chaos.test_telegram_ack import (  # noqa: E402
    OWNER_CHAT,
    STRANGERS,
    external_id,
    write_config,
)
from tests.e2e.test_crash_recovery import start  # noqa: E402
from tests.fakes.model_server import FakeModelServer  # noqa: E402
from tests.fakes.telegram_api import FakeBotApi  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_KILL_ROUNDS", "10"))
SEED = int(os.environ.get("BENCH_KILL_SEED", "12"))
SETTLE_S = 180.0  # the last run's bound for taking in and answering what is left
_TOKEN = re.compile(r"ask-\d+")


def _stored(db: Path) -> list[tuple[str, str]]:
    with contextlib.closing(sqlite3.connect(db, timeout=10)) as conn:
        rows = conn.execute("SELECT chat_id, external_id FROM messages WHERE is_from_bot = 0")
        return [(str(c), str(e)) for c, e in rows.fetchall()]


def _lost(api: FakeBotApi, db: Path) -> int:
    """Updates below an acknowledged getUpdates offset whose message is not in the database."""
    with api.lock:
        confirmed = {external_id(u) for u in api.updates if u["update_id"] in api.confirmed_ids}
    return len(confirmed - {e for _, e in _stored(db)}) if db.exists() else len(confirmed)


def _answered(api: FakeBotApi) -> Counter[str]:
    """Inbound message token → replies that answered it.

    One turn answers a batch; the fake model echoes the end of its prompt, whose last
    message is the newest of the batch, so a reply is attributed to the last token it
    names. A batch answered twice shows up as that token counted twice.
    """
    with api.lock:
        texts = [str(m.get("text", "")) for m in api.sent if m["chat"]["id"] == OWNER_CHAT]
    counts: Counter[str] = Counter()
    for text in texts:
        if text.startswith("echo:") and (tokens := _TOKEN.findall(text)):
            counts[tokens[-1]] += 1
    return counts


async def run() -> dict[str, object]:
    rng = random.Random(SEED)
    tmp = Path(tempfile.mkdtemp(prefix="cgk"))
    config_dir, data_dir = tmp / "config", tmp / "data"
    config_dir.mkdir()
    env = {**os.environ, "CLAWGATE_CONFIG_DIR": str(config_dir), "CLAWGATE_DATA_DIR": str(data_dir)}
    db = data_dir / "clawgate.db"
    api = FakeBotApi().start()
    lost_max = 0
    sent = asked = kills = 0
    started = time.perf_counter()
    try:
        with FakeModelServer() as model:
            write_config(config_dir, api, model, IMAGE)
            for _ in range(ROUNDS):
                gateway = await start(env)
                await wait_ready(gateway)
                for _ in range(rng.randint(20, 60)):  # a stream; the kill lands somewhere in it
                    if rng.random() < 0.2:
                        api.push_message(OWNER_CHAT, f"ask-{asked}", chat_type="private")
                        asked += 1
                    else:
                        api.push_message(STRANGERS, f"message {sent}")
                    sent += 1
                    await asyncio.sleep(rng.uniform(0, 0.02))
                await asyncio.sleep(rng.uniform(0, 1.5))
                with contextlib.suppress(ProcessLookupError):
                    gateway.kill()
                await gateway.wait()
                kills += 1
                lost_max = max(lost_max, _lost(api, db))
            gateway = await start(env)  # undisturbed: takes in and answers the rest
            try:
                await wait_ready(gateway)
                last = f"ask-{asked - 1}"  # the owner's last message: answered last
                await wait_until(
                    lambda: len(set(_stored(db))) >= sent and (not asked or last in _answered(api)),
                    SETTLE_S,
                )
                await asyncio.sleep(2)  # a late duplicate would show up now
            finally:
                gateway.send_signal(signal.SIGTERM)
                await asyncio.wait_for(gateway.wait(), 90)
        stored = _stored(db)
        answered = _answered(api)
        lost = max(lost_max, _lost(api, db))
        stored_twice = len(stored) - len(set(stored))
        replied_twice = sum(n - 1 for n in answered.values() if n > 1)
        return {
            "kill_rounds": kills,
            "kill_rounds_messages": sent,
            "kill_rounds_lost": lost,
            "kill_rounds_duplicated": stored_twice + replied_twice,
            "kill_rounds_never_stored": sent - len(set(stored)),
            "kill_rounds_replies": sum(answered.values()),
            "kill_rounds_seconds": round(time.perf_counter() - started, 1),
        }
    finally:
        api.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(asyncio.run(run())))
