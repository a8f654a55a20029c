"""clawgate's own tools offered to Claude as an in-process MCP server (``mcp__clawgate__*``).

Why reuse the built-in Toolbox: the task and ``near_*`` tools then validate their input and
word the gateway's refusals exactly as for the built-in runtime, and every call still goes
over this sandbox's ``ipc.sock`` (the gateway knows the caller from the socket and validates
every request). The shell and file tools are not offered: Claude Code has its own.
``send_message`` gains an optional ``chat_id`` here so a refusal of another group's chat
comes back from the gateway as a tool error rather than being impossible to ask for.

Blocking IPC calls (a NEAR transfer waits for the owner's decision) run in a worker thread
so the SDK's event loop keeps serving the CLI meanwhile.
"""

from typing import Any, Callable, Dict, List, Optional

from .ipc_client import IPCClosed, IPCError
from .tool_specs import TOOL_SPECS
from .tools import Toolbox

SERVER_NAME = "clawgate"
IPC_TOOLS = (
    "send_message",
    "schedule_task",
    "list_tasks",
    "pause_task",
    "resume_task",
    "cancel_task",
    "near_balance",
    "near_view",
    "near_transfer",
    "near_function_call",
    "near_sign_message",
)

IpcCall = Callable[[str, Dict[str, Any]], Dict[str, Any]]


def tool_specs() -> List[Dict[str, Any]]:
    """The IPC-backed tool specs, ``send_message`` widened with an optional ``chat_id``."""
    specs = []
    for spec in TOOL_SPECS:
        if spec["name"] not in IPC_TOOLS:
            continue
        spec = {**spec, "parameters": dict(spec["parameters"])}
        if spec["name"] == "send_message":
            props = dict(spec["parameters"]["properties"])
            props["chat_id"] = {
                "type": "string",
                "description": "Another chat's id (main group only); default: this group's chat.",
            }
            spec["parameters"]["properties"] = props
        specs.append(spec)
    return specs


class ClawgateTools:
    """Executes the MCP tools; returns MCP ``CallToolResult`` dicts, never raises (except IPCClosed)."""

    def __init__(self, group_dir: str, ipc_call: IpcCall) -> None:
        self._call = ipc_call
        self._toolbox = Toolbox(group_dir, self._send_own_chat, ipc_call=ipc_call)

    def _send_own_chat(self, text: str) -> None:
        self._call("send_message", {"text": text})

    def execute(self, name: str, args: Optional[Dict[str, Any]]) -> Dict[str, Any]:
        if name == "send_message" and isinstance(args, dict) and args.get("chat_id") not in (None, ""):
            text, is_error = self._send_to(args)
        else:
            text, is_error = self._toolbox.execute(name, args)
        return {"content": [{"type": "text", "text": text}], "is_error": is_error}

    def _send_to(self, args: Dict[str, Any]) -> "tuple[str, bool]":
        text, chat_id = args.get("text"), args.get("chat_id")
        if not isinstance(text, str) or not text.strip():
            return "'text' must be a non-empty string", True
        if not isinstance(chat_id, str):
            return "'chat_id' must be a string", True
        try:
            self._call("send_message", {"text": text, "chat_id": chat_id})
        except IPCClosed:
            raise
        except IPCError as exc:
            return f"message not sent: refused by the gateway ({exc.code}): {exc.message}", True
        return "message sent", False


def mcp_server(tools: ClawgateTools) -> Any:
    """The SDK's in-process MCP server config exposing ``tools`` (imports the SDK lazily)."""
    import anyio
    from claude_agent_sdk import SdkMcpTool, create_sdk_mcp_server

    def handler(name: str) -> Callable[[Dict[str, Any]], Any]:
        async def run(args: Dict[str, Any]) -> Dict[str, Any]:
            return await anyio.to_thread.run_sync(tools.execute, name, args)

        return run

    defined = [
        SdkMcpTool(
            name=spec["name"],
            description=spec["description"],
            input_schema=spec["parameters"],
            handler=handler(spec["name"]),
        )
        for spec in tool_specs()
    ]
    return create_sdk_mcp_server(SERVER_NAME, version="1.0.0", tools=defined)
