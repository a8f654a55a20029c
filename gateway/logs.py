"""Logging set-up: everything to a file in the data dir, only warnings to the terminal.

The console channel uses the terminal as a chat, so routine log lines must not
interleave with the conversation.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path


def configure(data_dir: Path, verbose: bool = False) -> Path:
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "gateway.log"
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=10_000_000, backupCount=3)
    file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    term = logging.StreamHandler(sys.stderr)
    term.setLevel(logging.INFO if verbose else logging.WARNING)
    term.setFormatter(logging.Formatter("clawgate: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [file_handler, term]
    root.setLevel(logging.INFO)
    for noisy in ("docker", "urllib3", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path
