"""What the model is told about each tool: one JSON-schema spec per tool, for both providers.

Anthropic takes them as `tools`, OpenAI-style servers as `functions` (groups/agent/llm.py
converts), and the claude runtime exposes the same set as an MCP server
(groups/agent/claude_tools.py), so every runtime offers the model the same tools in the same
words. The executor is groups/agent/tools.py; a spec here without a `_tool_<name>` there is a
test failure (tests/agent), not a silent no-op. Runs inside the sandbox: stdlib only.
"""

from typing import Any, Dict, List

# Stated to the model here and enforced by the executor (tools.py), so the two never disagree.
DEFAULT_SHELL_TIMEOUT = 60
MAX_SHELL_TIMEOUT = 600
DEFAULT_READ_LINES = 2000

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
