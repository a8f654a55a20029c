"""The agent's tools: JSON-schema specs shared by both providers, and their executor.

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

OUTPUT_CAP = 30_000
DEFAULT_SHELL_TIMEOUT = 60
MAX_SHELL_TIMEOUT = 600
DEFAULT_READ_LINES = 2000
MAX_LIST_ENTRIES = 1000

ToolResult = Tuple[str, bool]

_KEY_PARAM = {"type": "string", "description": "Wallet key name (optional when the group has one key)."}

TOOL_SPECS: List[Dict[str, Any]] = [
    {
        "name": "shell",
        "description": (
            "Run a bash command in the group workspace (/workspace/group is the working directory). "
            "stdout and stderr are combined; long output is truncated in the middle. Processes left "
            "running in the background are killed when the command returns; to keep one alive, "
            "detach it: `setsid cmd > log 2>&1 &`."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "command": {"type": "string", "description": "The bash command line to run."},
                "timeout_s": {
                    "type": "integer",
                    "description": f"Seconds before the command is killed (default {DEFAULT_SHELL_TIMEOUT}, "
                    f"max {MAX_SHELL_TIMEOUT}).",
                },
            },
            "required": ["command"],
        },
    },
    {
        "name": "read_file",
        "description": "Read a text file. Relative paths are relative to the group workspace.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "offset": {"type": "integer", "description": "First line to return, 1-based (default 1)."},
                "limit": {"type": "integer", "description": f"Max lines (default {DEFAULT_READ_LINES})."},
            },
            "required": ["path"],
        },
    },
    {
        "name": "write_file",
        "description": "Create or overwrite a text file (parent directories are created).",
        "parameters": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["path", "content"],
        },
    },
    {
        "name": "edit_file",
        "description": "Replace the text `old` with `new` in a file; `old` must occur exactly once.",
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string"},
                "old": {"type": "string"},
                "new": {"type": "string"},
            },
            "required": ["path", "old", "new"],
        },
    },
    {
        "name": "list_files",
        "description": "List a directory (default: the group workspace). Directories end with '/'.",
        "parameters": {"type": "object", "properties": {"path": {"type": "string"}}},
    },
    {
        "name": "send_message",
        "description": (
            "Send a message to this group's chat right now (e.g. progress on a long task). "
            "Your final answer is delivered automatically; do not repeat it here."
        ),
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    {
        "name": "schedule_task",
        "description": (
            "Schedule a prompt to run later in this group, as if a message with that text arrived; your "
            "answer then goes to the chat. Give exactly one of: `cron` (5-field cron expression in UTC, "
            "e.g. '0 9 * * 1-5'), `every_s` (fixed interval in seconds, at least 10), or `at` (one-off "
            "ISO 8601 time with timezone, e.g. '2030-01-31T09:00:00+01:00'). Only the main group may "
            "set `group` to schedule for another group."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "prompt": {"type": "string", "description": "What to do when the task runs."},
                "cron": {"type": "string"},
                "every_s": {"type": "number"},
                "at": {"type": "string"},
                "group": {"type": "string", "description": "Target group folder (main group only)."},
            },
            "required": ["prompt"],
        },
    },
    {
        "name": "list_tasks",
        "description": "List scheduled tasks (this group's; the main group sees all or one `group`).",
        "parameters": {"type": "object", "properties": {"group": {"type": "string"}}},
    },
    {
        "name": "pause_task",
        "description": "Pause a scheduled task by id; it can be resumed later.",
        "parameters": {
            "type": "object",
            "properties": {"task_id": {"type": "integer"}},
            "required": ["task_id"],
        },
    },
    {
        "name": "resume_task",
        "description": "Resume a paused task by id; its next run is computed from now.",
        "parameters": {
            "type": "object",
            "properties": {"task_id": {"type": "integer"}},
            "required": ["task_id"],
        },
    },
    {
        "name": "cancel_task",
        "description": "Cancel a scheduled task by id for good.",
        "parameters": {
            "type": "object",
            "properties": {"task_id": {"type": "integer"}},
            "required": ["task_id"],
        },
    },
    {
        "name": "near_balance",
        "description": "NEAR balance of an account (default: the account of this group's wallet key).",
        "parameters": {
            "type": "object",
            "properties": {"account_id": {"type": "string"}, "key": _KEY_PARAM},
        },
    },
    {
        "name": "near_view",
        "description": "Call a read-only (view) method of a NEAR contract; free, nothing is signed.",
        "parameters": {
            "type": "object",
            "properties": {
                "contract_id": {"type": "string"},
                "method": {"type": "string"},
                "args": {"type": "object", "description": "JSON arguments of the method."},
            },
            "required": ["contract_id", "method"],
        },
    },
    {
        "name": "near_transfer",
        "description": (
            "Send NEAR from the group's wallet. The gateway signs it (you never see keys) after checking "
            "the owner's policy: small transfers go through, large ones wait for the owner's approval "
            "(the call blocks until decided), forbidden ones are refused with the reason. Returns the "
            "transaction hash; tell the user the hash."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "receiver_id": {"type": "string", "description": "NEAR account id, e.g. bob.near."},
                "amount": {"type": "string", "description": 'NEAR as a decimal string, e.g. "1.5".'},
                "key": _KEY_PARAM,
            },
            "required": ["receiver_id", "amount"],
        },
    },
    {
        "name": "near_function_call",
        "description": (
            "Call a change method of a NEAR contract, signed by the gateway under the owner's policy "
            "(may wait for the owner's approval). Returns the transaction hash."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "receiver_id": {"type": "string", "description": "The contract account id."},
                "method": {"type": "string"},
                "args": {"type": "object", "description": "JSON arguments of the method."},
                "deposit": {"type": "string", "description": 'Attached NEAR, e.g. "0.01".'},
                "gas": {"type": "integer", "description": "Gas units (default 30 Tgas, max 300 Tgas)."},
                "key": _KEY_PARAM,
            },
            "required": ["receiver_id", "method"],
        },
    },
    {
        "name": "near_sign_message",
        "description": (
            "Sign an off-chain message with the wallet key (NEP-413), e.g. to log in to a NEAR app. "
            "Returns {accountId, publicKey, signature, nonce}. May need the owner's approval."
        ),
        "parameters": {
            "type": "object",
            "properties": {
                "message": {"type": "string"},
                "recipient": {"type": "string", "description": "Who the signature is for, e.g. app.near."},
                "nonce": {"type": "string", "description": "Base64 of 32 bytes (random when omitted)."},
                "callback_url": {"type": "string"},
                "key": _KEY_PARAM,
            },
            "required": ["message", "recipient"],
        },
    },
]


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
