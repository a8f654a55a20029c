"""The start of both agent runtimes (`python3 -m agent`, `agent.claude_main`), in one place.

Both must come up the same way, in the same order, with the same exit codes (documented in
`agent/__main__.py`): config first (2 when bad: the gateway passed nonsense, retrying cannot
help), then the group folder as working directory, then the egress relay (1: without it the
sandbox has no way to the vault), and last the gateway's IPC socket (1). A change to that
order, or a new step, belongs to both runtimes.
"""

import os
import signal
from collections.abc import Callable
from typing import Union

from . import config, egress_relay
from .ipc_client import IPCClient

Say = Callable[[str, str], None]  # (level, message) to stderr, with the runtime's own prefix


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(0)  # a normal stop: `finally` blocks run, the IPC socket is closed


def prepare(say: Say) -> Union[config.Config, int]:
    """SIGTERM handling, config, working directory and egress relay; an int is the exit code."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cfg = config.load()
    except config.ConfigError as exc:
        say("error", f"configuration: {exc}")
        return 2
    try:
        os.chdir(cfg.group_dir)
    except OSError as exc:
        say("warning", f"cannot chdir to {cfg.group_dir}: {exc}")
    try:
        egress_relay.start(cfg.proxy_port, cfg.vault_socket)
    except OSError as exc:
        say("error", f"egress relay cannot listen on 127.0.0.1:{cfg.proxy_port}: {exc}")
        return 1
    return cfg


def connect(cfg: config.Config, say: Say) -> Union[IPCClient, int]:
    """The gateway's IPC socket; 1 (the exit code) when it cannot be reached."""
    try:
        return IPCClient.connect(cfg.ipc_socket)
    except OSError as exc:
        say("error", f"cannot connect to IPC socket {cfg.ipc_socket}: {exc}")
        return 1
