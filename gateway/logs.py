"""Logging set-up: everything to a file in the data dir, only warnings to the terminal.

The console channel uses the terminal as a chat, so routine log lines must not
interleave with the conversation. Both handlers format through `RedactingFormatter`,
so a secret value a library put in a message or a traceback never reaches either.
A record logged with `extra=FILE_ONLY` (a failed start-up's traceback) stays out of
the terminal, which gets that failure as one line instead.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from core.redaction import RedactingFormatter

FILE_ONLY = {"file_only": True}


def _not_file_only(record: logging.LogRecord) -> bool:
    return not getattr(record, "file_only", False)


def configure(data_dir: Path, verbose: bool = False) -> Path:
    log_dir = data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "gateway.log"
    file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=10_000_000, backupCount=3)
    file_handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    term = logging.StreamHandler(sys.stderr)
    term.setLevel(logging.INFO if verbose else logging.WARNING)
    term.setFormatter(RedactingFormatter("clawgate: %(levelname)s: %(message)s"))
    term.addFilter(_not_file_only)
    root = logging.getLogger()
    root.handlers[:] = [file_handler, term]
    root.setLevel(logging.INFO)
    for noisy in ("docker", "urllib3", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    return path
