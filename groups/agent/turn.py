"""One agent turn: prompt in, final text or a short error out, history updated.

Why separate from the main loop: this is where failures are contained. Whatever happens in
the model or the tools, the caller gets ``(text, error)`` with ``error`` a one-line,
chat-safe string; tracebacks only go to the log callback.

It is also where the history is kept within its budget: before a turn whose request would
pass ``budget_tokens`` (or when the owner asked with ``/compact``), the older turns are
summarised by the model (``groups.agent.compaction``) and the summary replaces them. A
failed compaction never fails the turn; only if it keeps failing and the history grows
far past its budget are the oldest turns dropped, and the summary says so.
"""

import traceback
from typing import Callable, List, Optional, Tuple

from . import compaction, llm
from .history import History, HistoryStore, Message, estimate_tokens, split_turns
from .ipc_client import IPCClosed
from .transport import ModelError

LogFn = Callable[[str, str], None]

DEFAULT_BUDGET_TOKENS = 40_000
# After a compaction the newest turns that fit in half the budget stay verbatim, so the
# next compaction is several turns away rather than due again at once.
KEEP_FRACTION = 2
# With compaction failing, history may grow to this many budgets before turns are dropped.
HARD_CAP_BUDGETS = 4


class TurnRunner:
    """Holds the in-memory history between turns and persists it after each one."""

    def __init__(
        self,
        provider: llm.Provider,
        store: HistoryStore,
        system_prompt: Callable[[], str],
        execute: llm.Executor,
        log: LogFn,
        max_iterations: int = llm.MAX_ITERATIONS,
        budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    ) -> None:
        self.provider = provider
        self.store = store
        self.system_prompt = system_prompt
        self.execute = execute
        self.log = log
        self.max_iterations = max_iterations
        self.budget_tokens = budget_tokens
        loaded = store.load()
        self.history: List[Message] = loaded.messages
        self.summary = loaded.summary
        self.compacted_turns = loaded.compacted_turns
        self.usage = llm.UsageMeter()  # the last turn's, read by the main loop after run()

    def run(self, prompt: str) -> Tuple[Optional[str], Optional[str]]:
        """Run the tool loop for ``prompt``; return ``(final_text, error)``.

        On failure the turn's partial tool exchange is dropped and replaced by the prompt plus
        a short assistant note, keeping history well-formed and the model aware it failed.
        """
        from .tool_specs import TOOL_SPECS

        self.usage = llm.UsageMeter()
        self._compact_if_due(prompt)
        before = self.history
        prefix = compaction.summary_messages(self.provider, self.summary)
        text: Optional[str] = None
        error: Optional[str] = None
        messages: List[Message] = []
        try:
            text, sent = llm.run_tool_loop(
                self.provider,
                self.system_prompt(),
                [*prefix, *before],
                prompt,
                self.execute,
                TOOL_SPECS,
                self.max_iterations,
                self.usage,
            )
            messages = sent[len(prefix) :]
        except IPCClosed:
            raise
        except ModelError as exc:
            error = exc.summary()
            self.log("warning", f"turn failed: {error}")
        except Exception as exc:  # noqa: BLE001 - one bad turn must not kill the runtime
            error = f"internal error: {type(exc).__name__}"
            self.log("error", "turn crashed:\n" + traceback.format_exc())
        if error is not None:
            messages = [
                *before,
                self.provider.user_message(prompt),
                self.provider.assistant_message(f"[this turn failed: {error}]"),
            ]
        self.history = messages
        self._save()
        return text, error

    # -- compaction ---------------------------------------------------------------------

    def _request_tokens(self, prompt: str) -> int:
        prefix = compaction.summary_messages(self.provider, self.summary)
        return estimate_tokens([*prefix, *self.history, self.provider.user_message(prompt)])

    def _compact_if_due(self, prompt: str) -> None:
        forced = self.store.compact_requested()
        if not forced and self._request_tokens(prompt) <= self.budget_tokens:
            return
        try:
            self.compact(keep_tokens=0 if forced else self.budget_tokens // KEEP_FRACTION)
        except IPCClosed:
            raise
        except Exception as exc:  # noqa: BLE001 - a failed compaction must not fail the turn
            reason = exc.summary() if isinstance(exc, ModelError) else f"internal error: {type(exc).__name__}"
            if not isinstance(exc, ModelError):
                self.log("error", "compaction crashed:\n" + traceback.format_exc())
            self.log("warning", f"could not compact the history ({reason}); it is kept as it is")
            self._enforce_hard_cap(reason)
            return
        if forced:
            self.store.clear_compact_request()

    def compact(self, keep_tokens: int) -> int:
        """Fold all but the newest ``keep_tokens`` of history into the summary; turns folded.

        Raises ModelError when the model cannot write the summary (history is then unchanged).
        """
        older, kept = split_turns(self.history, self.provider.is_turn_start, keep_tokens)
        if not older:
            return 0
        turns = sum(1 for m in older if self.provider.is_turn_start(m))
        self.summary = compaction.summarise(
            self.provider, self.summary, older, self.budget_tokens, self.usage
        )
        self.history = kept
        self.compacted_turns += turns
        self.log(
            "info",
            f"compacted {turns} older turn(s) into a summary of {len(self.summary)} characters; "
            f"{sum(1 for m in kept if self.provider.is_turn_start(m))} recent turn(s) kept verbatim",
        )
        self._save()
        return turns

    def _enforce_hard_cap(self, reason: str) -> None:
        """Compaction failed and history is far past its budget: drop its oldest turns, loudly."""
        if estimate_tokens(self.history) <= self.budget_tokens * HARD_CAP_BUDGETS:
            return
        keep = self.budget_tokens // KEEP_FRACTION
        older, kept = split_turns(self.history, self.provider.is_turn_start, keep)
        dropped = sum(1 for m in older if self.provider.is_turn_start(m))
        if not dropped:
            return
        note = f"[{dropped} earlier turn(s) were dropped without a summary; summarising failed: {reason}]"
        self.summary = f"{self.summary}\n{note}".strip()
        self.history = kept
        self.compacted_turns += dropped
        self.log("warning", f"history is over {HARD_CAP_BUDGETS}x its budget: {note}")
        self._save()

    def _save(self) -> None:
        try:
            self.store.save(History(self.summary, self.history, self.compacted_turns))
        except OSError as exc:
            self.log("warning", f"could not save history: {exc}")
