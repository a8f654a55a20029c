"""A flood of unknown senders in an `approval` group (gateway/sender_queue.py, gateway/senders.py).

The attacker: a public chat where many throw-away accounts each send one trigger. Without a
bound every one of them is an Allow/Deny prompt in the owner's main chat. These tests pin the
bound — at most N open prompts per group and M in all, the rest held and asked oldest first,
one notice per backlog — first on the pure ordering (`plan`), then through the real gate, real
SQLite, the real approvals and router (the world of tests/unit/test_senders.py).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from channels.base import ApprovalPrompt
from core.config import Config
from core.models import Group
from gateway.sender_queue import SHOWN_HELD, Held, backlog_notice, held_lines, plan
from tests.fakes.clock import FakeClock
from tests.unit.test_senders import ADMIN, MAIN, T0, World, close, eventually, make_world

NOTICE = re.compile(
    r"(\d+) more unknown senders? waits? in (\w+); /senders \2 lists them, /allow or /block decide\. "
    r"At most (\d+) Allow/Deny prompts per group \((\d+) in all\) are open at once; .*"
)
CROWD = "tg:-3"


def stranger(n: int) -> str:
    return f"tg:{1000 + n}"


def h(folder: str, n: int, first_id: int) -> Held:
    return Held(folder, stranger(n), first_id, 1)


# -- the pure ordering ------------------------------------------------------------------------------


def test_a_group_asks_its_oldest_senders_up_to_its_cap_and_the_rest_wait_in_order() -> None:
    held = [h("team", n, first_id=100 - n) for n in range(6)]  # n=5 triggered first
    chosen = plan(held, [], per_group=3, total=10)
    assert [x.sender_id for x in chosen.ask] == [stranger(5), stranger(4), stranger(3)]
    assert [x.sender_id for x in chosen.waiting["team"]] == [stranger(2), stranger(1), stranger(0)]
    # Two prompts already open: one more is asked, the next in line.
    chosen = plan(held, ["team", "team"], per_group=3, total=10)
    assert [x.sender_id for x in chosen.ask] == [stranger(5)]


def test_the_shared_total_goes_first_to_the_group_with_the_fewest_open_prompts() -> None:
    flood = [h("team", n, first_id=n) for n in range(10)]
    quiet = [h("quiet", 99, first_id=500)]  # the newest of all
    chosen = plan(flood + quiet, ["team", "team", "crowd"], per_group=3, total=4)
    assert [(x.folder, x.sender_id) for x in chosen.ask] == [("quiet", stranger(99))]
    assert len(chosen.waiting["team"]) == 10 and "quiet" not in chosen.waiting
    # From nothing open: the groups take turns, each oldest first, until the total is reached.
    crowd = [h("crowd", n, first_id=100 + n) for n in range(10, 20)]
    chosen = plan(flood + crowd, [], per_group=3, total=5)
    assert [x.sender_id for x in chosen.ask] == [
        stranger(0),
        stranger(10),
        stranger(1),
        stranger(11),
        stranger(2),
    ]
    assert plan(flood, ["crowd"] * 5, per_group=3, total=5).ask == []  # the total is full


def test_the_notice_and_the_held_list_read_right() -> None:
    assert NOTICE.fullmatch(backlog_notice("team", 12, 3, 10))
    assert backlog_notice("team", 1, 3, 10).startswith("1 more unknown sender waits in team;")
    many = [(stranger(n), n % 3 + 1) for n in range(SHOWN_HELD + 5)]
    lines = held_lines(many, {stranger(0)})
    assert lines[1] == f"    {stranger(0)}: 1 held message, asked now"
    assert lines[2] == f"    {stranger(1)}: 2 held messages, not asked yet"
    assert lines[-1] == "    … and 5 more" and len(lines) == SHOWN_HELD + 2
    assert held_lines([(stranger(0), 2)], None) == [
        "  held, waiting for a decision (oldest first):",
        f"    {stranger(0)}: 2 held messages",
    ]
    assert held_lines([], set()) == []


# -- through the real gate ----------------------------------------------------------------------------


def caps(per_group: int, total: int) -> Config:
    return Config.model_validate(
        {"groups": {"max_open_sender_prompts": per_group, "max_open_sender_prompts_total": total}}
    )


async def world(tmp_path: Path, config: Config | None = None, at: float = T0) -> World:
    w = await make_world(tmp_path / "db.sqlite", "approval", FakeClock(at))
    if config is not None:
        w.config = config
    return w


def asked(w: World) -> list[str]:
    """The senders the prompts in the main chat are about, in the order they were posted."""
    return [re.findall(r"tg:\d+", prompt.title)[0] for _, prompt in w.tg.prompts]


async def settled_prompts(w: World, count: int) -> list[str]:
    await w.tg.wait_until(lambda: len(w.tg.prompts) >= count, 5)
    await asyncio.sleep(0.05)  # a further prompt, if one were coming, would be here by now
    return [prompt.id for _, prompt in w.tg.prompts]


async def test_twenty_strangers_get_three_prompts_one_notice_and_are_asked_in_order(tmp_path: Path) -> None:
    w = await world(tmp_path)
    try:
        for n in range(20):
            assert await w.say(stranger(n), f"@Andy hello from {n}") == "held"
        ids = await settled_prompts(w, 3)
        assert len(ids) == 3 and asked(w) == [stranger(0), stranger(1), stranger(2)]
        await eventually(lambda: asyncio.sleep(0, len(w.notices) == 1))
        [notice] = w.notices
        match = NOTICE.fullmatch(notice)
        assert match is not None and match.group(2) == "team" and match.groups()[2:] == ("3", "10")
        assert w.senders.backlog() == 17 and len(w.senders.asking()) == 3

        # A waiting stranger triggers again: still no prompt of their own, their count grows.
        assert await w.say(stranger(7), "@Andy hello again from 7") == "held"
        report = await w.senders.held_report(w.registry.by_folder("team"))  # type: ignore[arg-type]
        assert report[1] == f"    {stranger(0)}: 1 held message, asked now"
        assert f"    {stranger(7)}: 2 held messages, not asked yet" in report
        assert [line.split()[0].rstrip(":") for line in report[1:]] == [stranger(n) for n in range(20)]

        # Allow, Deny and expiry each close a prompt: the next in line is asked.
        assert (await w.tg.press(ids[0], "approve", ADMIN, MAIN)).startswith("Approved")
        await w.tg.wait_until(lambda: len(w.tg.prompts) == 4, 5)
        assert asked(w)[3] == stranger(3)
        assert (await w.tg.press(ids[1], "deny", ADMIN, MAIN)).startswith("Denied")
        await w.tg.wait_until(lambda: len(w.tg.prompts) == 5, 5)
        assert asked(w)[4] == stranger(4)
        # /allow of a stranger still in line: answered without a prompt, and leaves the line.
        await w.senders.decide_by_owner(w.registry.by_folder("team"), stranger(5), "allowed", ADMIN)  # type: ignore[arg-type]
        w.clock.set(T0 + Config().groups.sender_approval_timeout_s + 1)  # the open ones expire
        await w.tg.wait_until(lambda: len(w.tg.prompts) == 8, 5)
        assert asked(w)[5:] == [stranger(6), stranger(7), stranger(8)]
        assert len(await settled_prompts(w, 8)) == 8 and len(w.notices) == 1  # no second notice
        statuses = dict(await w.statuses())
        assert statuses["@Andy hello from 0"] == "pending" and statuses["@Andy hello from 1"] == "context"
        assert statuses["@Andy hello from 2"] == "context"  # expired: nobody decided
        assert statuses["@Andy hello from 5"] == "pending"  # the /allow
        assert statuses["@Andy hello from 9"] == "held"  # still in line, kept
    finally:
        await close(w)


async def test_a_restart_asks_the_oldest_within_the_cap_and_everyone_is_answered_once(tmp_path: Path) -> None:
    w = await world(tmp_path)
    for n in range(8):
        assert await w.say(stranger(n), f"@Andy first from {n}") == "held"
    assert await w.say(stranger(0), "@Andy second from 0") == "held"
    await settled_prompts(w, 3)
    await close(w)

    w = await world(tmp_path, at=T0 + 5)
    try:
        # The old prompts expired with the restart; three new ones ask the three oldest again.
        ids = await settled_prompts(w, 3)
        assert asked(w) == [stranger(0), stranger(1), stranger(2)]
        await eventually(lambda: asyncio.sleep(0, len(w.notices) == 1))
        assert NOTICE.fullmatch(w.notices[0]) and w.notices[0].startswith("5 more unknown senders")
        assert {status for _, status in await w.statuses()} == {"held"}
        # The owner allows each prompt as it comes: every held message ends pending, once.
        for turn in range(8):
            await w.tg.wait_until(lambda t=turn: len(w.tg.prompts) > t, 5)
            prompt_id = w.tg.prompts[turn][1].id
            assert (await w.tg.press(prompt_id, "approve", ADMIN, MAIN)).startswith("Approved")
        await eventually(lambda: asyncio.sleep(0, w.senders.asking() == [] and w.senders.backlog() == 0))
        assert asked(w) == [stranger(n) for n in range(8)] and ids == [p.id for _, p in w.tg.prompts[:3]]
        assert sorted(await w.statuses()) == sorted(
            [(f"@Andy first from {n}", "pending") for n in range(8)] + [("@Andy second from 0", "pending")]
        )
        assert w.queue.woken.count("team") == 8  # one wake per release, nothing released twice
        assert len(w.notices) == 1
    finally:
        await close(w)


async def test_many_groups_share_the_total_and_a_quiet_group_is_not_starved(tmp_path: Path) -> None:
    w = await world(tmp_path, caps(per_group=3, total=4))
    try:
        await w.registry.register(Group("crowd", CROWD, "crowd", "@Andy", senders="approval"))
        await w.registry.register(Group("quiet", "tg:-4", "quiet", "@Andy", senders="approval"))
        for n in range(10):
            assert await w.say(stranger(n), f"@Andy team {n}") == "held"
        for n in range(10, 20):
            assert await w.say(stranger(n), f"@Andy crowd {n}", chat=CROWD) == "held"
        ids = await settled_prompts(w, 4)
        assert asked(w) == [stranger(0), stranger(1), stranger(2), stranger(10)]  # 3 + 1 = the total
        assert await w.say(stranger(99), "@Andy quiet one", chat="tg:-4") == "held"
        await eventually(lambda: asyncio.sleep(0, len(w.notices) == 3))  # one per group with a backlog
        assert sorted(NOTICE.fullmatch(n).group(2) for n in w.notices) == ["crowd", "quiet", "team"]  # type: ignore[union-attr]
        # A slot frees: the quiet group (no prompt open) goes before the older floods.
        assert (await w.tg.press(ids[0], "deny", ADMIN, MAIN)).startswith("Denied")
        await w.tg.wait_until(lambda: len(w.tg.prompts) == 5, 5)
        assert asked(w)[4] == stranger(99)
        assert len(await settled_prompts(w, 5)) == 5
    finally:
        await close(w)


async def test_a_backlog_that_cleared_is_told_about_again_when_a_new_one_starts(tmp_path: Path) -> None:
    w = await world(tmp_path, caps(per_group=1, total=10))
    try:
        team = w.registry.by_folder("team")
        assert team is not None
        for n in range(3):
            await w.say(stranger(n), f"@Andy {n}")
        await eventually(lambda: asyncio.sleep(0, len(w.notices) == 1))
        for n in range(3):
            await w.senders.decide_by_owner(team, stranger(n), "blocked", ADMIN)
        assert w.senders.backlog() == 0 and w.senders.asking() == []
        for n in range(3, 6):
            await w.say(stranger(n), f"@Andy {n}")
        await eventually(lambda: asyncio.sleep(0, len(w.notices) == 2))
        assert [s for _, s in w.senders.asking()] == [stranger(3)] and w.senders.backlog() == 2
    finally:
        await close(w)


async def test_a_prompt_the_channel_cannot_post_keeps_the_line_held_and_is_tried_again(
    tmp_path: Path,
) -> None:
    w = await world(tmp_path)
    try:
        w.senders.retry_s = 0.01
        w.tg.fail_approvals = True  # the main chat's channel is down
        tries: list[str] = []
        post = w.tg.send_approval

        async def counted(chat_id: str, prompt: ApprovalPrompt) -> str:
            tries.append(prompt.title)
            return await post(chat_id, prompt)

        w.tg.send_approval = counted  # type: ignore[method-assign]
        for n in range(5):
            assert await w.say(stranger(n), f"@Andy {n}") == "held"
        await eventually(lambda: asyncio.sleep(0, len(tries) >= 12))  # failed posts, tried again
        assert {status for _, status in await w.statuses()} == {"held"}  # nothing turned to context
        assert not any(stranger(n) in title for title in tries for n in (3, 4))  # only the oldest
        w.tg.fail_approvals = False
        await settled_prompts(w, 3)
        assert sorted(asked(w)) == [stranger(0), stranger(1), stranger(2)]
    finally:
        await close(w)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[groups]\nmax_open_sender_prompts = 0", "groups.max_open_sender_prompts"),
        ("[groups]\nmax_open_sender_prompts_total = 0", "groups.max_open_sender_prompts_total"),
        ("[groups]\nmax_open_sender_prompts = 11", "groups.max_open_sender_prompts"),
    ],
)
def test_the_caps_are_validated(text: str, key: str) -> None:
    from core.config import ConfigError, parse

    with pytest.raises(ConfigError) as info:
        parse(text, Path("config.toml"))
    assert key in str(info.value)
    assert parse("[groups]\nmax_open_sender_prompts = 5\nmax_open_sender_prompts_total = 5", Path("c.toml"))
