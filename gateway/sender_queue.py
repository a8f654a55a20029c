"""Which unknown senders are asked about now, and which wait: the bound on sender prompts.

An `approval` group in a public chat can be flooded: 300 throw-away accounts each send one
trigger. One Allow/Deny prompt per sender would bury the owner's real approvals (NEAR
transfers, held HTTP requests) and spend the bot's outbound rate limit in every other chat. So
at most `[groups] max_open_sender_prompts` prompts are open per group and
`max_open_sender_prompts_total` over all groups; the other unknown senders' messages stay held
(nothing is lost) and wait in the order of their first held message.

This module is the pure part, kept apart from gateway/senders.py (the database, the prompts,
the life cycle) so the ordering and the caps can be read and tested on their own:

- within a group: oldest first held message first;
- across groups, for the shared total: the group with the fewest open prompts goes first (ties:
  the older first message), so a flooded group cannot take every shared slot from a group whose
  first stranger just asked;
- the owner is told once when a group starts having a backlog (`backlog_notice`), not once per
  sender.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

SHOWN_HELD = 30  # senders listed by /senders before "… and N more" (a chat message has a size limit)
NAME_CHARS = 80  # of a sender's display name in a prompt or on the dashboard


@dataclass(frozen=True)
class Held:
    """One sender with held messages in one group, not asked about yet."""

    folder: str
    sender_id: str
    first_id: int  # their first held message's row id: the order they wait in
    count: int  # held messages


@dataclass(frozen=True)
class Waiting:
    """One sender in a group's line as the owner sees it (/senders, the dashboard's Groups page)."""

    sender_id: str
    count: int  # held messages
    asked: bool  # their Allow/Deny prompt is open in the main chat now
    name: str | None  # the display name on their first held message, as shown; None: not read


def shown_name(name: str) -> str:
    """A display name as the owner is shown it: anyone can choose it, so one line, clipped."""
    return " ".join(name.split())[:NAME_CHARS] or "(none)"


@dataclass
class Plan:
    ask: list[Held] = field(default_factory=list)  # to ask about now, in this order
    waiting: dict[str, list[Held]] = field(default_factory=dict)  # folder → still waiting, oldest first


def plan(held: Iterable[Held], open_prompts: Iterable[str], per_group: int, total: int) -> Plan:
    """Who to ask now, given the held senders not asked yet and the folders of the open prompts."""
    queues: dict[str, deque[Held]] = {}
    for item in sorted(held, key=lambda h: h.first_id):
        queues.setdefault(item.folder, deque()).append(item)
    open_by = Counter(open_prompts)
    in_all = sum(open_by.values())
    result = Plan()
    while in_all < total:
        ready = [f for f, q in queues.items() if q and open_by[f] < per_group]
        if not ready:
            break
        folder = min(ready, key=lambda f: (open_by[f], queues[f][0].first_id))
        result.ask.append(queues[folder].popleft())
        open_by[folder] += 1
        in_all += 1
    result.waiting = {f: list(q) for f, q in queues.items() if q}
    return result


def backlog_notice(folder: str, waiting: int, per_group: int, total: int) -> str:
    """The one main-chat notice a group's backlog gets (until it has cleared)."""
    who = "1 more unknown sender waits" if waiting == 1 else f"{waiting} more unknown senders wait"
    return (
        f"{who} in {folder}; /senders {folder} lists them, /allow or /block decide. "
        f"At most {per_group} Allow/Deny prompts per group ({total} in all) are open at once; "
        "their messages are kept, and the next is asked, oldest first, when an open prompt is "
        "answered or expires."
    )


def held_lines(held: list[tuple[str, int]], asked: set[str] | None) -> list[str]:
    """`/senders` and `clawgate groups senders`: the senders with held messages, oldest first.

    `asked` is the senders whose prompt is open (None: unknown, as for the CLI, which reads the
    database without the running gateway)."""
    if not held:
        return []
    lines = ["  held, waiting for a decision (oldest first):"]
    for sender, count in held[:SHOWN_HELD]:
        state = "" if asked is None else (", asked now" if sender in asked else ", not asked yet")
        lines.append(f"    {sender}: {count} held message{'' if count == 1 else 's'}{state}")
    if len(held) > SHOWN_HELD:
        lines.append(f"    … and {len(held) - SHOWN_HELD} more")
    return lines
