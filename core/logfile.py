"""A text stream that rotates its file by size, for a process whose output is a stream, not records.

The vault (proxy/__main__.py) prints through mitmproxy's TermLog and `print(..., file=sys.stderr)`;
pointing both at this stream gives `vault.log` the same rotation as `gateway.log`
(`logging.handlers.RotatingFileHandler` rotates records of one process; this rotates writes).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TextIO

MAX_BYTES = 10_000_000  # the same as gateway.log (gateway.logs)
BACKUPS = 3


class RotatingStream:
    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, backups: int = BACKUPS) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()  # mitmproxy logs from its own threads too
        self._file: TextIO = open(path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def write(self, text: str) -> int:
        with self._lock:
            if self._file.tell() + len(text.encode("utf-8", "replace")) > self.max_bytes:
                self._rotate()
            written = self._file.write(text)
            self._file.flush()  # a killed vault must not take its last lines with it
            return written

    def _rotate(self) -> None:
        self._file.close()
        for n in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
        if self.path.exists():
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "a", encoding="utf-8", errors="replace")  # noqa: SIM115

    def flush(self) -> None:
        with self._lock:
            self._file.flush()

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._file.fileno()

    @property
    def encoding(self) -> str:
        return "utf-8"
