"""Attack: from inside a group's sandbox, make model calls whose spend the vault cannot see.

The hostile agent runs curl with its shell tool (the fake model scripts the tool call), in a real
sandbox on every tier, through the real vault, straight at the model server: a streamed chat
completion without `stream_options.include_usage` (such a stream carries no token counts), one
that sets it to false, and streams asking for gzip (`--compressed`), Anthropic and Responses
alike. The model server answers in the providers' recorded shapes with counts chosen here.
Afterwards the host's database must hold each call's counts exactly, as the model reported them.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tests.fakes.model_payloads import Tokens
from tests.fakes.model_server import FakeModelServer, Recorded, recorded_answer
from tests.security.conftest import Attacker, Tier

ATTACKS: dict[str, tuple[str, dict[str, Any], Tokens]] = {
    "chat-no-usage": ("/v1/chat/completions", {"stream": True}, Tokens(4101, 41, 401)),
    "chat-usage-false": (
        "/v1/chat/completions",
        {"stream": True, "stream_options": {"include_usage": False}},
        Tokens(4202, 42, 402),
    ),
    "messages-gzip": ("/v1/messages", {"stream": True, "max_tokens": 10}, Tokens(4303, 43, 403, 4)),
    "responses-gzip": ("/v1/responses", {"stream": True}, Tokens(4404, 44, 404)),
}


def answer(record: Recorded) -> Any:
    attack = (record.body.get("metadata") or {}).get("attack")
    if attack in ATTACKS:
        return recorded_answer(record, ATTACKS[attack][2])
    return FakeModelServer._echo(record)  # the agent's own calls


async def test_a_sandbox_cannot_hide_its_model_spend(
    attacker: Attacker, model_server: FakeModelServer, tier: Tier, dirs: tuple[Path, Path]
) -> None:
    model_server.default = answer
    commands = []
    for name, (path, extra, _) in ATTACKS.items():
        body = json.dumps({"model": "gpt-4o-mini", "messages": [], "metadata": {"attack": name}, **extra})
        compressed = "--compressed " if "gzip" in name else ""
        commands.append(
            f'echo {name}; curl -sS -m 30 {compressed}--proxy "$http_proxy"'
            " -H 'content-type: application/json' -H 'x-api-key: placeholder'"
            f" -d '{body}' -o /dev/null -w 'status=%{{http_code}}\\n'"
            f" {model_server.url}{path}"
        )
    out = await attacker.shell("; ".join(commands))
    for name in ATTACKS:
        assert f"{name}\nstatus=200" in out, out

    store = attacker.gateway.store
    want = Counter(
        ("hostile", t.input, t.output, t.cache_read, t.cache_write, 1) for _, _, t in ATTACKS.values()
    )

    async def metered() -> Counter[tuple[object, ...]]:
        async with store._conn.execute(
            "SELECT group_folder, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens,"
            " complete FROM metered_usage WHERE input_tokens > 4000"
        ) as cur:
            return Counter(tuple(r) for r in await cur.fetchall())

    for _ in range(200):
        if await metered() == want:
            break
        await asyncio.sleep(0.05)
    assert await metered() == want
    # what the model server saw: usage asked for, identity encoding, whatever the sandbox sent
    for record in model_server.requests:
        if (record.body.get("metadata") or {}).get("attack", "").startswith("chat"):
            assert record.body["stream_options"]["include_usage"] is True
        if (record.body.get("metadata") or {}).get("attack"):
            assert record.headers.get("accept-encoding") == "identity"
