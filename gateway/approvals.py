"""Approval prompts in the main chat, shared by every channel (invariant 6).

`request_approval` stores a record, posts the prompt into the main chat through the
channel that owns it and waits for a decision or for expiry (expiry means deny). A click
arrives through `on_button` (channels call it directly, never through the per-group
queue, so a click cannot wait behind the agent turn that is waiting for it); `/approve
<id>` and `/deny <id>` in the main chat take the same path. Only an admin pressing in the
main chat decides; the record changes state exactly once in one transaction
(`Store.decide_approval`), so double clicks, replays and late clicks cannot decide twice.
After the decision or the expiry the prompt is edited to show the outcome.

A decision counts only while someone waits for it: the requester's future lives in this
process, so a prompt whose requester is gone (a restart, a cancelled turn) can never again
be approved. A click on it is answered "expired", the record becomes `expired` and the prompt
is edited to say so — never "Approved" for something that was not done.

After a restart nobody waits for any approval of the previous run. `recover()` settles them
all as `expired` in the database and must run BEFORE any channel delivers updates (a click
Telegram held while the gateway was down arrives in the first `getUpdates`); `start()`, once
the channels are connected, edits their prompts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Literal

from channels.base import ApprovalOutcome, ApprovalPrompt, ButtonPress, Channel
from channels.console import OWNER_ID
from core.models import Approval
from gateway.registry import GroupRegistry
from gateway.scheduler import Clock, SystemClock, iso
from gateway.store import Store

log = logging.getLogger(__name__)

Decision = Literal["approved", "denied", "expired"]
DEFAULT_EXPIRES_IN_S = 600.0
MAX_TITLE_CHARS = 200
MAX_DETAILS_CHARS = 3000

REFUSE_CHAT = "Sorry, approvals can only be decided in the main chat."
REFUSE_USER = "Sorry, only an admin can approve or deny this."
UNKNOWN = "Sorry, there is no such approval."
NO_ALLOWANCE = "Sorry, this approval cannot be allowed for a while; use Approve or Deny."


def new_approval_id() -> str:
    """11 url-safe characters: `ap:<id>:a` stays far inside Telegram's 64-byte callback data."""
    return secrets.token_urlsafe(8)


def describe(approval: Approval) -> str:
    """`approved by tg:1 at 2025-…Z` — what a late clicker (or the prompt) is told."""
    text: str = approval.state
    if approval.decided_by:
        text += f" by {approval.decided_by}"
    if approval.decided_at is not None:
        text += f" at {iso(approval.decided_at)}"
    return text


class Approvals:
    def __init__(
        self,
        store: Store,
        registry: GroupRegistry,
        channels: Sequence[Channel],
        admins: Sequence[str],
        clock: Clock | None = None,
    ) -> None:
        self._store = store
        self._registry = registry
        self._channels = channels
        self._admins = admins
        self.clock: Clock = clock or SystemClock()
        self._waiters: dict[str, asyncio.Future[Decision]] = {}
        self._timers: dict[str, asyncio.Task[None]] = {}
        self._refs: dict[str, str] = {}  # approval id -> the channel's message ref
        self._finished: set[str] = set()  # prompts already edited (or being edited)
        self._recovered: list[str] | None = None  # settled by recover(), prompts edited by start()
        self._offers: dict[str, str] = {}  # approval id -> its "Allow for …" label (while pending)
        self._allowed: dict[str, str] = {}  # approval id -> the label, approved with that button
        self._notes: dict[str, str] = {}  # approval id -> what the edited prompt adds to the outcome

    def set_admins(self, admins: Sequence[str]) -> None:
        """A SIGHUP reload of `[admin] users`: the next click is judged by the new list."""
        self._admins = list(admins)

    # -- life cycle ------------------------------------------------------------------------

    async def recover(self) -> None:
        """Settle the previous run's pending approvals as `expired` (database only: the
        channels are not connected yet). Call before any channel starts delivering updates."""
        recovered: list[str] = []
        for approval in await self._store.pending_approvals():
            if approval.id in self._waiters:
                continue  # asked in this run (recover() after a request): it is not orphaned
            if approval.message_ref is not None:
                self._refs[approval.id] = approval.message_ref
            if await self._store.decide_approval(approval.id, "expired", None, self.clock.now()):
                log.info("approval %s expired: its requester did not survive the restart", approval.id)
                recovered.append(approval.id)
        self._recovered = recovered

    async def start(self) -> None:
        """Once the channels are connected: edit the prompts `recover()` settled."""
        if self._recovered is None:
            await self.recover()
        recovered, self._recovered = self._recovered or [], []
        for approval_id in recovered:
            await self._finish(approval_id)

    async def stop(self) -> None:
        """Cancel timers and waiters; pending records stay pending for the next start."""
        timers = list(self._timers.values())
        self._timers.clear()
        for timer in timers:
            timer.cancel()
        for timer in timers:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await timer
        for future in self._waiters.values():
            future.cancel()
        self._waiters.clear()

    # -- asking ----------------------------------------------------------------------------

    async def request_approval(
        self,
        title: str,
        details: str,
        requester_group: str,
        expires_in: float = DEFAULT_EXPIRES_IN_S,
        approval_id: str | None = None,
        allow_label: str | None = None,
    ) -> Decision:
        """Ask the owner in the main chat; returns once decided or expired (expiry means deny).

        A caller that must find the prompt again after a restart picks its id up front
        (`new_approval_id()`) and records it before asking. With `allow_label` the prompt has
        a third button that approves too; `allowance_taken(id)` then tells the caller so.
        """
        main = self._registry.main
        if main is None:
            log.warning("approval %r denied: there is no main chat to ask in", title[:80])
            return "denied"
        now = self.clock.now()
        approval = Approval(
            id=approval_id or new_approval_id(),
            title=title[:MAX_TITLE_CHARS],
            details=details[:MAX_DETAILS_CHARS],
            requester_group=requester_group,
            created_at=now,
            expires_at=now + max(0.0, expires_in),
            state="pending",
            decided_by=None,
            decided_at=None,
            chat_id=main.chat_id,
            message_ref=None,
        )
        await self._store.create_approval(approval)
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiters[approval.id] = future
        if allow_label:
            self._offers[approval.id] = allow_label
        try:  # however this ends (even cancelled mid-post), nobody waits any more afterwards
            try:
                channel = self._channel_for(approval.chat_id)
                if channel is None:
                    raise LookupError(f"no channel owns the main chat {approval.chat_id}")
                ref = await channel.send_approval(approval.chat_id, _prompt(approval, allow_label))
                self._refs[approval.id] = ref
                await self._store.set_approval_ref(approval.id, ref)
            except Exception:
                log.exception("could not post approval %s; denying it", approval.id)
                if await self._store.decide_approval(approval.id, "denied", "gateway", self.clock.now()):
                    self._resolve(approval.id, "denied")
            else:
                self._arm(approval.id, approval.expires_at)
                if future.done():  # decided (or expired) before the channel returned the ref
                    await self._finish(approval.id)
            # shield: a cancelled requester must not cancel the decision itself
            return await asyncio.shield(future)
        finally:
            self._waiters.pop(approval.id, None)
            self._offers.pop(approval.id, None)

    def allowance_taken(self, approval_id: str) -> bool:
        """True once if the owner approved `approval_id` with its "Allow for …" button."""
        return self._allowed.pop(approval_id, None) is not None

    # -- deciding --------------------------------------------------------------------------

    async def void(self, approval_id: str, by: str = "gateway") -> bool:
        """Deny a pending approval nobody waits for any more (e.g. its requester did not survive
        a restart, or hung up), and edit its prompt, so a later click cannot look like it did
        anything. `by` is shown as who decided."""
        if not await self._store.decide_approval(approval_id, "denied", by, self.clock.now()):
            return False
        log.info("approval %s voided: its requester is gone", approval_id)
        self._cancel_timer(approval_id)
        self._resolve(approval_id, "denied")
        await self._finish(approval_id)
        return True

    def is_admin(self, user_id: str) -> bool:
        """The same rule as `gateway.commands.is_admin`: the console owner or `[admin] users`."""
        return user_id == OWNER_ID or user_id in self._admins

    async def on_button(self, press: ButtonPress) -> str:
        """A click on Approve/Deny (or `/approve`, `/deny`); returns the text shown to the clicker."""
        main = self._registry.main
        if main is None or press.chat_id != main.chat_id:
            return REFUSE_CHAT
        if not self.is_admin(press.user_id):
            return REFUSE_USER
        approval = await self._store.approval(press.approval_id)
        if approval is None:
            return UNKNOWN
        if approval.chat_id != press.chat_id:
            return REFUSE_CHAT
        label = self._offers.get(approval.id)
        if press.decision == "allow" and label is None and approval.state == "pending":
            return NO_ALLOWANCE
        if approval.state == "pending" and self.clock.now() >= approval.expires_at:
            await self._expire(approval.id)  # a late click, before the timer fired: it cannot count
        elif approval.state == "pending" and approval.id not in self._waiters:
            await self._expire(approval.id)  # nobody waits for it: approving would do nothing
        elif approval.state == "pending":
            state: Decision = "denied" if press.decision == "deny" else "approved"
            now = self.clock.now()
            if await self._store.decide_approval(approval.id, state, press.user_id, now):
                log.info("approval %s %s by %s", approval.id, state, press.user_id)
                if press.decision == "allow" and label is not None:
                    self._allowed[approval.id] = label
                    self._notes[approval.id] = label.lower()
                    self._cancel_timer(approval.id)
                    self._resolve(approval.id, state)
                    await self._finish(approval.id)
                    return f"Approved ({label.lower()}): {approval.title}"
                self._cancel_timer(approval.id)
                self._resolve(approval.id, state)
                await self._finish(approval.id)
                return f"{state.capitalize()}: {approval.title}"
        decided = await self._store.approval(approval.id)
        assert decided is not None
        return f"already decided: {describe(decided)}"

    # -- internals -------------------------------------------------------------------------

    def _channel_for(self, chat_id: str) -> Channel | None:
        return next((c for c in self._channels if c.owns_chat(chat_id)), None)

    def _arm(self, approval_id: str, expires_at: float) -> None:
        self._cancel_timer(approval_id)
        timer = asyncio.create_task(
            self._expire_at(approval_id, expires_at), name=f"approval-expiry:{approval_id}"
        )
        self._timers[approval_id] = timer

        def forget(done: asyncio.Task[None]) -> None:
            if self._timers.get(approval_id) is done:
                del self._timers[approval_id]

        timer.add_done_callback(forget)

    def _cancel_timer(self, approval_id: str) -> None:
        """Stop a timer that has not fired; a timer that is expiring right now finishes its work."""
        timer = self._timers.get(approval_id)
        if timer is not None and timer is not asyncio.current_task():
            del self._timers[approval_id]
            timer.cancel()

    async def _expire_at(self, approval_id: str, expires_at: float) -> None:
        await self.clock.sleep_until(expires_at)
        try:
            await self._expire(approval_id)
        except Exception:  # the next start() retries a record left pending
            log.exception("could not expire approval %s", approval_id)

    async def _expire(self, approval_id: str) -> None:
        if await self._store.decide_approval(approval_id, "expired", None, self.clock.now()):
            log.info("approval %s expired (denied)", approval_id)
            self._cancel_timer(approval_id)
            self._resolve(approval_id, "expired")
            await self._finish(approval_id)

    def _resolve(self, approval_id: str, decision: Decision) -> None:
        future = self._waiters.get(approval_id)
        if future is not None and not future.done():
            future.set_result(decision)

    async def _finish(self, approval_id: str) -> None:
        """Edit the prompt to show the outcome, once; skipped while the ref is still unknown."""
        ref = self._refs.get(approval_id)
        if ref is None or approval_id in self._finished:
            return
        self._finished.add(approval_id)
        approval = await self._store.approval(approval_id)
        if approval is None or approval.state == "pending":
            return
        channel = self._channel_for(approval.chat_id)
        if channel is None:
            log.warning("approval %s: no channel owns %s; prompt not edited", approval_id, approval.chat_id)
            return
        note = self._notes.pop(approval_id, "")
        outcome = ApprovalOutcome(
            state=approval.state,
            decided_by=approval.decided_by,
            decided_at=approval.decided_at if approval.decided_at is not None else self.clock.now(),
            note=note,
        )
        try:
            await channel.finish_approval(approval.chat_id, ref, _prompt(approval), outcome)
        except Exception:  # the decision stands; only the message edit failed
            log.exception("could not edit the prompt of approval %s", approval_id)
        self._refs.pop(approval_id, None)


def _prompt(approval: Approval, allow_label: str | None = None) -> ApprovalPrompt:
    return ApprovalPrompt(
        id=approval.id,
        title=approval.title,
        details=approval.details,
        requester_group=approval.requester_group,
        expires_at=approval.expires_at,
        allow_label=allow_label,
    )
