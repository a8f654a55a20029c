"""Tool loop against scripted fake model servers on loopback (no urllib mocking)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from agent_fakes import (
    FakeModelServer,
    anthropic_text,
    anthropic_tool,
    free_port,
    openai_text,
    openai_tool,
)

from groups.agent import llm, prompt, tools, transport
from groups.agent.config import Config

PROMPT = '<messages>\n<message sender="bob">please save a note</message>\n</messages>'


def _cfg(provider: str, base_url: str, group: Path, glob: Path) -> Config:
    return Config(
        provider=provider,
        model="test-model",
        base_url=base_url,
        model_timeout=5.0,
        assistant_name="Andy",
        group="friends",
        group_dir=str(group),
        global_dir=str(glob),
    )


def _toolbox(group: Path, sent: list[str] | None = None) -> tools.Toolbox:
    return tools.Toolbox(str(group), (sent if sent is not None else []).append)


def test_anthropic_tool_use_round_trip(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    (glob / "MEMORY.md").write_text("Always answer in English.")
    (group / "MEMORY.md").write_text("The group likes cats.")
    server = FakeModelServer(
        [
            anthropic_tool("toolu_1", "write_file", {"path": "notes/hi.txt", "content": "hello"}, "Saving."),
            anthropic_text("Saved your note."),
        ]
    )
    try:
        cfg = _cfg("anthropic", server.url, group, glob)
        provider = llm.make_provider(cfg)
        text, messages = llm.run_tool_loop(
            provider, prompt.build_system_prompt(cfg), [], PROMPT, _toolbox(group).execute, tools.TOOL_SPECS
        )
    finally:
        server.close()

    assert text == "Saved your note."
    assert (group / "notes" / "hi.txt").read_text() == "hello"
    first, second = server.requests
    assert first["path"] == "/v1/messages"
    assert first["headers"]["x-api-key"] == "placeholder"
    assert first["headers"]["anthropic-version"] == "2023-06-01"
    body = first["body"]
    assert body["model"] == "test-model" and body["max_tokens"] == 4096
    assert {t["name"] for t in body["tools"]} == {
        "shell",
        "read_file",
        "write_file",
        "edit_file",
        "list_files",
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
    }
    assert all(t["input_schema"]["type"] == "object" for t in body["tools"])
    # prompt caching: breakpoints on the last tool, the system prompt and the newest message
    ephemeral = {"type": "ephemeral"}
    assert [t.get("cache_control") for t in body["tools"]] == [None] * 15 + [ephemeral]
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": PROMPT, "cache_control": ephemeral}]}
    ]
    (system_block,) = body["system"]
    assert system_block["type"] == "text" and system_block["cache_control"] == ephemeral
    system = system_block["text"]
    assert "Andy" in system and "<messages>" in system and "untrusted" in system
    assert system.index("Always answer in English.") < system.index("The group likes cats.")
    # second call carries the assistant tool_use turn and a well-formed tool_result
    msgs = second["body"]["messages"]
    assert msgs[1]["role"] == "assistant" and msgs[1]["content"][1]["type"] == "tool_use"
    result_msg = msgs[2]
    assert result_msg["role"] == "user"
    (block,) = result_msg["content"]
    assert block["type"] == "tool_result" and block["tool_use_id"] == "toolu_1"
    assert block["is_error"] is False and block["content"].startswith("wrote 5 bytes")
    assert len(messages) == 4 and messages[-1]["role"] == "assistant"
    # the moving end: the two newest messages carry the conversation breakpoints, four in all
    assert block["cache_control"] == ephemeral and msgs[1]["content"][-1]["cache_control"] == ephemeral
    assert msgs[0] == {"role": "user", "content": PROMPT}
    assert json.dumps(second["body"]).count('"cache_control"') == 4
    assert "cache_control" not in json.dumps(messages)  # marks are per request, never kept in history


def test_openai_tool_calls_round_trip(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    server = FakeModelServer(
        [
            openai_tool("call_1", "write_file", {"path": "a.txt", "content": "abc"}),
            openai_tool("call_2", "read_file", "{not json"),
            openai_text("All done."),
        ]
    )
    try:
        cfg = _cfg("openai", server.url + "/v1", group, glob)
        provider = llm.make_provider(cfg)
        text, _ = llm.run_tool_loop(
            provider, prompt.build_system_prompt(cfg), [], PROMPT, _toolbox(group).execute, tools.TOOL_SPECS
        )
    finally:
        server.close()

    assert text == "All done."
    assert (group / "a.txt").read_text() == "abc"
    first, second, third = server.requests
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["authorization"] == "Bearer placeholder"
    body = first["body"]
    assert body["max_tokens"] == 4096
    assert body["messages"][0]["role"] == "system" and "Andy" in body["messages"][0]["content"]
    assert body["messages"][1] == {"role": "user", "content": PROMPT}
    assert all(t["type"] == "function" and "parameters" in t["function"] for t in body["tools"])
    assert all("cache_control" not in json.dumps(r["body"]) for r in server.requests)  # caches by itself
    msgs = second["body"]["messages"]
    assert msgs[2]["tool_calls"][0]["id"] == "call_1"
    assert msgs[3]["role"] == "tool" and msgs[3]["tool_call_id"] == "call_1"
    assert msgs[3]["content"].startswith("wrote 3 bytes")
    bad = third["body"]["messages"][-1]
    assert bad["tool_call_id"] == "call_2" and bad["content"].startswith(
        "ERROR: arguments are not valid JSON"
    )


def test_openai_switches_to_max_completion_tokens(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    err = {
        "error": {
            "message": "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead.",
            "type": "invalid_request_error",
        }
    }
    server = FakeModelServer([(400, err, {}), openai_text("ok")])
    try:
        provider = llm.make_provider(_cfg("openai", server.url, group, glob))
        text, _ = llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    finally:
        server.close()
    assert text == "ok"
    assert "max_tokens" not in server.requests[1]["body"]
    assert server.requests[1]["body"]["max_completion_tokens"] == 4096


def test_proxy_is_used_even_for_loopback_and_no_proxy(
    group_dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The model URL points at a dead port; only the proxy (the fake server) can answer."""
    group, glob = group_dirs
    server = FakeModelServer([anthropic_text("via proxy")])
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "*")
    dead = f"http://127.0.0.1:{free_port()}"
    try:
        provider = llm.make_provider(_cfg("anthropic", dead, group, glob))
        text, _ = llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    finally:
        server.close()
    assert text == "via proxy"
    assert server.requests[0]["raw_path"] == f"{dead}/v1/messages"


def test_http_529_is_retried_then_reported_briefly(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    overloaded = (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        {"retry-after": "0"},
    )
    server = FakeModelServer([overloaded, overloaded, overloaded])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        with pytest.raises(transport.ModelHTTPError) as info:
            llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    finally:
        server.close()
    assert len(server.requests) == 3
    assert info.value.summary() == "model error: HTTP 529 from upstream (overloaded)"


def test_transient_error_then_success(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    server = FakeModelServer([(503, "upstream hiccup", {"retry-after": "0"}), anthropic_text("recovered")])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        text, _ = llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    finally:
        server.close()
    assert text == "recovered"


def test_client_error_not_retried(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    bad = (
        400,
        {"type": "error", "error": {"type": "invalid_request_error", "message": "messages: empty"}},
        {},
    )
    server = FakeModelServer([bad, anthropic_text("never")])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        with pytest.raises(transport.ModelHTTPError) as info:
            llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    finally:
        server.close()
    assert len(server.requests) == 1
    assert info.value.summary() == "model error: HTTP 400 from upstream (invalid request: messages: empty)"


def test_unreachable_model_gives_short_error(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    cfg = _cfg("anthropic", f"http://127.0.0.1:{free_port()}", group, glob)
    provider = llm.AnthropicProvider(cfg, retries=1, backoff=0.01)
    start = time.monotonic()
    with pytest.raises(transport.ModelUnreachable) as info:
        llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    assert time.monotonic() - start < 3
    assert info.value.summary() == "model unreachable: Connection refused"


def test_tool_loop_is_capped(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    server = FakeModelServer([anthropic_tool(f"t{i}", "list_files", {}) for i in range(5)])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        with pytest.raises(llm.ToolLoopLimit) as info:
            llm.run_tool_loop(
                provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS, max_iterations=3
            )
    finally:
        server.close()
    assert len(server.requests) == 3
    assert info.value.summary() == "stopped after 3 model calls without a final answer"


def test_send_message_tool_and_unknown_tool(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    sent: list[str] = []
    server = FakeModelServer(
        [
            anthropic_tool("t1", "send_message", {"text": "working on it"}),
            anthropic_tool("t2", "rm_rf", {}),
            anthropic_text("finished"),
        ]
    )
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        text, _ = llm.run_tool_loop(
            provider, "sys", [], "hi", _toolbox(group, sent).execute, tools.TOOL_SPECS
        )
    finally:
        server.close()
    assert text == "finished" and sent == ["working on it"]
    unknown = server.requests[2]["body"]["messages"][-1]["content"][0]
    assert unknown["is_error"] is True and "unknown tool" in unknown["content"]


def test_long_retry_after_is_left_to_the_gateway_never_shortened(group_dirs: tuple[Path, Path]) -> None:
    """A 529 asking for 30 s is not retried after the 5 s in-sandbox cap: the gateway waits 30 s."""
    from gateway.failures import is_transient, retry_after_s

    group, glob = group_dirs
    overloaded = (529, {"type": "error", "error": {"type": "overloaded_error"}}, {"retry-after": "30"})
    server = FakeModelServer([overloaded, anthropic_text("too soon")])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        with pytest.raises(transport.ModelHTTPError) as info:
            llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    finally:
        server.close()
    assert len(server.requests) == 1
    summary = info.value.summary()
    assert is_transient(summary) and retry_after_s(summary) == 30


def test_short_retry_after_is_waited_out_in_full(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    server = FakeModelServer([(429, "slow down", {"retry-after": "1"}), anthropic_text("after the wait")])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        started = time.monotonic()
        text, _ = llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
        waited = time.monotonic() - started
    finally:
        server.close()
    assert text == "after the wait" and waited >= 1.0  # no sooner than the model asked


def test_malformed_response_is_transient_for_the_gateway(group_dirs: tuple[Path, Path]) -> None:
    from gateway.failures import is_transient

    group, glob = group_dirs
    server = FakeModelServer([(200, "{not json", {})])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        with pytest.raises(transport.ModelResponseError) as info:
            llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, tools.TOOL_SPECS)
    finally:
        server.close()
    assert is_transient(info.value.summary())  # retried like a 5xx, so /retry-able when dead


def test_cache_breakpoints_never_exceed_four_and_skip_unmarkable_messages() -> None:
    tools_in = [{"name": f"t{i}"} for i in range(3)]
    messages = [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "text", "text": "b"}]},
        {"role": "user", "content": ""},  # nothing to mark: the one before it is marked instead
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "..."}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "c"}]},
    ]
    frozen = json.dumps(messages)
    system, out, tools_out = llm.with_cache_breakpoints("sys", messages, tools_in)
    assert json.dumps(messages) == frozen and "cache_control" not in json.dumps(tools_in)  # untouched
    marked = [i for i, m in enumerate(out) if "cache_control" in json.dumps(m)]
    assert marked == [1, 4]
    assert json.dumps([system, out, tools_out]).count("cache_control") == llm.MAX_CACHE_BREAKPOINTS
    _, out, tools_out = llm.with_cache_breakpoints("", messages, [])
    assert [i for i, m in enumerate(out) if "cache_control" in json.dumps(m)] == [0, 1, 4]  # 3 markable
    assert tools_out == []


def test_usage_from_both_providers_and_hostile_numbers() -> None:
    a = llm.Usage.from_anthropic(
        "claude",
        {
            "input_tokens": 12,
            "output_tokens": 30,
            "cache_read_input_tokens": 1000,
            "cache_creation_input_tokens": 200,
        },
    )
    assert (a.model, a.input, a.output, a.cache_read, a.cache_write) == ("claude", 12, 30, 1000, 200)
    o = llm.Usage.from_openai(
        "gpt",
        {"prompt_tokens": 1200, "completion_tokens": 7, "prompt_tokens_details": {"cached_tokens": 1024}},
    )
    assert (o.input, o.output, o.cache_read, o.cache_write) == (176, 7, 1024, 0)  # input excludes cached
    bad = llm.Usage.from_anthropic(
        "x",
        {
            "input_tokens": -5,
            "output_tokens": "9",
            "cache_read_input_tokens": 1e300,
            "cache_creation_input_tokens": True,
        },
    )
    assert (bad.input, bad.output, bad.cache_read, bad.cache_write) == (0, 0, llm.MAX_USAGE_TOKENS, 0)
    assert llm.Usage.from_openai("x", None).input == 0
    assert llm.Usage.from_anthropic("x", {"input_tokens": float("nan")}).input == 0
    meter = llm.UsageMeter()
    for usage in (a, a, o):
        meter.add(usage)
    assert meter.reports() == [
        {
            "model": "claude",
            "input_tokens": 24,
            "output_tokens": 60,
            "cache_read_tokens": 2000,
            "cache_write_tokens": 400,
            "calls": 2,
        },
        {
            "model": "gpt",
            "input_tokens": 176,
            "output_tokens": 7,
            "cache_read_tokens": 1024,
            "cache_write_tokens": 0,
            "calls": 1,
        },
    ]


def test_reported_model_name_is_the_servers_when_sane(group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    named = anthropic_text("hi")
    named[1]["model"] = "claude-sonnet-4-5-20250929"  # type: ignore[index]
    named[1]["usage"] = {"input_tokens": 3, "output_tokens": 4}  # type: ignore[index]
    weird = anthropic_text("hi")
    weird[1]["model"] = "x\n" * 300  # type: ignore[index]
    server = FakeModelServer([named, weird])
    try:
        provider = llm.make_provider(_cfg("anthropic", server.url, group, glob))
        meter = llm.UsageMeter()
        for _ in range(2):
            llm.run_tool_loop(provider, "sys", [], "hi", _toolbox(group).execute, [], meter=meter)
    finally:
        server.close()
    assert [(r["model"], r["input_tokens"], r["calls"]) for r in meter.reports()] == [
        ("claude-sonnet-4-5-20250929", 3, 1),
        ("test-model", 0, 1),
    ]
    assert "tools" not in server.requests[0]["body"]  # an empty tool list is left out
