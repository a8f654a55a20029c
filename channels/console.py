"""The terminal as the main chat.

Interactive (stdin a terminal): a greeting, a `> ` prompt, replies printed as `Andy: …`.
Replies arrive while the owner may be typing, so every output first erases the prompt line
and then shows the prompt again below it: the prompt is always the last line. The prompt
needs stdout to be a terminal too; redirected output gets no prompt and no control codes.
Scripted (stdin not a tty): one message per input line, each reply printed as it arrives;
end of input is reported through `on_eof` so the gateway can finish the pending work and exit.
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from channels.base import ApprovalOutcome, ApprovalPrompt, OnButton, OnMessage
from channels.delivery import handed_off
from core.models import InboundMessage

PREFIX = "console:"
PROMPT = "> "
ERASE_LINE = "\r\x1b[K"  # back to column 0, clear to the end of the line (the prompt being shown)
OWNER_ID = "console:owner"  # the person at the terminal: always an admin of the main chat


class ConsoleChannel:
    name = "console"

    def __init__(
        self,
        chat_id: str,
        assistant_name: str,
        on_eof: Callable[[], None] | None = None,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
    ) -> None:
        self.chat_id = chat_id
        self._assistant = assistant_name
        self._on_eof = on_eof
        self._stdin = stdin or sys.stdin
        self._stdout = stdout or sys.stdout
        self._interactive = self._stdin.isatty()
        # A prompt only makes sense where a person reads and types: stdout redirected to a file
        # must not collect prompts and escape codes.
        self._prompting = self._interactive and self._stdout.isatty()
        self._ids = itertools.count(1)
        self._session = f"{int(time.time() * 1000)}"
        self._pump: asyncio.Task[None] | None = None
        self._on_button: OnButton | None = None
        self.connected = False

    def owns_chat(self, chat_id: str) -> bool:
        return chat_id.startswith(PREFIX)

    async def connect(self, on_message: OnMessage, on_button: OnButton | None = None) -> None:
        # The terminal has no buttons: the owner answers a prompt with /approve or /deny.
        self._on_button = on_button
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str | None] = asyncio.Queue()

        def read() -> None:  # a daemon thread: a blocked read must never hold up shutdown
            for line in self._stdin:
                loop.call_soon_threadsafe(lines.put_nowait, line)
            loop.call_soon_threadsafe(lines.put_nowait, None)

        threading.Thread(target=read, name="console-stdin", daemon=True).start()
        self._pump = asyncio.create_task(self._consume(lines, on_message), name="console")
        self.connected = True
        if self._interactive:
            self._write(f"clawgate console — you are the owner; talk to {self._assistant}. Ctrl-D to quit.\n")

    async def _consume(self, lines: asyncio.Queue[str | None], on_message: OnMessage) -> None:
        while (line := await lines.get()) is not None:
            # Enter moved the terminal to a fresh line: the prompt goes there, ready for the next message.
            self._show_prompt()
            text = line.rstrip("\r\n")
            if not text.strip():
                continue
            await on_message(
                InboundMessage(
                    chat_id=self.chat_id,
                    external_id=f"{self._session}-{next(self._ids)}",
                    sender_id=OWNER_ID,
                    sender_name="owner",
                    text=text,
                    timestamp=time.time(),
                    channel=self.name,
                    chat_name="console",
                )
            )
        if self._prompting:  # Ctrl-D left the cursor after the prompt
            self._stdout.write("\n")
            self._stdout.flush()
        if self._on_eof is not None:
            self._on_eof()

    async def disconnect(self) -> None:
        self.connected = False
        if self._pump is not None:
            self._pump.cancel()

    async def send(self, chat_id: str, text: str) -> None:
        await handed_off()  # the write below is the delivery (see channels/delivery.py)
        self._write(f"{self._assistant}: {text}\n")

    async def send_approval(self, chat_id: str, prompt: ApprovalPrompt) -> str:
        expires = time.strftime("%H:%M:%S", time.localtime(prompt.expires_at))
        details = "".join(f"  {line}\n" for line in prompt.details.splitlines())
        self._write(
            f"\n=== approval needed [{prompt.id}] ===\n"
            f"{prompt.title}\n{details}"
            f"requested by group {prompt.requester_group}; expires at {expires} (then denied)\n"
            f"reply /approve {prompt.id} or /deny {prompt.id}\n"
        )
        return prompt.id

    async def finish_approval(
        self, chat_id: str, ref: str, prompt: ApprovalPrompt, outcome: ApprovalOutcome
    ) -> None:
        when = time.strftime("%H:%M:%S", time.localtime(outcome.decided_at))
        who = f" by {outcome.decided_by}" if outcome.decided_by else ""
        self._write(f"=== approval [{prompt.id}] {prompt.title}: {outcome.state}{who} at {when} ===\n")

    def _show_prompt(self) -> None:
        if self._prompting:
            self._stdout.write(PROMPT)
            self._stdout.flush()

    def _write(self, text: str) -> None:
        # Interactive: the prompt is on the last line; the output replaces it and it is shown again below.
        self._stdout.write(f"{ERASE_LINE}{text}{PROMPT}" if self._prompting else text)
        self._stdout.flush()
