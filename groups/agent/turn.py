"""One agent turn: prompt in, final text or a short error out, history updated.

Why separate from the main loop: this is where failures are contained. Whatever happens in
the model or the tools, the caller gets ``(text, error)`` with ``error`` a one-line,
chat-safe string; tracebacks only go to the log callback.
"""

import traceback
from typing import Callable, List, Optional, Tuple

from . import llm
from .history import HistoryStore, Message
from .ipc_client import IPCClosed
from .transport import ModelError

LogFn = Callable[[str, str], None]


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
    ) -> None:
        self.provider = provider
        self.store = store
        self.system_prompt = system_prompt
        self.execute = execute
        self.log = log
        self.max_iterations = max_iterations
        self.history: List[Message] = store.load()

    def run(self, prompt: str) -> Tuple[Optional[str], Optional[str]]:
        """Run the tool loop for ``prompt``; return ``(final_text, error)``.

        On failure the turn's partial tool exchange is dropped and replaced by the prompt plus
        a short assistant note, keeping history well-formed and the model aware it failed.
        """
        from .tools import TOOL_SPECS

        before = self.history
        text: Optional[str] = None
        error: Optional[str] = None
        try:
            text, messages = llm.run_tool_loop(
                self.provider,
                self.system_prompt(),
                before,
                prompt,
                self.execute,
                TOOL_SPECS,
                self.max_iterations,
            )
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
        try:
            self.history = self.store.save(messages)
        except OSError as exc:
            self.history = messages
            self.log("warning", f"could not save history: {exc}")
        return text, error
