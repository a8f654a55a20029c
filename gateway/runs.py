"""Executing a group's work: claim a batch, hand it to the group's agent, deliver the answer."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.config import Config
from gateway.ipc import Turn, TurnResult
from gateway.models import ClaimedRun, Group
from gateway.outbox import Outbox
from gateway.prompt import build_prompt
from gateway.sandboxes import SandboxPool
from gateway.store import Store
from groups.sandbox.base import SandboxUnavailable

log = logging.getLogger(__name__)

FINAL_REPLY_SEQ = 0
# Observers get (run, time.perf_counter() when the agent acknowledged it); benchmarks hook in here.
ReceiptObserver = Callable[[ClaimedRun, float], None]


class RunExecutor:
    def __init__(
        self,
        config: Config,
        store: Store,
        pool: SandboxPool,
        outbox: Outbox,
        group_by_folder: Callable[[str], Group | None],
    ) -> None:
        self._config = config
        self._store = store
        self._pool = pool
        self._outbox = outbox
        self._group_by_folder = group_by_folder
        self._seq: dict[int, int] = {}
        self.observers: list[ReceiptObserver] = []

    async def process(self, folder: str) -> None:
        """The queue's lane body: answer every open batch of this group, then go idle."""
        group = self._group_by_folder(folder)
        if group is None:
            return
        try:
            while (claimed := await self._store.claim_run(group, self._config.context_messages)) is not None:
                if not await self._execute(claimed):
                    break
        finally:
            self._pool.lane_finished(folder)

    async def _execute(self, claimed: ClaimedRun) -> bool:
        """Run one batch; False means the sandbox is unavailable and the lane should stop."""
        group = claimed.group
        try:
            live = await self._pool.ensure(group)
        except SandboxUnavailable as exc:
            log.error("group %s: %s", group.folder, exc)
            await self._store.release_run(claimed.run_id, str(exc))
            await self._outbox.post(
                claimed.run_id,
                FINAL_REPLY_SEQ,
                group.chat_id,
                f"⚠️ The assistant could not start: {exc} Your message is kept and will be answered "
                "once this is fixed.",
            )
            return False
        self._seq[claimed.run_id] = 0
        received, result = live.ipc.submit(Turn(claimed.run_id, build_prompt(claimed.messages)))
        received.add_done_callback(lambda f: self._observe(claimed, f))
        outcome = await self._await_result(result)
        self._seq.pop(claimed.run_id, None)
        reply = outcome.text if outcome.text else None
        if outcome.error:
            reply = f"⚠️ {outcome.error}" if not reply else f"{reply}\n\n⚠️ {outcome.error}"
        if reply:
            await self._outbox.post(claimed.run_id, FINAL_REPLY_SEQ, group.chat_id, reply)
        await self._store.finish_run(claimed.run_id, outcome.error)
        return True

    async def _await_result(self, result: asyncio.Future[TurnResult]) -> TurnResult:
        try:
            return await asyncio.wait_for(result, self._config.sandbox.turn_timeout_s)
        except TimeoutError:
            return TurnResult(
                None, f"the assistant did not finish within {self._config.sandbox.turn_timeout_s:g}s"
            )
        except ConnectionError as exc:
            return TurnResult(None, f"the assistant stopped unexpectedly ({exc})")

    def _observe(self, claimed: ClaimedRun, future: asyncio.Future[float]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        for observer in self.observers:
            observer(claimed, future.result())

    async def send_from_agent(self, run_id: int | None, chat_id: str, text: str) -> None:
        """An agent's `send_message`, already authorized by the IPC layer; numbered within its run."""
        if run_id is not None and run_id in self._seq:
            self._seq[run_id] += 1
            seq = self._seq[run_id]
        else:
            run_id, seq = None, 0
        await self._outbox.post(run_id, seq, chat_id, text)
