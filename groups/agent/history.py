"""Per-group conversation history, persisted so a container restart keeps context.

Stored per provider (its native message shapes) at ``<group>/.clawgate/history.json``; a
file written for another provider is ignored rather than translated. Writes are atomic
(temp file + rename) so a crash mid-write never leaves a half file. History is trimmed only
at a user-prompt boundary so tool_use/tool_result pairs are never split.
"""

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, Dict, List

FORMAT_VERSION = 1
MAX_MESSAGES = 40
MAX_CHARS = 400_000

Message = Dict[str, Any]


def trim(
    messages: List[Message],
    is_turn_start: Callable[[Message], bool],
    max_messages: int = MAX_MESSAGES,
    max_chars: int = MAX_CHARS,
) -> List[Message]:
    """Drop whole leading turns until within both bounds; the newest turn is always kept.

    The result always starts at a turn start (or is empty), so it is valid to send as-is.
    """
    starts = [i for i, m in enumerate(messages) if is_turn_start(m)]
    if not starts:
        return []
    sizes = [len(json.dumps(m, ensure_ascii=False)) for m in messages]
    total = sum(sizes[starts[0] :])
    cut = starts[0]
    for idx, start in enumerate(starts):
        cut = start
        if len(messages) - start <= max_messages and total <= max_chars:
            break
        if idx + 1 < len(starts):
            total -= sum(sizes[start : starts[idx + 1]])
    return messages[cut:]


class HistoryStore:
    """Loads and saves one group's history for one provider."""

    def __init__(
        self,
        group_dir: str,
        provider: str,
        is_turn_start: Callable[[Message], bool],
        max_messages: int = MAX_MESSAGES,
        max_chars: int = MAX_CHARS,
    ) -> None:
        self.dir = os.path.join(group_dir, ".clawgate")
        self.path = os.path.join(self.dir, "history.json")
        self.provider = provider
        self.is_turn_start = is_turn_start
        self.max_messages = max_messages
        self.max_chars = max_chars

    def load(self) -> List[Message]:
        """The stored messages, or ``[]`` if absent, from another provider, or corrupt.

        A corrupt file is kept as ``history.json.bak`` for inspection, never fatal.
        """
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            self._quarantine()
            return []
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            self._quarantine()
            return []
        if data.get("version") != FORMAT_VERSION or data.get("provider") != self.provider:
            return []  # written by another provider/format: start fresh, next save replaces it
        messages = data["messages"]
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            self._quarantine()
            return []
        return trim(messages, self.is_turn_start, self.max_messages, self.max_chars)

    def save(self, messages: List[Message]) -> List[Message]:
        """Trim and atomically write ``messages``; return what was kept."""
        kept = trim(messages, self.is_turn_start, self.max_messages, self.max_chars)
        os.makedirs(self.dir, exist_ok=True)
        payload = {"version": FORMAT_VERSION, "provider": self.provider, "messages": kept}
        fd, tmp = tempfile.mkstemp(prefix=".history.", suffix=".tmp", dir=self.dir)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(payload, fh, ensure_ascii=False)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return kept

    def _quarantine(self) -> None:
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path + ".bak")
