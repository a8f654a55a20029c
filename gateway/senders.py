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
  blocked and moves the held messages to `context`. An expired or unpostable prompt decides
  nothing: the held messages become context and the sender's next trigger asks again.

Decisions and lists live in the database (gateway/store/senders.py), read into memory here
because every inbound message is classified. A prompt left open by a restart is expired by
`Approvals.recover()`; `start()` then asks again for every sender whose messages are still held,
so a held message is never lost and never answered twice. Scheduled tasks and the bot's own
messages never pass through here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from typing import Protocol

from core.config import Config
from core.models import Group, InboundMessage
from core.senders import SenderState, is_sender_id, validate_sender_id
from gateway.approvals import Approvals, new_approval_id
from gateway.queue import GroupQueue
from gateway.registry import GroupRegistry
from gateway.store import Store

log = logging.getLogger(__name__)

PROMPT_TEXT_CHARS = 300


class Host(Protocol):
    """What the gate reads of the gateway (gateway.app), named here so neither imports the other."""

    config: Config
    store: Store
    registry: GroupRegistry
    approvals: Approvals
    queue: GroupQueue


class SenderGate:
    def __init__(self, host: Host) -> None:
        self._host = host
        self._store = host.store
        self._registry = host.registry
        self._approvals = host.approvals
        self._lists: dict[str, dict[str, SenderState]] = {}
        self._asking: dict[tuple[str, str], tuple[str, asyncio.Task[None]]] = {}  # → approval id, task
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
        """A `held` message is committed: ask the owner (once per sender), or settle it at once
        if a decision landed between its classification and its commit."""
        await self._settle(group, message.sender_id, message.sender_name, message.text)

    async def _settle(self, group: Group, sender_id: str, name: str, text: str) -> None:
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
        elif verdict == "held" and (group.folder, sender_id) not in self._asking:
            approval_id = new_approval_id()
            task = asyncio.create_task(
                self._ask(group, sender_id, name, text, approval_id), name=f"sender:{group.folder}"
            )
            self._asking[(group.folder, sender_id)] = (approval_id, task)

    # -- asking the owner ---------------------------------------------------------------------

    async def _ask(self, group: Group, sender_id: str, name: str, text: str, approval_id: str) -> None:
        key = (group.folder, sender_id)
        undecided = False
        try:
            shown = " ".join(name.split())[:80] or "(none)"
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
            else:  # expired, voided, or the prompt could not be posted: nobody decided
                moved = await self._store.demote_held(current.chat_id, sender_id)
                undecided = True
                log.info(
                    "group %s: nobody decided about %s (%s); %d held message(s) are context now",
                    group.folder,
                    sender_id,
                    decision,
                    moved,
                )
        except Exception:
            log.exception("group %s: asking the owner about %s failed", group.folder, sender_id)
        finally:
            if self._asking.get(key, ("", None))[1] is asyncio.current_task():
                self._asking.pop(key, None)
        if undecided:  # a trigger held after the demotion, while this prompt was still open
            for chat_id, held_sender, held_name, held_text in await self._store.held_senders():
                again = self._registry.for_chat(chat_id)
                if held_sender == sender_id and again is not None and again.folder == group.folder:
                    await self._settle(again, sender_id, held_name, held_text)

    async def decide(self, group: Group, sender_id: str, state: SenderState, by: str | None) -> None:
        """Remember `state` for the sender and settle their held messages accordingly."""
        validate_sender_id(sender_id)
        await self._store.set_sender(group.folder, sender_id, state, by)
        self._lists.setdefault(group.folder, {})[sender_id] = state
        log.info("group %s: sender %s %s by %s", group.folder, sender_id, state, by or "?")
        await self._settle(group, sender_id, "", "")

    async def decide_by_owner(self, group: Group, sender_id: str, state: SenderState, by: str) -> None:
        """`/allow`, `/block`: decide, and void a prompt still open about that sender."""
        if group.is_main:
            raise ValueError("the main chat is always limited to admins ([admin] users)")
        await self.decide(group, sender_id, state, by)

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Once channels and approvals run: settle (or ask again about) every held message."""
        for chat_id, sender_id, name, text in await self._store.held_senders():
            group = self._registry.for_chat(chat_id)
            if group is not None:
                await self._settle(group, sender_id, name, text)

    async def reload(self) -> None:
        """The CLI changed lists or policies in the database (`clawgate groups allow|block|set`)."""
        await self.load()
        await self.start()

    async def stop(self) -> None:
        tasks = [task for _, task in self._asking.values()]
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

    def waiting(self) -> list[tuple[str, str]]:
        """(group, sender) pairs whose prompt is open in the main chat."""
        return sorted(self._asking)
