"""Whether `clawgate run` talks on its terminal, reads a script from stdin, or runs as a daemon.

The rule (README "Running as a service"):
- `[console] enabled` set in config.toml wins, either way;
- otherwise a terminal on stdin means the interactive console, and a pipe or a regular file
  means a scripted run (`printf 'hi\\n' | clawgate run` answers and exits when input ends);
- anything else — /dev/null (what systemd, nohup and `docker run` without -i give), a closed
  stdin, a socket — means a daemon: no console, it runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import os
import stat
from typing import Literal

from core.config import Config, ConsoleConfig

Mode = Literal["interactive", "scripted", "daemon", "off"]
StdinKind = Literal["tty", "stream", "none"]


def stdin_kind(fd: int = 0) -> StdinKind:
    """tty, stream (pipe/FIFO or regular file: something that carries input and ends), or none."""
    try:
        if os.isatty(fd):
            return "tty"
        mode = os.fstat(fd).st_mode
    except OSError:  # closed
        return "none"
    return "stream" if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) else "none"


def decide(config: Config, kind: StdinKind) -> Mode:
    explicit = "console" in config.model_fields_set and "enabled" in config.console.model_fields_set
    if explicit and not config.console.enabled:
        return "off"
    if kind == "tty":
        return "interactive"
    if kind == "stream" or explicit:
        return "scripted"
    return "daemon"


def effective(config: Config, mode: Mode) -> Config:
    """The config the gateway starts with: the console switched off in daemon mode."""
    if mode != "daemon":
        return config
    console = ConsoleConfig(enabled=False, main_chat=config.console.main_chat)
    return config.model_copy(update={"console": console})
