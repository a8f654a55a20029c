"""The built-in agent's caching, usage and memory, end to end: `clawgate run` with the console on a
pipe, the real sandbox container, the real vault, a scripted Anthropic-compatible model on loopback.
The vault's metered account of every call must equal what the model server reported.

What the model server received proves the `cache_control` breakpoints and that the summary rides
along; the database proves the vault metered every call for the group; restarting the gateway (which also
replaces the container) proves the summary is kept with the group's history, and `/compact`
forces a summary at the next turn.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from gateway.store import Store
from proxy.secrets import SecretStore
from proxy.usage_report import UsageReporter
from tests.fakes.model_server import FakeModelServer, Recorded, anthropic_text

ROOT = Path(__file__).resolve().parents[2]
CLAWGATE = str(Path(sys.executable).parent / "clawgate")
EPHEMERAL = {"type": "ephemeral"}
FACT = re.compile(r"fact-[\w-]+")
TURN_USAGE = {
    "input_tokens": 11,
    "output_tokens": 22,
    "cache_read_input_tokens": 333,
    "cache_creation_input_tokens": 44,
}
SUMMARY_USAGE = {"input_tokens": 500, "output_tokens": 55}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


def is_summary_request(body: dict[str, Any]) -> bool:
    return "long-term memory" in _text(body.get("system") or "")


class ScriptedModel:
    """Summaries name the `fact-…` words they were given; everything else gets a padded echo."""

    def __init__(self) -> None:
        self.summaries = 0
        self.server = FakeModelServer(default=self.answer)

    def answer(self, record: Recorded) -> tuple[int, dict[str, Any]]:
        body = record.body
        last = _text(body["messages"][-1]["content"])
        if is_summary_request(body):
            self.summaries += 1
            facts = sorted(set(FACT.findall(last)))
            reply = anthropic_text(f"SUMMARY-{self.summaries} remembers " + " ".join(facts))
            reply["usage"] = SUMMARY_USAGE
            return 200, reply
        words = FACT.findall(last)
        reply = anthropic_text(f"noted {' '.join(words[-1:])} " + "z" * 700)
        reply["usage"] = TURN_USAGE
        return 200, reply

    def turns(self) -> list[dict[str, Any]]:
        return [r.body for r in self.server.requests if not is_summary_request(r.body)]

    def summary_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.server.requests if is_summary_request(r.body)]


def write_config(config_dir: Path, model: FakeModelServer, image: str) -> None:
    (config_dir / "config.toml").write_text(
        f"""
[model]
provider = "anthropic"
name = "fake-model"
base_url = "{model.url}"
[sandbox]
image = "{image}"
idle_timeout_s = 600
[agent]
history_budget_tokens = 1500
max_model_calls = 5
[vault]
allow_private_upstreams = ["{model.host_port}"]
"""
    )


class Console:
    """One `clawgate run` with its console on pipes."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls) -> Console:
        proc = await asyncio.create_subprocess_exec(
            CLAWGATE,
            "run",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=ROOT,
        )
        return cls(proc)

    async def say(self, text: str) -> str:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(text.encode() + b"\n")
        await self.proc.stdin.drain()
        line = await asyncio.wait_for(self.proc.stdout.readline(), 90)
        assert line, "clawgate exited before replying"
        return line.decode().rstrip("\n")

    async def stop(self) -> None:
        assert self.proc.stdin
        self.proc.stdin.close()
        assert await asyncio.wait_for(self.proc.wait(), 60) == 0


def first_exchange(body: dict[str, Any]) -> tuple[str, str]:
    """(role, text) of a request's first message: where the summary travels."""
    first = body["messages"][0]
    return first["role"], _text(first["content"])


async def test_caching_usage_and_compaction_across_a_gateway_restart(
    dirs, sandbox_image, docker_client
) -> None:
    config_dir, data_dir = dirs
    model = ScriptedModel()
    with model.server:
        write_config(config_dir, model.server, sandbox_image)
        SecretStore(config_dir).add(
            "anthropic", "sk-ant-memory-test", model.server.host_port, "x-api-key", "{value}"
        )
        console = await Console.start()
        try:
            for i in range(8):
                reply = await console.say(f"fact-{i} " + "y" * 900)
                assert reply.startswith(f"Andy: noted fact-{i}"), reply
        finally:
            await console.stop()

        # 1. prompt caching: breakpoints on the last tool, the system prompt, the newest messages
        first = model.turns()[0]
        assert first["tools"][-1]["cache_control"] == EPHEMERAL
        assert all("cache_control" not in t for t in first["tools"][:-1])
        assert first["system"][0]["cache_control"] == EPHEMERAL
        assert first["messages"][-1]["content"][-1]["cache_control"] == EPHEMERAL
        assert all(json.dumps(body).count('"cache_control"') <= 4 for body in model.turns())
        assert model.server.requests[0].headers["x-api-key"] == "sk-ant-memory-test"

        # 2. the long conversation was compacted, and the next request carried the summary
        assert model.summaries >= 1
        assert "fact-0" in _text(model.summary_requests()[0]["messages"][-1]["content"])
        role, text = first_exchange(model.turns()[-1])
        assert role == "user" and "<conversation-summary>" in text and f"SUMMARY-{model.summaries}" in text
        assert "fact-0" in text  # the oldest turn lives on in the summary
        history = json.loads((data_dir / "groups" / "main" / ".clawgate" / "history.json").read_text())
        assert history["summary"].startswith(f"SUMMARY-{model.summaries} remembers")
        assert history["compacted_turns"] >= 1

        # 3. tool-loop and summary calls alike are counted, by the vault (checked in step 6)
        turns, summaries = len(model.turns()), len(model.summary_requests())
        first_run_ended = time.time()

        # 4. a gateway restart (and so a new container): the summary is still sent
        stored_summary = history["summary"]
        console = await Console.start()
        try:
            assert (await console.say("fact-after-restart")).startswith("Andy: noted fact-after-restart")
            role, text = first_exchange(model.turns()[-1])
            assert role == "user" and stored_summary in text

            # 5. /compact folds everything into the summary at the next turn
            before = model.summaries
            assert "next turn" in await console.say("/compact main")
            assert model.summaries == before  # not yet: at the next turn
            assert (await console.say("fact-last")).startswith("Andy: noted fact-last")
            assert model.summaries == before + 1
            assert "fact-after-restart" in _text(model.summary_requests()[-1]["messages"][-1]["content"])
            sent = model.turns()[-1]["messages"]
            assert len(sent) == 3  # the summary, its acknowledgement, the new prompt
            assert f"SUMMARY-{before + 1}" in _text(sent[0]["content"])
        finally:
            await console.stop()
        assert not (data_dir / "groups" / "main" / ".clawgate" / "compact-requested").exists()

        # 6. the vault metered every call; that account equals what the model server reported
        await check_metered(data_dir, model, turns, summaries, first_run_ended)


async def check_metered(
    data_dir: Path, model: ScriptedModel, turns: int, summaries: int, first_run_ended: float
) -> None:
    """Stored rows plus the vault's unacknowledged spool = every call, with the reported counts.

    The gateway closes its control socket before the vault stops, so the last calls of a run may
    wait in the spool until the next start: the first run's calls are all stored (the second run
    sent what was left), the second run's are stored or still spooled, none lost or doubled.
    """
    store = await Store.open(data_dir / "clawgate.db")
    try:
        async with store._conn.execute(
            "SELECT id, group_folder, model, input_tokens, output_tokens, cache_read_tokens,"
            " cache_write_tokens, complete, at FROM metered_usage"
        ) as cur:
            rows = [tuple(r) for r in await cur.fetchall()]
    finally:
        await store.close()
    spooled = UsageReporter(data_dir / "vault", data_dir / "nobody.sock")
    spooled.load()
    pending = [
        (r["id"], r["group"], r["model"], r["input_tokens"], r["output_tokens"], r["cache_read_tokens"],
         r["cache_write_tokens"], int(r["complete"]), r["at"])
        for r in spooled._pending.values()
    ]  # fmt: skip
    everything = rows + [p for p in pending if p[0] not in {r[0] for r in rows}]
    all_turns, all_summaries = len(model.turns()), len(model.summary_requests())
    expected = Counter(
        {("main", "fake", 11, 22, 333, 44, 1): all_turns, ("main", "fake", 500, 55, 0, 0, 1): all_summaries}
    )
    assert Counter(r[1:8] for r in everything) == expected
    first = Counter(r[1:8] for r in rows if r[8] < first_run_ended)
    assert first == Counter(
        {("main", "fake", 11, 22, 333, 44, 1): turns, ("main", "fake", 500, 55, 0, 0, 1): summaries}
    )
