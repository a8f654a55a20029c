"""A flood of throw-away accounts in a public `approval` group, end to end through Telegram.

The attacker's move: 20 accounts each send one trigger at once. The owner's main chat must get
`[groups] max_open_sender_prompts` prompts and one notice — not 20 prompts burying the owner's
other approvals — and every held message must still be answered exactly once after its sender
is allowed, across a gateway restart in the middle too. A real Gateway (Docker sandbox, vault,
SQLite, fake model) with the real TelegramChannel polling the fake Bot API (the fixtures of
tests/integration/test_senders_telegram.py).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.integration.test_senders_telegram import ADMIN, MAIN, TEAM, Env, approval_id_of, until
from tests.integration.test_senders_telegram import env as env  # the same gateway fixture

STRANGERS = [{"id": 7000 + n, "is_bot": False, "first_name": f"Bot{n}"} for n in range(20)]
NOTICE = re.compile(r"(\d+) more unknown senders? waits? in team; /senders team lists them")


def notices(env: Env) -> list[str]:
    return [m["text"] for m in env.sent_to(MAIN) if NOTICE.search(m.get("text", ""))]


def about(prompt: dict[str, Any]) -> int:
    """The Telegram user id a sender prompt asks about."""
    match = re.search(r"Let tg:(\d+) talk to the assistant in team\?", prompt["text"])
    assert match is not None, prompt["text"]
    return int(match.group(1))


def open_prompts(env: Env) -> list[dict[str, Any]]:
    """Prompts in the main chat whose buttons are still there (not yet edited to an outcome)."""
    return [
        p
        for p in env.prompts()
        if "reply_markup" in env.api.messages.get((p["chat"]["id"], p["message_id"]), {"reply_markup": 1})
    ]


async def held_statuses(env: Env) -> dict[str, str]:
    assert env.gw is not None
    stored = await env.gw.store.messages_for_chat(f"tg:{TEAM}")
    return {m.text: m.status for m in stored if m.text.startswith("@Andy hi from")}


@pytest.mark.timeout(600)
async def test_twenty_strangers_get_three_prompts_one_notice_and_all_are_answered_once_across_a_restart(
    env: Env,
) -> None:
    await env.command(f"/register tg:{TEAM} team --senders approval")
    for n, user in enumerate(STRANGERS):  # all at once: one getUpdates batch or a few
        env.api.push_message(TEAM, f"@Andy hi from {n}", user=user, title="Team")
    texts = {f"@Andy hi from {n}" for n in range(20)}

    async def all_held() -> bool:
        statuses = await held_statuses(env)
        return set(statuses) == texts and set(statuses.values()) == {"held"}

    await until(all_held)
    [notice] = await env.api_wait(lambda: notices(env))
    assert int(NOTICE.search(notice).group(1)) >= 1  # type: ignore[union-attr]
    await asyncio.sleep(1.0)  # a 4th prompt or a 2nd notice, if one were coming, would be here by now
    assert len(env.prompts()) == 3 and len(notices(env)) == 1
    # The oldest three are asked (their prompts are posted concurrently, in no set order).
    assert sorted(about(p) for p in env.prompts()) == [7000, 7001, 7002]
    assert env.model.requests == [] and env.sent_to(TEAM) == []

    # /senders lists the whole line with counts; /status counts who is not asked yet.
    shown = await env.command("/senders team")
    assert "tg:7000: 1 held message, asked now" in shown and "tg:7019: 1 held message, not asked yet" in shown
    assert "senders: 3 waiting for Allow/Deny, 17 more not asked yet" in await env.command("/status")

    # Allowing one prompt answers that stranger and brings the next stranger's prompt.
    [first] = [p for p in env.prompts() if about(p) == 7000]
    assert (await env.click(first, f"ap:{approval_id_of(first)}:a", ADMIN)).startswith("Approved")
    await env.api_wait(lambda: len(env.prompts()) == 4)
    assert about(env.prompts()[3]) == 7003
    await env.api_wait(lambda: env.sent_to(TEAM), timeout=120)

    # A restart in the middle: the open prompts expire, the line is kept, and the new gateway asks
    # the three oldest still held (7001, 7002, 7003), no more.
    assert env.gw is not None
    await env.gw.drain()
    await env.stop()
    before = len(env.prompts())
    await env.start()
    await env.api_wait(lambda: len(env.prompts()) >= before + 3)
    await env.api_wait(lambda: len(notices(env)) == 2)  # the restart says it once more
    await asyncio.sleep(1.0)
    assert sorted(about(p) for p in open_prompts(env)) == [7001, 7002, 7003]
    assert len(env.prompts()) == before + 3

    # The owner allows every prompt as it comes: each stranger's prompt follows the last one.
    allowed = {7000}
    while len(allowed) < 20:
        [prompt, *_] = await env.api_wait(lambda: open_prompts(env))
        assert (await env.click(prompt, f"ap:{approval_id_of(prompt)}:a", ADMIN)).startswith("Approved")
        allowed.add(about(prompt))
        decided = prompt["message_id"]
        await env.api_wait(lambda d=decided: d not in [p["message_id"] for p in open_prompts(env)])
    assert allowed == {u["id"] for u in STRANGERS}

    # Every held message answered exactly once: done, and one reply per turn, none repeated.
    async def all_done() -> bool:
        assert env.gw is not None
        await env.gw.drain()
        return set((await held_statuses(env)).values()) == {"done"}

    await until(all_done, timeout=300)
    assert env.gw is not None
    async with env.gw.store._conn.execute(  # which run answered each of them
        "SELECT DISTINCT run_id FROM messages WHERE chat_id = ? AND text LIKE '@Andy hi from %'",
        (f"tg:{TEAM}",),
    ) as cur:
        runs = [row[0] for row in await cur.fetchall()]
    # A message released twice would be claimed by a second run: one more model call and reply.
    assert None not in runs and len(runs) == len(env.model.requests) == len(env.sent_to(TEAM))
    assert len(notices(env)) == 2 and len(env.prompts()) == before + 19
