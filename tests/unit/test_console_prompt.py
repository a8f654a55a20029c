"""The console's `> ` prompt: shown at a terminal as the README's first-run example promises,
never in a piped run whose output a program reads (README "The two commands")."""

from __future__ import annotations

import asyncio
import io

from channels.console import ERASE_LINE, PROMPT, ConsoleChannel
from core.models import InboundMessage


class _Stream(io.StringIO):
    """A stdin/stdout stand-in that says whether it is a terminal."""

    def __init__(self, text: str = "", tty: bool = False) -> None:
        super().__init__(text)
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


async def _converse(stdin: _Stream, stdout: _Stream) -> list[str]:
    """Feed stdin's lines through the channel, answering each one, until end of input."""
    received: list[str] = []
    done = asyncio.Event()
    channel = ConsoleChannel("console:main", "Andy", on_eof=done.set, stdin=stdin, stdout=stdout)

    async def on_message(message: InboundMessage) -> None:
        received.append(message.text)
        await channel.send(message.chat_id, f"you said {message.text}")

    await channel.connect(on_message)
    await asyncio.wait_for(done.wait(), 5)
    await channel.disconnect()
    return received


async def test_a_terminal_shows_the_prompt_and_keeps_it_on_the_last_line() -> None:
    stdout = _Stream(tty=True)
    received = await _converse(_Stream("hello\n\nbye\n", tty=True), stdout)

    assert received == ["hello", "bye"]
    out = stdout.getvalue()
    # The greeting ends in the prompt; each reply erases the prompt line and shows the prompt again.
    assert out.startswith(f"{ERASE_LINE}clawgate console")
    greeting, rest = out.split("\n", 1)
    assert rest.startswith(PROMPT)
    assert f"{ERASE_LINE}Andy: you said hello\n{PROMPT}" in out
    assert f"{ERASE_LINE}Andy: you said bye\n{PROMPT}" in out
    # What the owner sees once the terminal has applied the control codes: the README's example.
    screen = [line.rsplit("\r", 1)[-1].replace("\x1b[K", "") for line in out.split("\n")]
    assert "Andy: you said hello" in screen
    assert screen[-1] == ""  # Ctrl-D ends the prompt line


async def test_a_piped_run_prints_replies_only() -> None:
    stdout = _Stream(tty=False)
    received = await _converse(_Stream("what is 2+2?\n", tty=False), stdout)

    assert received == ["what is 2+2?"]
    assert stdout.getvalue() == "Andy: you said what is 2+2?\n"


async def test_a_terminal_with_redirected_output_gets_no_prompt_or_control_codes() -> None:
    stdout = _Stream(tty=False)
    await _converse(_Stream("hi\n", tty=True), stdout)

    out = stdout.getvalue()
    assert PROMPT not in out and "\x1b" not in out and "\r" not in out
    assert out.endswith("Andy: you said hi\n")
