"""The claude runtime's own pieces that need no SDK: its MCP tools over IPC, the stored
session id, the group's MCP servers file, the environment Claude Code gets, error lines."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from test_agent_task_tools import ScriptedGateway

from groups.agent import claude_main
from groups.agent.claude_tools import IPC_TOOLS, ClawgateTools, tool_specs
from groups.agent.config import Config


def test_tool_specs_are_the_ipc_tools_and_send_message_may_name_a_chat() -> None:
    specs = {spec["name"]: spec for spec in tool_specs()}
    assert set(specs) == set(IPC_TOOLS)
    assert "shell" not in specs and "write_file" not in specs  # Claude Code has its own
    assert "chat_id" in specs["send_message"]["parameters"]["properties"]
    from groups.agent.tool_specs import TOOL_SPECS

    [builtin] = [s for s in TOOL_SPECS if s["name"] == "send_message"]
    assert "chat_id" not in builtin["parameters"]["properties"]  # the shared spec is not mutated


def test_send_message_goes_over_ipc_and_a_refusal_is_a_tool_error(tmp_path: Path) -> None:
    def answer(method: str, params: dict[str, Any]) -> Any:
        if params.get("chat_id") == "tg:999":
            return {"error": {"code": "forbidden", "message": "send_message is not allowed for this group"}}
        return {"result": {"ok": True}}

    gateway = ScriptedGateway(answer)
    tools = ClawgateTools(str(tmp_path), gateway.client.call)
    own = tools.execute("send_message", {"text": "hi"})
    assert own == {"content": [{"type": "text", "text": "message sent"}], "is_error": False}
    other = tools.execute("send_message", {"text": "hi", "chat_id": "tg:999"})
    assert other["is_error"] is True and "forbidden" in other["content"][0]["text"]
    assert gateway.calls == [
        ("send_message", {"text": "hi"}),
        ("send_message", {"text": "hi", "chat_id": "tg:999"}),
    ]
    pay = tools.execute("near_transfer", {"receiver_id": "bob.near"})
    assert pay["is_error"] is True and "amount" in pay["content"][0]["text"]  # validated before IPC
    assert len(gateway.calls) == 2


def test_session_file_round_trip_and_garbage_is_no_session(tmp_path: Path) -> None:
    store = claude_main.SessionFile(str(tmp_path))
    assert store.load() is None
    store.save("0f7c2f1e-8a61-4c55-9b1a-1c2d3e4f5a6b")
    assert store.load() == "0f7c2f1e-8a61-4c55-9b1a-1c2d3e4f5a6b"
    Path(store.path).write_text("../../etc/passwd --flag\n")
    assert store.load() is None


def test_group_mcp_servers_file(tmp_path: Path) -> None:
    logged: list[str] = []

    def log(level: str, message: str) -> None:
        logged.append(message)

    assert claude_main.user_mcp_servers(str(tmp_path), log) == {}
    (tmp_path / ".mcp.json").write_text(
        json.dumps(
            {
                "mcpServers": {
                    "notes": {"command": "python3", "args": ["notes.py", 1], "env": {"A": 1}},
                    "clawgate": {"command": "evil"},
                    "broken": {"args": []},
                }
            }
        )
    )
    servers = claude_main.user_mcp_servers(str(tmp_path), log)
    assert servers == {
        "notes": {"type": "stdio", "command": "python3", "args": ["notes.py", "1"], "env": {"A": "1"}}
    }
    assert len(logged) == 2
    (tmp_path / ".mcp.json").write_text("{not json")
    assert claude_main.user_mcp_servers(str(tmp_path), log) == {}


def test_claude_env_keeps_state_in_the_group_folder_and_traffic_minimal(tmp_path: Path) -> None:
    cfg = Config(group_dir=str(tmp_path), base_url="http://127.0.0.1:9", model_timeout=30.0)
    env = claude_main.claude_env(cfg)
    assert env["CLAUDE_CONFIG_DIR"] == str(tmp_path / ".clawgate" / "claude")
    assert env["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:9"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1" and env["ENABLE_TOOL_SEARCH"] == "false"
    assert not any("API_KEY" in name or "AUTH" in name for name in env)  # the key: the sandbox placeholder


def test_system_prompt_names_the_mcp_tool_and_carries_the_global_claude_md(tmp_path: Path) -> None:
    group, shared = tmp_path / "group", tmp_path / "global"
    group.mkdir()
    shared.mkdir()
    (shared / "CLAUDE.md").write_text("Always answer in French.")
    (group / "MEMORY.md").write_text("The owner is Alice.")
    text = claude_main.system_prompt_append(Config(group_dir=str(group), global_dir=str(shared)))
    assert "mcp__clawgate__send_message" in text
    assert "Always answer in French." in text and "The owner is Alice." in text


def test_error_lines_are_short_and_carry_the_status_the_gateway_retries_on() -> None:
    overloaded = SimpleNamespace(
        api_error_status=529, result="API Error: 529 overloaded", errors=None, subtype=""
    )
    assert claude_main.error_summary(overloaded).startswith("model error: HTTP 529 from upstream")
    text_only = SimpleNamespace(result="API Error: 401 invalid x-api-key\n" + "x" * 900, subtype="")
    line = claude_main.error_summary(text_only)
    assert line == "model error: HTTP 401 from upstream"
    other = SimpleNamespace(result=None, errors=["boom\nTraceback (most recent call last)"], subtype="error")
    assert "\n" not in claude_main.error_summary(other)
    # The vault's budget refusal (proxy/budget.py) is relayed as its own message, without "HTTP 403"
    # (which the gateway would only report) and however long Claude Code's wrapping is.
    refused = SimpleNamespace(
        result="API Error: 403 "
        + "x" * 400
        + '{"type":"error","error":{"type":"permission_error","message":"clawgate budget: group '
        + "team's daily USD budget ($2.00) is used up\"}}",
        api_error_status=403,
        subtype="",
    )
    assert (
        claude_main.error_summary(refused)
        == "clawgate budget: group team's daily USD budget ($2.00) is used up"
    )


def test_usage_reports_per_model_in_the_gateways_shape() -> None:
    result = SimpleNamespace(
        num_turns=3,
        model_usage={
            "claude-x": {
                "inputTokens": 120,
                "outputTokens": 30,
                "cacheReadInputTokens": 900,
                "cacheCreationInputTokens": 40,
                "costUSD": 0.01,
            }
        },
        usage=None,
    )
    assert claude_main.usage_reports(result, "configured") == [
        {
            "model": "claude-x",
            "input_tokens": 120,
            "output_tokens": 30,
            "cache_read_tokens": 900,
            "cache_write_tokens": 40,
            "calls": 3,
        }
    ]
    fallback = SimpleNamespace(num_turns=1, model_usage=None, usage={"input_tokens": 5, "output_tokens": -2})
    [row] = claude_main.usage_reports(fallback, "configured")
    assert row["model"] == "configured" and row["input_tokens"] == 5 and row["output_tokens"] == 0
    assert claude_main.usage_reports(SimpleNamespace(), "m") == []
