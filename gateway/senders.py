"""Who may talk to a group's assistant: the sender policy applied to every triggered message.

The router asks `classify` about each message that would start a turn (status `pending`):

- the main chat: only admins (`[admin] users`, the console's owner) trigger its agent, whatever
  the policy; anyone else's message is `stored`, kept but never shown to the most privileged
  agent (it could be prompt injection aimed at the owner's assistant);
- a blocked sender, a sender id of no known shape (core.senders), and in a `members` group an
  unlisted sender: `context` — in the history the next allowed trigger's turn sees, never a
  turn of its own, and no reply (no oracle: the sender cannot tell a policy from a busy bot);
- in an `approval` group, an unknown sender: `held`. After the message is committed the gate
  asks the owner once per (group, sender) in the main chat through `gateway.approvals` (admins
  in main only, decided exactly once). Allow remembers the sender and moves their held
  messages to `pending`, so the message that asked is answered, once; Deny remembers them as
  blocked and moves the held messages to `context`. An expired prompt decides nothing: the
  held messages become context and the sender's next trigger asks again. A prompt the main
  chat's channel could not post was never seen: the messages stay held and are asked about
  again after `RETRY_S`.

Prompts are bounded (gateway/sender_queue.py): at most `[groups] max_open_sender_prompts` open
per group and `max_open_sender_prompts_total` in all, so a flood of throw-away accounts cannot
bury the owner's other approvals. An unknown sender past the cap is held all the same, just not
asked yet; `_pump` asks the next ones, oldest first held message first, whenever a prompt closes
(decided, expired, voided) or a decision clears a sender, and the main chat is told once per
backlog. The order lives in the database (the held messages' ids), so a restart keeps it.

Decisions and lists live in the database (gateway/store/senders.py), read into memory here
because every inbound message is classified. A prompt left open by a restart is expired by
`Approvals.recover()`; `start()` then asks again, within the caps and in the same order, about
the senders whose messages are still held, so a held message is never lost and never answered
twice. Scheduled tasks and the bot's own messages never pass through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Coroutine
from typing import Any, Protocol

from core.config import Config
from core.models import Group, InboundMessage
from core.senders import SenderState, is_sender_id, validate_sender_id
from gateway.approvals import Approvals, new_approval_id
from gateway.queue import GroupQueue
from gateway.registry import GroupRegistry
from gateway.sender_queue import SHOWN_HELD, Held, Waiting, backlog_notice, held_lines, plan, shown_name
from gateway.store import Store

log = logging.getLogger(__name__)

PROMPT_TEXT_CHARS = 300
NOTICE_DELAY_S = 1.0  # a burst of strangers arrives together: the backlog notice counts it whole
RETRY_S = 60.0  # a prompt the main chat's channel refused is tried again after this pause


class Host(Protocol):
    """What the gate reads of the gateway (gateway.app), named here so neither imports the other."""

    config: Config
    store: Store
    registry: GroupRegistry
    approvals: Approvals
    queue: GroupQueue

    async def notify_main(self, text: str) -> None: ...


class SenderGate:
    def __init__(self, host: Host) -> None:
        self._host = host
        self._store = host.store
        self._registry = host.registry
        self._approvals = host.approvals
        self._lists: dict[str, dict[str, SenderState]] = {}
        self._asking: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}  # → approval id, task
        # folder → senders held but not asked yet, oldest first (a mirror of the database's order,
        # refreshed by every _pump; it spares a lookup per message of a sender already waiting)
        self._waiting: dict[str, dict[str, None]] = {}
        self._noticed: set[str] = set()  # groups whose current backlog the main chat was told about
        self._later_tasks: set[asyncio.Task[None]] = set()  # backlog notices, retries after a failed post
        self._lock = asyncio.Lock()  # one decision at a time about who is asked: the caps hold
        self._stopped = False
        self.notice_delay_s = NOTICE_DELAY_S
        self.retry_s = RETRY_S
        self.refused: Counter[str] = Counter()  # group folder → triggers not let through (since start)

    async def load(self) -> None:
        self._lists = await self._store.group_senders()

    def state(self, folder: str, sender_id: str) -> SenderState | None:
        return self._lists.get(folder, {}).get(sender_id)

    def senders(self, folder: str) -> dict[str, SenderState]:
        return dict(self._lists.get(folder, {}))

    # -- classifying -------------------------------------------------------------------------

    def classify(self, message: InboundMessage, group: Group | None, status: str) -> str:
        """The status a message is stored with, given the router's (`pending` = wants a turn)."""
        if status != "pending" or group is None:
            return status
        if group.is_main:
            if self._approvals.is_admin(message.sender_id):
                return "pending"
            self.refused[group.folder] += 1
            log.info("main chat: %.40r is not an admin; message kept, not answered", message.sender_id)
            return "stored"
        verdict = self._verdict(group, message.sender_id)
        if verdict == "context":
            self.refused[group.folder] += 1
            log.info(
                "group %s: a trigger from %.40r is context only (sender policy %s, sender %s)",
                group.folder,
                message.sender_id,
                group.senders,
                self.state(group.folder, message.sender_id) or "not listed",
            )
        return verdict

    def _verdict(self, group: Group, sender_id: str) -> str:
        if not is_sender_id(sender_id):
            return "context"
        state = self.state(group.folder, sender_id)
        if state == "blocked":
            return "context"
        if state == "allowed" or group.senders == "open":
            return "pending"
        return "held" if group.senders == "approval" else "context"

    async def after_ingest(self, group: Group, message: InboundMessage) -> None:
        """A `held` message is committed: ask the owner (once per sender, within the caps), or
        settle it at once if a decision landed between its classification and its commit."""
        sender_id = message.sender_id
        if await self._apply(group, sender_id) != "held" or self._stopped:
            return
        async with self._lock:
            key = (group.folder, sender_id)
            if key in self._asking or sender_id in self._waiting.get(group.folder, {}):
                return  # asked already, or waiting in line: this message joins the others
            if self._room(group.folder):
                await self._pump_locked()
            else:  # no database read per stranger of a flood: they queue behind the open prompts
                self._waiting.setdefault(group.folder, {})[sender_id] = None
                self._note_backlog(group.folder)

    async def _apply(self, group: Group, sender_id: str) -> str:
        """Move the sender's held messages the way their current verdict says; returns it."""
        verdict = self._verdict(group, sender_id)
        if verdict == "pending":
            if await self._store.release_held(group.chat_id, sender_id):
                self._host.queue.wake(group.folder)
        elif verdict == "context":
            await self._store.demote_held(group.chat_id, sender_id)
        if verdict != "held" and (asking := self._asking.pop((group.folder, sender_id), None)):
            # Decided another way (/allow, /block, the CLI, a policy change): the open prompt is
            # closed — after the held messages moved, so its asker finds nothing left to settle —
            # and a later click on it cannot undo that decision.
            await self._approvals.void(asking[0])
        return verdict

    # -- the bound on open prompts (gateway/sender_queue.py) ------------------------------------

    def _caps(self) -> tuple[int, int]:
        groups = self._host.config.groups  # read on every use: a SIGHUP may change them
        return groups.max_open_sender_prompts, groups.max_open_sender_prompts_total

    def _room(self, folder: str) -> bool:
        per_group, total = self._caps()
        in_group = sum(1 for f, _ in self._asking if f == folder)
        return len(self._asking) < total and in_group < per_group

    async def pump(self) -> None:
        """Ask the next waiting senders while there is room (a prompt closed, a cap was raised)."""
        if self._stopped:
            return
        async with self._lock:
            await self._pump_locked()

    async def _pump_locked(self) -> None:
        if self._stopped:
            return
        held: list[Held] = []
        for chat_id, sender_id, first_id, count in await self._store.held_queue():
            group = self._registry.for_chat(chat_id)
            if group is None:
                continue  # an unregistered chat's held messages wait for its registration
            if self._verdict(group, sender_id) != "held":
                await self._apply(group, sender_id)  # decided, or the policy changed, meanwhile
                continue
            if (group.folder, sender_id) in self._asking:
                continue
            held.append(Held(group.folder, sender_id, first_id, count))
        per_group, total = self._caps()
        chosen = plan(held, (f for f, _ in self._asking), per_group, total)
        for item in chosen.ask:
            group = self._registry.by_folder(item.folder)
            first = await self._store.held_message(item.first_id)
            if group is not None and first is not None:  # else: settled while we looked
                self._start_asking(group, item.sender_id, *first)
        self._waiting = {f: dict.fromkeys(h.sender_id for h in q) for f, q in chosen.waiting.items()}
        self._noticed &= set(self._waiting)  # a cleared backlog may be told about again
        for folder in self._waiting:
            self._note_backlog(folder)

    def _start_asking(self, group: Group, sender_id: str, name: str, text: str) -> None:
        approval_id = new_approval_id()
        task = asyncio.create_task(
            self._ask(group, sender_id, name, text, approval_id), name=f"sender:{group.folder}"
        )
        self._asking[(group.folder, sender_id)] = (approval_id, task)

    def _note_backlog(self, folder: str) -> None:
        if folder in self._noticed or self._stopped:
            return
        self._noticed.add(folder)
        self._later(self._tell_backlog(folder), f"sender-backlog:{folder}")

    def _later(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """A notice or a retry, run beside the caller and cancelled by stop()."""
        if self._stopped:
            work.close()
            return
        task = asyncio.create_task(work, name=name)
        self._later_tasks.add(task)
        task.add_done_callback(self._later_tasks.discard)

    async def _tell_backlog(self, folder: str) -> None:
        await asyncio.sleep(self.notice_delay_s)
        waiting = len(self._waiting.get(folder, {}))
        if not waiting:
            return  # cleared meanwhile (the owner decided, prompts closed): nothing to say
        try:
            await self._host.notify_main(backlog_notice(folder, waiting, *self._caps()))
        except Exception:  # the senders still wait and /senders lists them
            log.exception("group %s: could not tell the main chat about waiting senders", folder)

    # -- asking the owner ---------------------------------------------------------------------

    async def _ask(self, group: Group, sender_id: str, name: str, text: str, approval_id: str) -> None:
        key = (group.folder, sender_id)
        retry = False
        try:
            if self._asking.get(key, ("", None))[1] is not asyncio.current_task():
                return  # decided (/allow, /block) before this task ran: its void found no prompt
            shown = shown_name(name)
            first = text if len(text) <= PROMPT_TEXT_CHARS else text[:PROMPT_TEXT_CHARS] + "…"
            decision = await self._approvals.request_approval(
                f"Let {sender_id} talk to the assistant in {group.folder}?",
                f"sender id: {sender_id}\n"
                f"display name (anyone can choose it): {shown}\n"
                f"their message: {first}\n\n"
                f"Approve: {sender_id} may trigger the assistant in {group.folder} from now on, "
                "and this message is answered. Deny: their messages stay context only "
                f"(/allow {group.folder} {sender_id} changes it later).",
                group.folder,
                self._host.config.groups.sender_approval_timeout_s,
                approval_id,
            )
            record = await self._store.approval(approval_id)
            by = record.decided_by if record is not None else None
            current = self._registry.by_folder(group.folder)
            if current is None or current.chat_id != group.chat_id:
                await self._store.demote_held(group.chat_id, sender_id)  # unregistered meanwhile
                return
            # Still listed as asking while deciding: a trigger that lands meanwhile is settled by
            # the decision (or by its own after_ingest, which then sees it), never asked again.
            if decision == "approved":
                await self.decide(current, sender_id, "allowed", by)
            elif decision == "denied" and by not in (None, "gateway"):
                await self.decide(current, sender_id, "blocked", by)
            elif record is not None and record.state == "denied" and record.message_ref is None:
                # Never shown (the main chat's channel failed): nobody could decide, so the
                # messages stay held and are asked about again later — an outage must not turn
                # the whole line of waiting senders into context, one failed post after another.
                retry = True
                log.warning("group %s: the prompt about %s could not be posted; asking later", *key)
            else:  # expired or voided: nobody decided
                moved = await self._store.demote_held(current.chat_id, sender_id)
                log.info(
                    "group %s: nobody decided about %s (%s); %d held message(s) are context now",
                    group.folder,
                    sender_id,
                    decision,
                    moved,
                )
        except Exception:
            retry = True
            log.exception("group %s: asking the owner about %s failed", group.folder, sender_id)
        finally:
            if self._asking.get(key, ("", None))[1] is asyncio.current_task():
                self._asking.pop(key, None)
        if retry:
            self._later(self._pump_after_pause(), f"sender-retry:{group.folder}")
        else:
            # The prompt is closed: its slot goes to the next waiting sender — this one again,
            # behind the others, if they triggered after the demotion while it was still open.
            await self.pump()

    async def _pump_after_pause(self) -> None:
        await asyncio.sleep(self.retry_s)
        await self.pump()

    async def decide(self, group: Group, sender_id: str, state: SenderState, by: str | None) -> None:
        """Remember `state` for the sender and settle their held messages accordingly."""
        validate_sender_id(sender_id)
        await self._store.set_sender(group.folder, sender_id, state, by)
        self._lists.setdefault(group.folder, {})[sender_id] = state
        log.info("group %s: sender %s %s by %s", group.folder, sender_id, state, by or "?")
        await self._apply(group, sender_id)
        await self.pump()  # a prompt may have closed, or a waiting sender left the line

    async def decide_by_owner(self, group: Group, sender_id: str, state: SenderState, by: str) -> None:
        """`/allow`, `/block`: decide, and void a prompt still open about that sender."""
        if group.is_main:
            raise ValueError("the main chat is always limited to admins ([admin] users)")
        await self.decide(group, sender_id, state, by)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Once channels and approvals run: settle every held message, or ask again about its
        sender — within the caps, oldest first held message first."""
        await self.pump()

    async def reload(self) -> None:
        """The CLI changed lists or policies in the database (`clawgate groups allow|block|set`)."""
        await self.load()
        await self.pump()

    async def stop(self) -> None:
        self._stopped = True  # a prompt closing now frees no slot: nothing new is asked
        tasks = [task for _, task in self._asking.values()] + list(self._later_tasks)
        self._asking.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # -- what the owner sees --------------------------------------------------------------------

    def describe(self, group: Group) -> str:
        """The policy and how many senders are listed (/groups, /senders)."""
        if group.is_main:
            return "admins only ([admin] users)"
        states = Counter(self._lists.get(group.folder, {}).values())
        return f"senders {group.senders} ({states['allowed']} allowed, {states['blocked']} blocked)"

    def asking(self) -> list[tuple[str, str]]:
        """(group, sender) pairs whose prompt is open in the main chat."""
        return sorted(self._asking)

    def backlog(self) -> int:
        """Senders held but not asked yet (past the caps), in all groups."""
        return sum(len(senders) for senders in self._waiting.values())

    async def waiting(self, group: Group) -> list[Waiting]:
        """Who waits for a decision in the group, oldest first: held counts, whose prompt is open,
        and the display names of the first `SHOWN_HELD` (the ones anyone lists). The one reading
        behind /senders and the dashboard's Groups page."""
        queue = await self._store.held_queue(group.chat_id)
        asked = {s for f, s in self._asking if f == group.folder}
        names = await self._store.held_names([first for _, _, first, _ in queue[:SHOWN_HELD]])
        return [
            Waiting(sender, count, sender in asked, shown_name(names[first]) if first in names else None)
            for _, sender, first, count in queue
        ]

    async def held_report(self, group: Group) -> list[str]:
        """/senders: who waits for a decision in the group, oldest first, with held counts."""
        waiting = await self.waiting(group)
        return held_lines(
            [(w.sender_id, w.count) for w in waiting], {w.sender_id for w in waiting if w.asked}
        )
