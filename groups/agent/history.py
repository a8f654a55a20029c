"""Per-group conversation history and its summary, persisted so a container restart keeps context.

Stored at ``<group>/.clawgate/history.json`` as ``{"version", "provider", "summary",
"compacted_turns", "messages"}``. Messages are kept in the provider's native shapes; a file
written for another provider keeps its summary (plain text) but not its messages, which are
ignored rather than translated. Writes are atomic (temp file + rename) so a crash mid-write
never leaves a half file.

History is not cut by count any more: when it passes its budget, the older turns are folded
into the summary by the model (``groups.agent.compaction``, driven by ``turn.TurnRunner``),
so nothing leaves the conversation without a trace. Turns are only ever taken whole, at a
user-prompt boundary, so tool_use/tool_result pairs are never split.

The gateway's ``/compact <group>`` asks for a compaction by creating ``compact-requested``
next to the history; the next turn does it and removes the file.
"""

import contextlib
import json
import os
import tempfile
from typing import Any, Callable, Dict, List, Tuple

FORMAT_VERSION = 1
CHARS_PER_TOKEN = 4  # the usual rough estimate for English text and JSON
COMPACT_REQUEST = "compact-requested"

Message = Dict[str, Any]
IsTurnStart = Callable[[Message], bool]


def estimate_tokens(value: Any) -> int:
    """A rough token count of anything JSON-able (characters / 4), the same for every provider."""
    return len(json.dumps(value, ensure_ascii=False)) // CHARS_PER_TOKEN + 1


def turn_starts(messages: List[Message], is_turn_start: IsTurnStart) -> List[int]:
    return [i for i, m in enumerate(messages) if is_turn_start(m)]


def from_first_turn(messages: List[Message], is_turn_start: IsTurnStart) -> List[Message]:
    """``messages`` from the first turn start on (valid to send as-is), or ``[]``."""
    starts = turn_starts(messages, is_turn_start)
    return messages[starts[0] :] if starts else []


def split_turns(
    messages: List[Message], is_turn_start: IsTurnStart, keep_tokens: int
) -> Tuple[List[Message], List[Message]]:
    """``(older, newer)``: ``newer`` is the newest whole turns that fit in ``keep_tokens``.

    ``newer`` may be empty (the newest turn alone is bigger); ``older + newer`` is the input
    from its first turn start on.
    """
    messages = from_first_turn(messages, is_turn_start)
    starts = turn_starts(messages, is_turn_start)
    cut = len(messages)
    size = 0
    for start in reversed(starts):
        size += estimate_tokens(messages[start:cut])
        if size > keep_tokens:
            break
        cut = start
    return messages[:cut], messages[cut:]


class History:
    """What one group remembers: a summary of compacted turns plus the recent turns verbatim."""

    __slots__ = ("summary", "messages", "compacted_turns")

    def __init__(self, summary: str = "", messages: Any = None, compacted_turns: int = 0) -> None:
        self.summary = summary
        self.messages: List[Message] = list(messages or [])
        self.compacted_turns = compacted_turns


class HistoryStore:
    """Loads and saves one group's history for one provider."""

    def __init__(self, group_dir: str, provider: str, is_turn_start: IsTurnStart) -> None:
        self.dir = os.path.join(group_dir, ".clawgate")
        self.path = os.path.join(self.dir, "history.json")
        self.request_path = os.path.join(self.dir, COMPACT_REQUEST)
        self.provider = provider
        self.is_turn_start = is_turn_start

    def load(self) -> History:
        """The stored history; empty if absent or corrupt, summary only if from another provider.

        A corrupt file is kept as ``history.json.bak`` for inspection, never fatal.
        """
        try:
            with open(self.path, encoding="utf-8") as fh:
                data = json.load(fh)
        except FileNotFoundError:
            return History()
        except (OSError, ValueError):
            self._quarantine()
            return History()
        if not isinstance(data, dict) or not isinstance(data.get("messages"), list):
            self._quarantine()
            return History()
        if data.get("version") != FORMAT_VERSION:
            return History()  # another format: start fresh, the next save replaces it
        summary = data.get("summary", "")
        compacted = data.get("compacted_turns", 0)
        if not isinstance(summary, str) or not isinstance(compacted, int) or isinstance(compacted, bool):
            self._quarantine()
            return History()
        if data.get("provider") != self.provider:
            return History(summary, [], compacted)  # the summary is plain text: it carries over
        messages = data["messages"]
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            self._quarantine()
            return History(summary, [], compacted)
        return History(summary, from_first_turn(messages, self.is_turn_start), compacted)

    def save(self, history: History) -> None:
        """Atomically write ``history`` (from its first turn start on)."""
        os.makedirs(self.dir, exist_ok=True)
        payload = {
            "version": FORMAT_VERSION,
            "provider": self.provider,
            "summary": history.summary,
            "compacted_turns": history.compacted_turns,
            "messages": from_first_turn(history.messages, self.is_turn_start),
        }
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

    def compact_requested(self) -> bool:
        """True when the owner asked for a compaction (``/compact``) that has not happened yet."""
        return os.path.lexists(self.request_path)

    def clear_compact_request(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.request_path)

    def _quarantine(self) -> None:
        with contextlib.suppress(OSError):
            os.replace(self.path, self.path + ".bak")
