"""The `claude` agent runtime end to end (issue 14 acceptance).

A real Gateway (Docker sandbox of the claude image: the Claude Agent SDK and its bundled
Claude Code CLI, the vault, SQLite) whose main chat is a Telegram supergroup on the fake
Bot API; the team group runs on `[agent] runtime = "claude"`. The model is the scripted
streaming Anthropic fake on loopback: Claude Code reaches it only through the sandbox's
relay and the vault, which swaps the placeholder key for the real one. The script makes
Claude call clawgate's MCP tools (`mcp__clawgate__*`) when a chat message asks for it.

One gateway per test, several steps per test: each start of the claude container costs
seconds, so the scenarios share them instead of repeating them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import docker
import pytest

from gateway.app import Gateway
from groups.sandbox.docker import LABEL_GROUP, LABEL_INSTANCE
from proxy.secrets import SecretStore
from tests.fakes.model_server import FakeModelServer, Recorded, anthropic_text, anthropic_tool_use
from tests.fakes.telegram_api import FakeBotApi
from tests.integration.test_gateway_docker import config_for
from tests.integration.test_telegram_approvals import telegram_main_chat_toml
from tests.integration.wallet_support import ADMIN, MAIN, TEAM, WalletEnv, wallet_gateway

REAL_KEY = "sk-ant-claude-runtime-REAL-0123456789"
TOOL = "mcp__clawgate__"


# A group's own stdio MCP server, as a user would drop it into the group folder: newline-delimited
# JSON-RPC, stdlib only. It runs inside the sandbox (Claude Code starts it from `.mcp.json`).
NOTES_SERVER = """
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        continue
    if method == "initialize":
        result = {"protocolVersion": msg["params"].get("protocolVersion", "2025-06-18"),
                  "capabilities": {"tools": {}}, "serverInfo": {"name": "notes", "version": "1"}}
    elif method == "tools/list":
        result = {"tools": [{"name": "ping", "description": "Answers pong.",
                             "inputSchema": {"type": "object", "properties": {"word": {"type": "string"}}}}]}
    elif method == "tools/call":
        word = msg["params"].get("arguments", {}).get("word", "")
        result = {"content": [{"type": "text", "text": f"pong {word} as uid {os.getuid()}"}]}
    elif method == "ping":
        result = {}
    else:
        error = {"code": -32601, "message": method}
        print(json.dumps({"jsonrpc": "2.0", "id": mid, "error": error}), flush=True)
        continue
    print(json.dumps({"jsonrpc": "2.0", "id": mid, "result": result}), flush=True)
"""


def last_user_message(body: dict[str, Any]) -> dict[str, Any]:
    """Claude Code appends a `role: "system"` message after the user's: skip anything not user."""
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            return dict(message)
    return {}


def blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, dict)]


def tool_result(message: dict[str, Any]) -> str | None:
    for block in blocks(message):
        if block.get("type") == "tool_result":
            content = block.get("content")
            if isinstance(content, list):
                return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
            return str(content)
    return None


class ClaudeScript:
    """A model that asks for clawgate's MCP tools when the chat says so, else echoes."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self.tool_results: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, record: Recorded) -> tuple[int, dict[str, Any]]:
        message = last_user_message(record.body)
        result = tool_result(message)
        if result is not None:
            with self.lock:
                self.tool_results.append(result)
            return 200, anthropic_text("tool said: " + " ".join(result.split())[:500])
        text = "\n".join(str(b.get("text", "")) for b in blocks(message) if b.get("type") == "text")
        call_id = f"toolu_claude_{next(self._ids)}"
        if match := re.search(r"POST-OWN (\w+)", text):
            return 200, anthropic_tool_use(
                f"{TOOL}send_message", {"text": f"posted {match.group(1)}"}, call_id=call_id
            )
        if match := re.search(r"POST-TO (\S+) (\w+)", text):
            args = {"text": f"intruding {match.group(2)}", "chat_id": match.group(1)}
            return 200, anthropic_tool_use(f"{TOOL}send_message", args, call_id=call_id)
        if match := re.search(r"PAY ([\d.]+) ([a-z0-9._-]+)", text):
            args = {"receiver_id": match.group(2), "amount": match.group(1)}
            return 200, anthropic_tool_use(f"{TOOL}near_transfer", args, call_id=call_id)
        if match := re.search(r"USE-NOTES (\w+)", text):
            return 200, anthropic_tool_use("mcp__notes__ping", {"word": match.group(1)}, call_id=call_id)
        if "FAIL-NOW" in text:  # a request the upstream refuses (not retried: a 4xx)
            error = {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "scripted refusal"},
            }
            return 400, error
        words = re.findall(r"WORD-\w+", text)
        return 200, anthropic_text("echo " + (words[-1] if words else "nothing"))


def agent_requests(env: WalletEnv) -> list[Recorded]:
    return [r for r in list(env.model.requests) if r.path.startswith("/v1/messages")]


def conversation_text(record: Recorded) -> str:
    return json.dumps(record.body.get("messages") or [], ensure_ascii=False)


def team_container(env: WalletEnv) -> Any:
    client = docker.from_env()
    labels = [f"{LABEL_INSTANCE}={env.gw.instance}", f"{LABEL_GROUP}=team"]
    [container] = client.containers.list(filters={"label": labels})
    return container


@pytest.fixture
async def env(dirs, model_server, claude_image, docker_client) -> AsyncIterator[WalletEnv]:  # type: ignore[no-untyped-def]
    extra = f'[agent]\nruntime = "claude"\nclaude_image = "{claude_image}"\n'
    async with wallet_gateway(
        dirs,
        model_server,
        claude_image.rsplit("-claude", 1)[0],
        script=ClaudeScript(),
        extra_toml=extra,
        model_key=REAL_KEY,
    ) as wallet_env:
        yield wallet_env


async def reply_in_team(env: WalletEnv, needle: str, timeout: float = 180) -> str:
    return await env.text_in(TEAM, needle, timeout)


async def test_answers_through_the_vault_with_mcp_tools_and_owner_approval(env: WalletEnv) -> None:
    env.say_in_team("@Andy hello WORD-first")
    await reply_in_team(env, "echo WORD-first")
    first = agent_requests(env)
    assert first, "the model never heard from Claude Code"
    for record in first:
        # The vault injected the real key; the container only ever held the placeholder.
        assert record.headers.get("x-api-key") == REAL_KEY
        assert record.path.startswith("/v1/messages") and record.body.get("stream") is True
    container = team_container(env)
    env_vars = container.attrs["Config"]["Env"]
    assert "ANTHROPIC_API_KEY=placeholder" in env_vars
    assert not any(REAL_KEY in v for v in env_vars)
    tools = {t.get("name") for t in first[-1].body.get("tools") or []}
    assert {f"{TOOL}send_message", f"{TOOL}near_transfer", f"{TOOL}schedule_task"} <= tools

    # The MCP send_message posts into the group's own chat ...
    env.say_in_team("@Andy please POST-OWN alpha")
    await reply_in_team(env, "posted alpha")
    await reply_in_team(env, "tool said: message sent")
    # ... and one aimed at another group's chat is refused by the gateway.
    env.say_in_team(f"@Andy please POST-TO tg:{MAIN} beta")
    refusal = await reply_in_team(env, "tool said: message not sent")
    assert "refused" in refusal
    assert not [t for t in env.texts_in(MAIN) if "intruding" in t]

    # A second message resumes the same session: the model sees the earlier turns.
    env.say_in_team("@Andy and now WORD-second")
    await reply_in_team(env, "echo WORD-second")
    latest = [r for r in agent_requests(env) if "WORD-second" in conversation_text(r)][-1]
    assert "WORD-first" in conversation_text(latest) and "posted alpha" in conversation_text(latest)

    # A NEAR transfer through the MCP tool: the owner's approval prompt, as from the built-in runtime.
    env.say_in_team("@Andy PAY 25 bob.testnet")
    message, approval_id, text = await env.prompt(0, timeout=180)
    assert "25" in text and "bob.testnet" in text and "team" in text
    [call] = [c for c in env.wallet.calls if c.method == "near_transfer"]
    assert call.folder == "team" and call.params == {"receiver_id": "bob.testnet", "amount": "25"}
    assert await env.click(message, f"ap:{approval_id}:d", ADMIN)
    await reply_in_team(env, "the owner denied it")  # the tool result of the transfer, reported

    # The group's own MCP server (from its folder's .mcp.json) runs inside the sandbox.
    folder = env.data_dir / "groups" / "team"
    (folder / "notes_server.py").write_text(NOTES_SERVER)
    servers = {"mcpServers": {"notes": {"command": "python3", "args": ["/workspace/group/notes_server.py"]}}}
    (folder / ".mcp.json").write_text(json.dumps(servers))
    await env.gw.pool.stop("team")  # the servers are read when Claude Code starts
    env.say_in_team("@Andy USE-NOTES gamma")
    pong = await reply_in_team(env, "tool said: pong gamma as uid")
    assert "as uid 0" not in pong, pong

    # A model error reaches the chat as one short line, never a stack trace.
    env.say_in_team("@Andy FAIL-NOW please")
    failure = await reply_in_team(env, "model error: HTTP 400")
    assert "Traceback" not in failure and len(failure) < 400, failure


@contextlib.asynccontextmanager
async def team_gateway(
    dirs: tuple[Path, Path], model: FakeModelServer, claude_image: str, api: FakeBotApi
) -> Any:
    """A started Gateway: Telegram main chat, the team group on the claude runtime; stopped after."""
    from core.models import Group

    config_dir, data_dir = dirs
    extra = (
        telegram_main_chat_toml(config_dir, api)
        + f'[agent]\nruntime = "claude"\nclaude_image = "{claude_image}"\n'
    )
    config = config_for(
        model, claude_image.rsplit("-claude", 1)[0], extra=extra, top=f'main_chat = "tg:{MAIN}"'
    )
    gw = Gateway(config, config_dir, data_dir)
    await gw.start()
    try:
        if gw.registry.by_folder("team") is None:
            await gw.registry.register(Group("team", f"tg:{TEAM}", "team", "@Andy"))
        yield gw
    finally:
        await gw.stop(grace_s=5)


async def test_session_survives_docker_kill_and_gateway_restart_and_reset_starts_fresh(
    dirs, model_server, claude_image, docker_client
) -> None:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    SecretStore(config_dir).add(
        "anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}", groups=["main", "team"]
    )
    model_server.default = ClaudeScript()
    api = FakeBotApi().start()

    async def said(needle: str) -> list[Recorded]:
        """Wait for the team reply containing `needle`; the agent's requests that carried it."""
        await asyncio.to_thread(
            api.wait_for,
            lambda: [m for m in api.sent if m["chat"]["id"] == TEAM and needle in m["text"]],
            180,
        )
        return [r for r in list(model_server.requests) if needle.split()[-1] in conversation_text(r)]

    session = data_dir / "groups" / "team" / ".clawgate" / "claude-session"
    try:
        async with team_gateway(dirs, model_server, claude_image, api) as gw:
            api.push_message(TEAM, "@Andy remember WORD-apple", title="Team")
            await said("echo WORD-apple")
            assert session.exists()
            session_id = session.read_text().strip()

            client = docker.from_env()
            labels = [f"{LABEL_INSTANCE}={gw.instance}", f"{LABEL_GROUP}=team"]
            [container] = client.containers.list(filters={"label": labels})
            # Standing memory: the group's CLAUDE.md (read by Claude Code) and the global one.
            (data_dir / "groups" / "team" / "CLAUDE.md").write_text("Group rule MARKER-GROUP-MD.\n")
            (data_dir / "global" / "CLAUDE.md").write_text("Shared rule MARKER-GLOBAL-MD.\n")
            container.kill()  # the container dies between turns
            for _ in range(300):  # ... and the gateway notices before the next message
                if "team" not in gw.pool.live:
                    break
                await asyncio.sleep(0.05)
            api.push_message(TEAM, "@Andy after the kill WORD-banana", title="Team")
            [*_, latest] = await said("echo WORD-banana")
            assert "WORD-apple" in conversation_text(latest)
            whole = json.dumps(latest.body)
            assert "MARKER-GLOBAL-MD" in whole, whole[-3000:]
            assert "MARKER-GROUP-MD" in whole, whole[:3000]
            assert session.read_text().strip() == session_id

        # A gateway restart over the same folders: the next message still resumes the session.
        async with team_gateway(dirs, model_server, claude_image, api) as gw:
            api.push_message(TEAM, "@Andy after the restart WORD-cherry", title="Team")
            [*_, latest] = await said("echo WORD-cherry")
            assert "WORD-apple" in conversation_text(latest) and "WORD-banana" in conversation_text(latest)
            assert session.read_text().strip() == session_id

            # /reset (from the owner's main chat) starts a fresh session.
            api.push_message(MAIN, "/reset team", user=ADMIN, title="Main")
            await asyncio.to_thread(
                api.wait_for, lambda: [m for m in api.sent if "cleared the agent session" in m["text"]], 60
            )
            api.push_message(TEAM, "@Andy fresh start WORD-damson", title="Team")
            [*_, latest] = await said("echo WORD-damson")
            assert "WORD-apple" not in conversation_text(latest)
            assert session.read_text().strip() != session_id
    finally:
        api.stop()
