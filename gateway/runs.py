"""Executing a group's work: claim a batch, hand it to the group's agent, deliver the answer."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from core.config import Config
from core.models import ClaimedRun, Group
from gateway.budget_state import BudgetGuard
from gateway.disk import DiskGuard
from gateway.failures import backoff_delay, is_transient, retry_after_s
from gateway.faults import crash_point
from gateway.ipc_protocol import Turn, TurnResult
from gateway.outbox import Outbox
from gateway.prompt import build_prompt
from gateway.sandboxes import SandboxPool
from gateway.store import Store
from groups.sandbox.base import SandboxUnavailable
from proxy.leaks import redact

log = logging.getLogger(__name__)

FINAL_REPLY_SEQ = 0
# Observers get (run, time.perf_counter() when the agent acknowledged it); benchmarks hook in here.
ReceiptObserver = Callable[[ClaimedRun, float], None]
# Finish observers get (run, reply text, error) once a run is closed; the scheduler logs task runs here.
FinishObserver = Callable[[ClaimedRun, str | None, str | None], Awaitable[None]]


def _redacted(text: str, where: str) -> str:
    """Agent text is scanned for credential formats before it reaches a chat (see proxy/leaks.py)."""
    clean, found = redact(text)
    if found:
        log.warning("redacted %s from an agent message (%s)", ", ".join(sorted(set(found))), where)
    return clean


class RunExecutor:
    def __init__(
        self,
        config: Config,
        store: Store,
        pool: SandboxPool,
        outbox: Outbox,
        group_by_folder: Callable[[str], Group | None],
        wake: Callable[[str], None],
        notify_main: Callable[[str], Awaitable[None]],
        disk: DiskGuard | None = None,
        budget: BudgetGuard | None = None,
    ) -> None:
        self._config = config
        self._disk = disk
        self._budget = budget
        self._store = store
        self._pool = pool
        self._outbox = outbox
        self._group_by_folder = group_by_folder
        self._wake = wake
        self._notify_main = notify_main
        self._seq: dict[int, int] = {}
        self._retry_timers: dict[str, asyncio.TimerHandle] = {}
        self._outcomes: dict[int, str] = {}  # run id -> how it ended, for the per-turn log line
        self.observers: list[ReceiptObserver] = []
        self.finish_observers: list[FinishObserver] = []

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A SIGHUP reload (gateway.reload): the next claim and the next deferral read it."""
        self._config = config

    async def process(self, folder: str) -> None:
        """The queue's lane body: answer every open batch of this group, then go idle."""
        group = self._group_by_folder(folder)
        if group is None:
            return
        try:
            while (claimed := await self._store.claim_run(group, self._config.context_messages)) is not None:
                started = time.monotonic()
                finished = await self._execute(claimed)
                outcome = self._outcomes.pop(claimed.run_id, "ok" if finished else "retry")
                # One line per turn for the operator: who, how long, how it ended; never content.
                log.info(
                    "turn group=%s run=%d messages=%d duration=%.2fs outcome=%s",
                    folder,
                    claimed.run_id,
                    len(claimed.messages),
                    time.monotonic() - started,
                    outcome,
                )
                if not finished:
                    break
        finally:
            self._pool.lane_finished(folder)

    async def _execute(self, claimed: ClaimedRun) -> bool:
        """Run one batch; False means it failed transiently and the lane should stop (a retry is armed)."""
        group = claimed.group
        crash_point("after_claim")
        if self._disk is not None:
            self._disk.tripped.pop(group.folder, None)  # a trip between turns is not this turn's
        if self._disk is not None and (refusal := await self._disk.check(group)) is not None:
            await self._refuse(claimed, refusal)
            return True
        if self._budget is not None and (refusal := await self._budget.check(group.folder)) is not None:
            await self._refuse(claimed, refusal, stop=False)  # no model call, no retry, no dead letter
            return True
        try:
            live = await self._pool.ensure(group)
        except SandboxUnavailable as exc:
            log.error("group %s: %s", group.folder, exc)
            await self._defer(claimed, f"the assistant could not start: {exc}")
            return False
        self._seq[claimed.run_id] = 0
        self._outbox.show_typing(group.chat_id)
        received, result = live.ipc.submit(Turn(claimed.run_id, build_prompt(claimed.messages)))
        received.add_done_callback(lambda f: self._observe(claimed, f))
        outcome = await self._await_result(result)
        crash_point("after_result")
        self._seq.pop(claimed.run_id, None)
        tripped = self._disk.tripped.pop(group.folder, None) if self._disk is not None else None
        if tripped is not None and outcome.error:  # stopped for disk use: final, not a retry
            outcome = TurnResult(outcome.text, tripped)
        if outcome.error and not outcome.text and tripped is None and is_transient(outcome.error):
            await self._defer(claimed, outcome.error)
            return False
        reply = outcome.text if outcome.text else None
        if outcome.error:
            reply = f"⚠️ {outcome.error}" if not reply else f"{reply}\n\n⚠️ {outcome.error}"
        if reply:
            reply = _redacted(reply, group.folder)
            await self._outbox.post(claimed.run_id, FINAL_REPLY_SEQ, group.chat_id, reply)
        await self._store.finish_run(claimed.run_id, outcome.error)
        crash_point("after_finish")
        await self._notify_finished(claimed, outcome.text, outcome.error)
        return True

    async def _refuse(self, claimed: ClaimedRun, reason: str, stop: bool = True) -> None:
        """A limit says no (disk quota, free-space floor, budget): tell the chat, close the run, no retry."""
        if stop:
            await self._pool.stop(claimed.group.folder)  # a warm sandbox must not keep writing
        await self._outbox.post(claimed.run_id, FINAL_REPLY_SEQ, claimed.group.chat_id, f"⚠️ {reason}")
        await self._store.finish_run(claimed.run_id, reason)
        await self._notify_finished(claimed, None, reason)

    async def _defer(self, claimed: ClaimedRun, reason: str) -> None:
        """A transient failure: give the messages back and retry later, or dead-letter them."""
        group = claimed.group
        await self._store.release_run(claimed.run_id, reason)
        attempts = await self._store.consecutive_deferred(group.folder)
        policy = self._config.retry
        if attempts < policy.max_attempts:
            delay = max(backoff_delay(policy, attempts), retry_after_s(reason) or 0.0)
            log.warning(
                "group %s: %s; retry %d/%d in %.1fs",
                group.folder,
                reason,
                attempts,
                policy.max_attempts - 1,
                delay,
            )
            self._arm_retry(group.folder, delay)
            return
        letter = await self._store.dead_letter_pending(group, reason)
        await self._outbox.post(
            claimed.run_id,
            FINAL_REPLY_SEQ,
            group.chat_id,
            f"⚠️ Sorry, I could not answer after {attempts} attempts ({reason}). "
            "The owner has been told; nothing was lost.",
        )
        if not group.is_main:
            await self._notify_main(
                f"⚠️ dead letter #{letter}: group {group.folder} gave up after "
                f"{attempts} attempts: {reason[:200]}. /retry {letter} or /drop {letter}"
            )
        await self._notify_finished(claimed, None, reason)  # e.g. closes a scheduled task's run log
        self._outcomes[claimed.run_id] = "dead_letter"

    def _arm_retry(self, folder: str, delay: float) -> None:
        previous = self._retry_timers.pop(folder, None)
        if previous is not None:
            previous.cancel()
        self._retry_timers[folder] = asyncio.get_running_loop().call_later(delay, self._retry_due, folder)

    def _retry_due(self, folder: str) -> None:
        self._retry_timers.pop(folder, None)  # gone only once the lane is woken (next_retry_in)
        self._wake(folder)

    def next_retry_in(self) -> float | None:
        """Seconds until the soonest armed retry fires; None when none is waiting.

        A scripted console run must not end while a deferred message still has a retry coming.
        """
        now = asyncio.get_running_loop().time()
        waiting = [max(0.0, t.when() - now) for t in self._retry_timers.values() if not t.cancelled()]
        return min(waiting) if waiting else None

    def cancel_retries(self) -> None:
        for timer in self._retry_timers.values():
            timer.cancel()
        self._retry_timers.clear()

    async def _await_result(self, result: asyncio.Future[TurnResult]) -> TurnResult:
        try:
            return await asyncio.wait_for(result, self._config.sandbox.turn_timeout_s)
        except TimeoutError:
            return TurnResult(
                None, f"the assistant did not finish within {self._config.sandbox.turn_timeout_s:g}s"
            )
        except ConnectionError as exc:
            return TurnResult(None, f"the assistant stopped unexpectedly ({exc})")

    async def _notify_finished(self, claimed: ClaimedRun, text: str | None, error: str | None) -> None:
        self._outcomes[claimed.run_id] = "error" if error else "ok"
        for observer in self.finish_observers:
            try:
                await observer(claimed, text, error)
            except Exception:
                log.exception("a run-finished observer failed for run %d", claimed.run_id)

    def _observe(self, claimed: ClaimedRun, future: asyncio.Future[float]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        crash_point("agent_running")
        for observer in self.observers:
            observer(claimed, future.result())

    async def send_from_agent(self, run_id: int | None, chat_id: str, text: str) -> None:
        """An agent's `send_message`, already authorized by the IPC layer; numbered within its run."""
        if run_id is not None and run_id in self._seq:
            self._seq[run_id] += 1
            seq = self._seq[run_id]
        else:
            run_id, seq = None, 0
        await self._outbox.post(run_id, seq, chat_id, _redacted(text, chat_id))
