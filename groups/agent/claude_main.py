"""Entry point of the ``claude`` runtime (``python3 -m agent.claude_main``): the Claude Agent SDK
answering the gateway's turns over the same ``ipc.sock`` protocol as the built-in loop.

Why the same protocol: turn handling, retries, dead letters, crash recovery, typing, leak
redaction and the outbox all live in the gateway and stay unchanged. Per turn:
``next_messages`` → ``received`` → Claude Code answers the prompt → ``turn_done``.

The session (Claude Code's transcript) lives in ``<group>/.clawgate/claude/`` with its id in
``<group>/.clawgate/claude-session``, so a container or gateway restart resumes it and
``/reset`` (which removes ``.clawgate``) starts a fresh one. One Claude Code process is kept
between turns; if it dies, the next turn starts another that resumes the stored session.

Isolation is the sandbox's: no network, egress only through the relay to the vault
(``HTTPS_PROXY``, the vault CA via ``NODE_EXTRA_CA_CERTS``/``SSL_CERT_FILE``), and only the
placeholder key in the environment. Exit codes as ``python3 -m agent``.
"""

import contextlib
import json
import os
import re
import sys
import traceback
from typing import Any, Dict, List, Optional, Tuple

_SDK = os.environ.get("CLAWGATE_CLAUDE_SDK", "/opt/clawgate/claude-sdk")
if os.path.isdir(_SDK) and _SDK not in sys.path:
    sys.path.append(_SDK)  # after the stdlib: the SDK's packages never shadow anything

from . import boot, config, prompt  # noqa: E402
from .claude_tools import SERVER_NAME, ClawgateTools, mcp_server, tool_specs  # noqa: E402
from .ipc_client import IPCClient, IPCClosed, IPCError  # noqa: E402

STATE_DIR = ".clawgate"
CONFIG_SUBDIR = "claude"
SESSION_FILE = "claude-session"
USER_MCP_FILE = ".mcp.json"
GLOBAL_MEMORY_CAP = 32 * 1024


def _stderr(level: str, message: str) -> None:
    sys.stderr.write(f"clawgate-claude {level}: {message}\n")
    sys.stderr.flush()


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SessionFile:
    """The group's Claude session id, written atomically so a crash never leaves half an id."""

    def __init__(self, group_dir: str) -> None:
        self.path = os.path.join(group_dir, STATE_DIR, SESSION_FILE)

    def load(self) -> Optional[str]:
        try:
            with open(self.path, encoding="utf-8") as fh:
                value = fh.read().strip()
        except OSError:
            return None
        return value if re.fullmatch(r"[A-Za-z0-9-]{8,64}", value) else None

    def save(self, session_id: str) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(session_id + "\n")
        os.replace(tmp, self.path)


def claude_env(cfg: config.Config) -> Dict[str, str]:
    """What the Claude Code CLI is told, besides the sandbox's own environment (proxy, CA, key)."""
    claude_dir = os.path.join(cfg.group_dir, STATE_DIR, CONFIG_SUBDIR)
    return {
        "ANTHROPIC_BASE_URL": cfg.base_url,
        "CLAUDE_CONFIG_DIR": claude_dir,
        "TMPDIR": os.environ.get("TMPDIR") or "/tmp",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "ENABLE_TOOL_SEARCH": "false",  # our MCP tools offered directly, not behind ToolSearch
        "API_TIMEOUT_MS": str(int(cfg.model_timeout * 1000)),
        "CLAUDE_CODE_MAX_OUTPUT_TOKENS": str(cfg.max_tokens),
    }


def user_mcp_servers(group_dir: str, log: Any) -> Dict[str, Any]:
    """The group's own stdio MCP servers from ``<group>/.mcp.json`` (``{"mcpServers": {...}}``).

    They run inside this sandbox, so their egress goes through the vault like everything else.
    A bad file is logged and ignored: it must not take the assistant down.
    """
    path = os.path.join(group_dir, USER_MCP_FILE)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log("warning", f"{USER_MCP_FILE} ignored: {exc}")
        return {}
    servers = data.get("mcpServers") if isinstance(data, dict) else None
    if not isinstance(servers, dict):
        log("warning", f"{USER_MCP_FILE} ignored: no 'mcpServers' object")
        return {}
    usable = {}
    for name, spec in servers.items():
        if name == SERVER_NAME or not isinstance(spec, dict) or not isinstance(spec.get("command"), str):
            log(
                "warning",
                f"{USER_MCP_FILE}: server {name!r} ignored (needs a 'command'; name not '{SERVER_NAME}')",
            )
            continue
        usable[name] = {
            "type": "stdio",
            "command": spec["command"],
            "args": [str(a) for a in spec.get("args") or []],
            "env": {str(k): str(v) for k, v in (spec.get("env") or {}).items()},
        }
    return usable


def system_prompt_append(cfg: config.Config) -> str:
    """clawgate's system prompt (identity, untrusted-data rule, MEMORY.md) plus the global CLAUDE.md.

    The group's own ``CLAUDE.md`` is read by Claude Code itself (project setting source).
    """
    text = prompt.build_system_prompt(cfg).replace(
        "use the send_message tool", f"use the mcp__{SERVER_NAME}__send_message tool"
    )
    if os.path.realpath(cfg.global_dir) != os.path.realpath(cfg.group_dir):
        try:
            with open(os.path.join(cfg.global_dir, "CLAUDE.md"), "rb") as fh:
                shared = fh.read(GLOBAL_MEMORY_CAP).decode("utf-8", "replace").strip()
        except OSError:
            shared = ""
        if shared:
            text += f"\n\nShared instructions (global CLAUDE.md, read-only):\n{shared}"
    return text


def error_summary(result: Any) -> str:
    """A chat-safe line for a failed result; "HTTP nnn" is what the gateway's retry reads."""
    status = getattr(result, "api_error_status", None)
    raw = str(
        getattr(result, "result", None)
        or "; ".join(getattr(result, "errors", None) or [])
        or getattr(result, "subtype", "")
    )
    marker = raw.find("clawgate budget:")  # the vault's budget refusal (proxy/budget.py): final
    if marker >= 0:
        return _one_line(raw[marker:].split('"', 1)[0], 300)
    detail = _one_line(raw)
    if isinstance(status, int):
        return (
            f"model error: HTTP {status} from upstream ({detail})"
            if detail
            else f"model error: HTTP {status} from upstream"
        )
    match = re.search(r"API Error: (\d{3})", detail)
    if match:
        return f"model error: HTTP {match.group(1)} from upstream"
    return f"model error: {detail or 'the Claude runtime reported an error'}"


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def usage_reports(result: Any, configured_model: str) -> List[Dict[str, Any]]:
    """The turn's tokens per model as Claude Code counted them, for the sandbox's log.

    Only an account of what a working agent used: spend control relies on what the vault
    metered, never on what a sandbox says about itself.

    Claude Code reports ``modelUsage`` per model without a call count: ``num_turns`` (its model
    round trips) is attributed to the one model when there is one, else one call each.
    """
    per_model = getattr(result, "model_usage", None)
    if not isinstance(per_model, dict) or not per_model:
        usage = getattr(result, "usage", None)
        if not isinstance(usage, dict):
            return []
        per_model = {
            configured_model: {
                "inputTokens": usage.get("input_tokens"),
                "outputTokens": usage.get("output_tokens"),
                "cacheReadInputTokens": usage.get("cache_read_input_tokens"),
                "cacheCreationInputTokens": usage.get("cache_creation_input_tokens"),
            }
        }
    turns = _count(getattr(result, "num_turns", 0)) or 1
    reports = []
    for model, row in per_model.items():
        if not isinstance(row, dict) or not isinstance(model, str) or not model:
            continue
        reports.append(
            {
                "model": model[:200],
                "input_tokens": _count(row.get("inputTokens")),
                "output_tokens": _count(row.get("outputTokens")),
                "cache_read_tokens": _count(row.get("cacheReadInputTokens")),
                "cache_write_tokens": _count(row.get("cacheCreationInputTokens")),
                "calls": turns if len(per_model) == 1 else 1,
            }
        )
    return reports


class ClaudeTurns:
    """One long-lived Claude Code process per sandbox, resumed from the stored session."""

    def __init__(self, cfg: config.Config, ipc: IPCClient, log: Any) -> None:
        self.cfg = cfg
        self.log = log
        self.session = SessionFile(cfg.group_dir)
        self.tools = ClawgateTools(cfg.group_dir, ipc.call)
        self.usage: List[Dict[str, Any]] = []  # the last turn's usage reports
        self._client: Any = None
        self._append = ""  # the system prompt addition the running Claude Code process was given

    def _options(self) -> Any:
        from claude_agent_sdk import ClaudeAgentOptions

        servers: Dict[str, Any] = dict(user_mcp_servers(self.cfg.group_dir, self.log))
        servers[SERVER_NAME] = mcp_server(self.tools)
        return ClaudeAgentOptions(
            model=self.cfg.model,
            cwd=self.cfg.group_dir,
            permission_mode="bypassPermissions",
            # snapshot False: a resumed session gets today's MEMORY.md and global CLAUDE.md, not
            # the prompt recorded when it began.
            system_prompt={
                "type": "preset",
                "preset": "claude_code",
                "append": self._append,
                "snapshot": False,
            },
            setting_sources=["project"],  # the group's CLAUDE.md and .claude/settings.json
            mcp_servers=servers,
            allowed_tools=[f"mcp__{SERVER_NAME}__{spec['name']}" for spec in tool_specs()],
            resume=self.session.load(),
            env=claude_env(self.cfg),
            stderr=lambda line: _stderr("cli", line.rstrip()[:2000]),
        )

    async def _connect(self) -> Any:
        from claude_agent_sdk import ClaudeSDKClient

        os.makedirs(claude_env(self.cfg)["CLAUDE_CONFIG_DIR"], exist_ok=True)
        client = ClaudeSDKClient(self._options())
        await client.connect()
        return client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def run(self, user_prompt: str) -> Tuple[Optional[str], Optional[str]]:
        """Answer one turn: ``(text, None)`` or ``(None, short error)``; never raises but IPCClosed."""
        from claude_agent_sdk import AssistantMessage, ResultMessage, SystemMessage, TextBlock

        texts: List[str] = []
        result: Any = None
        self.usage = []
        append = system_prompt_append(self.cfg)
        if self._client is not None and append != self._append:
            await self.close()  # MEMORY.md or the global CLAUDE.md changed: a process with the new prompt
        try:
            if self._client is None:
                self._append = append
                self._client = await self._connect()
            await self._client.query(user_prompt)
            async for message in self._client.receive_response():
                if isinstance(message, SystemMessage) and message.subtype == "init":
                    session_id = message.data.get("session_id")
                    if isinstance(session_id, str):
                        self.session.save(session_id)
                elif isinstance(message, AssistantMessage):
                    texts = [
                        b.text for b in message.content if isinstance(b, TextBlock) and b.text.strip()
                    ] or texts
                elif isinstance(message, ResultMessage):
                    result = message
        except IPCClosed:
            raise
        except Exception as exc:  # noqa: BLE001 - the CLI died or the SDK failed: a short error, a fresh process next turn
            self.log("error", "claude turn crashed:\n" + traceback.format_exc())
            await self.close()
            return None, f"model unreachable: the Claude runtime failed ({type(exc).__name__})"
        if result is None:
            await self.close()
            return None, "model unreachable: the Claude runtime ended the turn without a result"
        if result.session_id:
            self.session.save(result.session_id)
        self.usage = usage_reports(result, self.cfg.model)
        if result.is_error:
            return None, error_summary(result)
        text = (
            result.result if isinstance(result.result, str) and result.result.strip() else "\n\n".join(texts)
        )
        return text, None


async def serve(cfg: config.Config, client: IPCClient) -> int:
    import anyio

    def log(level: str, message: str) -> None:
        _stderr(level, message)
        with contextlib.suppress(IPCError, IPCClosed):
            client.log(level, message[:8000])

    turns = ClaudeTurns(cfg, client, log)
    try:
        while True:
            try:
                run_id, user_prompt = await anyio.to_thread.run_sync(client.next_messages)
            except IPCError as exc:
                log("error", f"next_messages failed: {exc}")
                await anyio.sleep(1.0)
                continue
            try:
                await anyio.to_thread.run_sync(client.received, run_id)
            except IPCError as exc:
                log("warning", f"received({run_id}) failed: {exc}")
            text, error = await turns.run(user_prompt)
            for report in turns.usage:  # for the sandbox's log only: spend is metered by the vault
                _stderr("info", f"run {run_id} used {json.dumps(report, sort_keys=True)}")
            try:
                await anyio.to_thread.run_sync(client.turn_done, run_id, text, error)
            except IPCError as exc:
                log("error", f"turn_done({run_id}) rejected: {exc}")
    finally:
        with anyio.CancelScope(shield=True):
            await turns.close()


def main() -> int:
    cfg = boot.prepare(_stderr)
    if isinstance(cfg, int):
        return cfg
    try:
        import anyio
    except ImportError as exc:
        _stderr(
            "error",
            f"the Claude Agent SDK is missing from this image ({exc}): clawgate image build --runtime claude",
        )
        return 1
    client = boot.connect(cfg, _stderr)
    if isinstance(client, int):
        return client
    try:
        return anyio.run(serve, cfg, client)
    except IPCClosed:
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        client.close()


if __name__ == "__main__":
    sys.exit(main())
