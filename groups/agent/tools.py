"""The agent's tools: their executor (the JSON-schema specs both providers get: tool_specs.py).

Every tool returns ``(text, is_error)`` and never raises (except IPCClosed, which means the
runtime must stop): a failing tool is information for the model, not a crash. Outputs are
capped because they go straight back into the model context and into the history file.
The sandbox, not this code, is the security boundary, so paths are not jailed here.
"""

import contextlib
import json
import os
import signal
import subprocess
import threading
from typing import Any, Callable, Dict, List, Optional, Tuple

from .ipc_client import IPCClosed, IPCError
from .tool_specs import DEFAULT_READ_LINES, DEFAULT_SHELL_TIMEOUT, MAX_SHELL_TIMEOUT, TOOL_SPECS

OUTPUT_CAP = 30_000
MAX_LIST_ENTRIES = 1000

ToolResult = Tuple[str, bool]


class ToolInputError(Exception):
    """Bad arguments from the model; reported back as an error result."""


def cap_text(text: str, cap: int = OUTPUT_CAP) -> str:
    """Keep the head and tail of ``text``: errors usually sit at the end, context at the start."""
    if len(text) <= cap:
        return text
    half = cap // 2
    omitted = len(text) - 2 * half
    return f"{text[:half]}\n[... {omitted} characters truncated ...]\n{text[-half:]}"


class _CappedReader:
    """Drains a pipe keeping only head + tail bytes so a chatty command cannot eat memory."""

    def __init__(self, stream: Any, cap: int) -> None:
        self._stream = stream
        self._half = cap // 2
        self.head = bytearray()
        self.tail = bytearray()
        self.dropped = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while True:
                chunk = self._stream.read1(65536)
                if not chunk:
                    return
                room = self._half - len(self.head)
                if room > 0:
                    self.head += chunk[:room]
                    chunk = chunk[room:]
                if chunk:
                    self.tail += chunk
                    excess = len(self.tail) - self._half
                    if excess > 0:
                        del self.tail[:excess]
                        self.dropped += excess
        except (OSError, ValueError):
            return

    def text(self) -> str:
        head = self.head.decode("utf-8", "replace")
        tail = self.tail.decode("utf-8", "replace")
        if self.dropped:
            return f"{head}\n[... {self.dropped} bytes truncated ...]\n{tail}"
        return head + tail


class Toolbox:
    """Executes tool calls for one group; ``send_message`` and ``ipc_call`` (task tools) are the IPC hooks."""

    def __init__(
        self,
        group_dir: str,
        send_message: Callable[[str], None],
        output_cap: int = OUTPUT_CAP,
        ipc_call: Optional[Callable[[str, Dict[str, Any]], Dict[str, Any]]] = None,
    ):
        self.group_dir = group_dir
        self._send_message = send_message
        self.output_cap = output_cap
        self._ipc_call = ipc_call

    def execute(self, name: str, args: Optional[Dict[str, Any]]) -> ToolResult:
        """Run tool ``name``; any failure becomes ``(message, True)``."""
        handler = getattr(self, f"_tool_{name}", None)
        if handler is None or name not in _TOOL_NAMES:
            return f"unknown tool: {name!r}", True
        if not isinstance(args, dict):
            return "tool arguments must be a JSON object", True
        try:
            return handler(args)
        except IPCClosed:
            raise
        except ToolInputError as exc:
            return str(exc), True
        except OSError as exc:
            return f"{type(exc).__name__}: {exc}", True
        except Exception as exc:  # noqa: BLE001 - a tool must never kill the turn
            return f"tool {name} failed: {type(exc).__name__}: {exc}", True

    # -- helpers -------------------------------------------------------------------------

    def _path(self, args: Dict[str, Any], key: str = "path", default: Optional[str] = None) -> str:
        value = args.get(key, default)
        if not isinstance(value, str) or not value:
            raise ToolInputError(f"'{key}' must be a non-empty string")
        return os.path.normpath(os.path.join(self.group_dir, os.path.expanduser(value)))

    @staticmethod
    def _str(args: Dict[str, Any], key: str) -> str:
        value = args.get(key)
        if not isinstance(value, str):
            raise ToolInputError(f"'{key}' must be a string")
        return value

    @staticmethod
    def _int(args: Dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
        value = args.get(key, default)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ToolInputError(f"'{key}' must be an integer")
        return max(lo, min(hi, int(value)))

    # -- tools ---------------------------------------------------------------------------

    def _tool_shell(self, args: Dict[str, Any]) -> ToolResult:
        command = self._str(args, "command")
        timeout = self._int(args, "timeout_s", DEFAULT_SHELL_TIMEOUT, 1, MAX_SHELL_TIMEOUT)
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.group_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group, so a timeout kills children too
        )
        reader = _CappedReader(proc.stdout, self.output_cap)
        timed_out = False
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc.pid)
            code = proc.wait()
        # Background children that escaped the group may keep the pipe open; don't wait forever.
        _kill_group(proc.pid)
        reader.thread.join(timeout=2.0)
        if proc.stdout is not None:
            proc.stdout.close()
        output = reader.text()
        if timed_out:
            sep = "" if not output or output.endswith("\n") else "\n"
            return f"{output}{sep}[timed out after {timeout}s; process group killed]", True
        sep = "" if not output or output.endswith("\n") else "\n"
        return f"{output}{sep}[exit code {code}]", False

    def _tool_read_file(self, args: Dict[str, Any]) -> ToolResult:
        path = self._path(args)
        offset = self._int(args, "offset", 1, 1, 1 << 62)
        limit = self._int(args, "limit", DEFAULT_READ_LINES, 1, 1 << 62)
        if os.path.isdir(path):
            return f"{path} is a directory; use list_files", True
        lines: List[str] = []
        total = 0
        size = 0
        with open(path, encoding="utf-8", errors="replace") as fh:
            for total, line in enumerate(fh, start=1):
                if offset <= total < offset + limit and size <= self.output_cap:
                    lines.append(line)
                    size += len(line)
        text = cap_text("".join(lines), self.output_cap)
        shown_end = offset + len(lines) - 1
        if lines and (offset > 1 or shown_end < total):
            text += f"\n[lines {offset}-{shown_end} of {total}]"
        elif not lines and total:
            text = f"[file has {total} lines; offset {offset} is past the end]"
        return text, False

    def _tool_write_file(self, args: Dict[str, Any]) -> ToolResult:
        path = self._path(args)
        content = self._str(args, "content")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content)
        return f"wrote {len(content.encode('utf-8'))} bytes to {path}", False

    def _tool_edit_file(self, args: Dict[str, Any]) -> ToolResult:
        path = self._path(args)
        old = self._str(args, "old")
        new = self._str(args, "new")
        if not old:
            return "'old' must not be empty", True
        with open(path, encoding="utf-8") as fh:
            content = fh.read()
        count = content.count(old)
        if count == 0:
            return f"'old' text not found in {path}", True
        if count > 1:
            return f"'old' text occurs {count} times in {path}; include more context so it is unique", True
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(content.replace(old, new, 1))
        return f"edited {path}", False

    def _tool_list_files(self, args: Dict[str, Any]) -> ToolResult:
        path = self._path(args, default=".")
        entries = []
        with os.scandir(path) as it:
            for entry in it:
                try:
                    if entry.is_dir():
                        entries.append(entry.name + "/")
                    else:
                        entries.append(f"{entry.name}\t{entry.stat().st_size}")
                except OSError:
                    entries.append(entry.name + "\t?")
        entries.sort()
        extra = len(entries) - MAX_LIST_ENTRIES
        shown = entries[:MAX_LIST_ENTRIES]
        if extra > 0:
            shown.append(f"[... {extra} more entries]")
        body = "\n".join(shown) if shown else "(empty directory)"
        return cap_text(f"{path}:\n{body}", self.output_cap), False

    def _tool_send_message(self, args: Dict[str, Any]) -> ToolResult:
        text = self._str(args, "text")
        if not text.strip():
            return "'text' must not be empty", True
        try:
            self._send_message(text)
        except IPCClosed:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. IPCError from the gateway
            return f"message not sent: {exc}", True
        return "message sent", False

    # -- scheduled tasks (the gateway validates and authorizes; errors come back as tool errors) --

    def _task_call(self, method: str, params: Dict[str, Any]) -> ToolResult:
        if self._ipc_call is None:
            return f"{method} is not available here (no connection to the gateway)", True
        try:
            result = self._ipc_call(method, params)
        except IPCClosed:
            raise
        except IPCError as exc:
            return f"{method} refused by the gateway ({exc.code}): {exc.message}", True
        except Exception as exc:  # noqa: BLE001
            return f"{method} failed: {exc}", True
        return cap_text(json.dumps(result, ensure_ascii=False, indent=1), self.output_cap), False

    @staticmethod
    def _task_id(args: Dict[str, Any]) -> Any:
        value = args.get("task_id")
        if isinstance(value, bool) or not isinstance(value, (int, str)) or value == "":
            raise ToolInputError("'task_id' must be the task's id (an integer)")
        return value

    def _tool_schedule_task(self, args: Dict[str, Any]) -> ToolResult:
        prompt = self._str(args, "prompt")
        if not prompt.strip():
            return "'prompt' must not be empty", True
        params: Dict[str, Any] = {"prompt": prompt}
        for key, kinds in (("cron", (str,)), ("every_s", (int, float)), ("at", (str,)), ("group", (str,))):
            value = args.get(key)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ToolInputError(f"'{key}' has the wrong type")
            params[key] = value
        given = [k for k in ("cron", "every_s", "at") if k in params]
        if len(given) != 1:
            return "give exactly one of 'cron', 'every_s' or 'at'", True
        return self._task_call("schedule_task", params)

    def _tool_list_tasks(self, args: Dict[str, Any]) -> ToolResult:
        group = args.get("group")
        if group is not None and not isinstance(group, str):
            raise ToolInputError("'group' must be a string")
        return self._task_call("list_tasks", {"group": group} if group else {})

    def _tool_pause_task(self, args: Dict[str, Any]) -> ToolResult:
        return self._task_call("pause_task", {"task_id": self._task_id(args)})

    def _tool_resume_task(self, args: Dict[str, Any]) -> ToolResult:
        return self._task_call("resume_task", {"task_id": self._task_id(args)})

    def _tool_cancel_task(self, args: Dict[str, Any]) -> ToolResult:
        return self._task_call("cancel_task", {"task_id": self._task_id(args)})

    # -- NEAR: requests only; the gateway holds the keys, checks the policy and signs --------

    _NEAR_FIELDS: Dict[str, Tuple[Tuple[str, Tuple[type, ...], bool], ...]] = {
        "near_balance": (("account_id", (str,), False), ("key", (str,), False)),
        "near_view": (("contract_id", (str,), True), ("method", (str,), True), ("args", (dict,), False)),
        "near_transfer": (
            ("receiver_id", (str,), True),
            ("amount", (str, int), True),
            ("key", (str,), False),
        ),
        "near_function_call": (
            ("receiver_id", (str,), True),
            ("method", (str,), True),
            ("args", (dict,), False),
            ("deposit", (str, int), False),
            ("gas", (int,), False),
            ("key", (str,), False),
        ),
        "near_sign_message": (
            ("message", (str,), True),
            ("recipient", (str,), True),
            ("nonce", (str,), False),
            ("callback_url", (str,), False),
            ("key", (str,), False),
        ),
    }

    def _near_call(self, method: str, args: Dict[str, Any]) -> ToolResult:
        params: Dict[str, Any] = {}
        for key, kinds, required in self._NEAR_FIELDS[method]:
            value = args.get(key)
            if value is None:
                if required:
                    raise ToolInputError(f"'{key}' is required")
                continue
            if isinstance(value, bool) or not isinstance(value, kinds):
                raise ToolInputError(f"'{key}' has the wrong type")
            params[key] = value
        return self._task_call(method, params)

    def _tool_near_balance(self, args: Dict[str, Any]) -> ToolResult:
        return self._near_call("near_balance", args)

    def _tool_near_view(self, args: Dict[str, Any]) -> ToolResult:
        return self._near_call("near_view", args)

    def _tool_near_transfer(self, args: Dict[str, Any]) -> ToolResult:
        return self._near_call("near_transfer", args)

    def _tool_near_function_call(self, args: Dict[str, Any]) -> ToolResult:
        return self._near_call("near_function_call", args)

    def _tool_near_sign_message(self, args: Dict[str, Any]) -> ToolResult:
        return self._near_call("near_sign_message", args)


_TOOL_NAMES = frozenset(spec["name"] for spec in TOOL_SPECS)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
