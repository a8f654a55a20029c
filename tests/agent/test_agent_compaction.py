"""Long conversations: older turns folded into a model-written summary that the next request carries.

Real loopback model server; the "model" answers a summary request (recognised by its system
prompt) with a summary naming what it was given, and anything else with an echo.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent_fakes import FakeModelServer, Response, anthropic_text, openai_text

from groups.agent import compaction, history, llm, tools, turn
from groups.agent.config import Config


def _is_summary_request(body: dict[str, Any]) -> bool:
    system = body.get("system")
    if isinstance(system, list):
        system = " ".join(b.get("text", "") for b in system)
    if system is None:  # openai
        system = body["messages"][0]["content"]
    return "long-term memory" in str(system)


def _last_user_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return "".join(b.get("text", "") for b in content if isinstance(b, dict))


class Model:
    """A scripted model: summaries for summary requests, long echoes otherwise."""

    def __init__(self, provider: str = "anthropic", fail_summaries: bool = False) -> None:
        self.provider = provider
        self.fail_summaries = fail_summaries
        self.summaries = 0
        self.server = FakeModelServer([self.answer] * 200)

    def answer(self, record: dict[str, Any]) -> Response:
        body = record["body"]
        text_of = anthropic_text if self.provider == "anthropic" else openai_text
        if _is_summary_request(body):
            if self.fail_summaries:
                return 400, {"type": "error", "error": {"type": "invalid_request_error", "message": "no"}}, {}
            self.summaries += 1
            prompts = sorted(set(w for w in _last_user_text(body).split() if w.startswith("fact-")))
            status, payload, headers = text_of(f"SUMMARY {self.summaries}: " + " ".join(prompts))
            payload["usage"] = {"input_tokens": 500, "output_tokens": 50}
            return status, payload, headers
        status, payload, headers = text_of("echo " + _last_user_text(body)[-40:] + " " + "z" * 600)
        if self.provider == "anthropic":
            payload["usage"] = {
                "input_tokens": 10,
                "output_tokens": 20,
                "cache_read_input_tokens": 300,
                "cache_creation_input_tokens": 40,
            }
        else:
            payload["usage"] = {
                "prompt_tokens": 350,
                "completion_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 300},
            }
        return status, payload, headers

    def turn_requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.server.requests if not _is_summary_request(r["body"])]

    def summary_requests(self) -> list[dict[str, Any]]:
        return [r["body"] for r in self.server.requests if _is_summary_request(r["body"])]


def _runner(group: Path, model: Model, budget: int, logs: list[tuple[str, str]]) -> turn.TurnRunner:
    base = model.server.url if model.provider == "anthropic" else model.server.url + "/v1"
    cfg = Config(
        provider=model.provider, model="m", base_url=base, group_dir=str(group), global_dir=str(group)
    )
    provider = llm.make_provider(cfg)
    store = history.HistoryStore(str(group), provider.name, provider.is_turn_start)
    box = tools.Toolbox(str(group), lambda text: None)
    return turn.TurnRunner(
        provider, store, lambda: "sys", box.execute, lambda lv, m: logs.append((lv, m)), budget_tokens=budget
    )


def _saved(group: Path) -> dict[str, Any]:
    return json.loads((group / ".clawgate" / "history.json").read_text())


def test_long_conversation_is_compacted_and_the_summary_carried_across_restarts(tmp_path: Path) -> None:
    model = Model()
    logs: list[tuple[str, str]] = []
    try:
        runner = _runner(tmp_path, model, budget=1000, logs=logs)
        for i in range(8):
            text, error = runner.run(f"fact-{i} " + "y" * 400)
            assert error is None and text and text.startswith("echo ")
        assert model.summaries >= 1
        for body in model.turn_requests():  # what came before the new prompt stayed within budget
            earlier = json.loads(
                json.dumps(body["messages"][:-1]).replace(', "cache_control": {"type": "ephemeral"}', "")
            )
            assert history.estimate_tokens(earlier) <= 1000
        saved = _saved(tmp_path)
        assert saved["summary"].startswith(f"SUMMARY {model.summaries}: ")
        assert saved["compacted_turns"] >= 1
        # nothing vanished: every fact is in the summary or still verbatim in history
        kept = json.dumps(saved["messages"])
        for i in range(8):
            assert f"fact-{i}" in saved["summary"] or f"fact-{i}" in kept, i
        assert "fact-0" in saved["summary"]  # the oldest one was summarised, not cut

        # the request after a compaction starts with the summary, framed as data
        last = model.turn_requests()[-1]
        first, ack = last["messages"][0], last["messages"][1]
        first_text = first["content"] if isinstance(first["content"], str) else first["content"][0]["text"]
        assert "<conversation-summary>" in first_text and saved["summary"] in first_text
        assert first["role"] == "user" and ack["role"] == "assistant"
        # the previous summary is folded into the next one
        if model.summaries > 1:
            assert "SUMMARY 1:" in _last_user_text(model.summary_requests()[1])
        # the summary request carries no tools and the transcript of older turns
        summary_body = model.summary_requests()[0]
        assert "tools" not in summary_body and "fact-0" in _last_user_text(summary_body)
        assert any("compacted" in m for lv, m in logs if lv == "info")

        # a new runner (container restart) sends the stored summary with the next turn
        again = _runner(tmp_path, model, budget=1000, logs=logs)
        again.run("fact-new")
        carried = model.turn_requests()[-1]["messages"][0]
        carried_text = (
            carried["content"] if isinstance(carried["content"], str) else carried["content"][0]["text"]
        )
        assert saved["summary"] in carried_text
    finally:
        model.server.close()


def test_compaction_usage_is_counted_in_the_turn(tmp_path: Path) -> None:
    model = Model()
    try:
        runner = _runner(tmp_path, model, budget=1000, logs=[])
        runner.run("fact-a " + "y" * 2500)
        runner.run("fact-b " + "y" * 2500)  # over budget: summary call + turn call
        assert model.summaries == 1
        (report,) = runner.usage.reports()
        assert report == {
            "model": "m",
            "input_tokens": 510,
            "output_tokens": 70,
            "cache_read_tokens": 300,
            "cache_write_tokens": 40,
            "calls": 2,
        }
    finally:
        model.server.close()


def test_openai_history_is_compacted_too(tmp_path: Path) -> None:
    model = Model("openai")
    try:
        runner = _runner(tmp_path, model, budget=1000, logs=[])
        for i in range(6):
            assert runner.run(f"fact-{i} " + "y" * 400)[1] is None
        assert model.summaries >= 1
        last = model.turn_requests()[-1]["messages"]
        assert last[0]["role"] == "system" and "<conversation-summary>" in last[1]["content"]
        assert all("cache_control" not in json.dumps(b) for b in model.turn_requests())
        (report,) = runner.usage.reports()
        assert report["input_tokens"] == 50 and report["cache_read_tokens"] == 300
    finally:
        model.server.close()


def test_compact_request_forces_a_summary_of_everything_at_the_next_turn(tmp_path: Path) -> None:
    model = Model()
    try:
        runner = _runner(tmp_path, model, budget=100_000, logs=[])
        runner.run("fact-one")
        runner.run("fact-two")
        assert model.summaries == 0  # far within budget
        (tmp_path / ".clawgate" / "compact-requested").write_text("requested with /compact\n")
        runner.run("fact-three")
        assert model.summaries == 1
        assert not (tmp_path / ".clawgate" / "compact-requested").exists()
        saved = _saved(tmp_path)
        assert "fact-one" in saved["summary"] and "fact-two" in saved["summary"]
        assert saved["compacted_turns"] == 2
        sent = model.turn_requests()[-1]["messages"]
        assert len(sent) == 3  # summary, ack, the new prompt: all older turns went into the summary
    finally:
        model.server.close()


def test_failed_compaction_keeps_history_and_the_turn_runs(tmp_path: Path) -> None:
    model = Model(fail_summaries=True)
    logs: list[tuple[str, str]] = []
    try:
        runner = _runner(tmp_path, model, budget=1000, logs=logs)
        assert runner.run("fact-0 " + "y" * 400)[1] is None
        (tmp_path / ".clawgate" / "compact-requested").write_text("x")
        for i in range(1, 4):
            text, error = runner.run(f"fact-{i} " + "y" * 400)
            assert error is None and text
        saved = _saved(tmp_path)
        assert saved["summary"] == "" and "fact-0" in json.dumps(saved["messages"])  # nothing lost
        assert (tmp_path / ".clawgate" / "compact-requested").exists()  # asked again next turn
        assert any("could not compact" in m for lv, m in logs if lv == "warning")

        # far past the budget with summaries still failing: the oldest turns go, and it says so
        for i in range(4, 16):
            runner.run(f"fact-{i} " + "y" * 400)
        saved = _saved(tmp_path)
        assert "dropped without a summary" in saved["summary"]
        assert history.estimate_tokens(saved["messages"]) <= 4 * 1000
        assert any("dropped" in m for lv, m in logs if lv == "warning")
    finally:
        model.server.close()


def test_transcript_rendering_clips_and_covers_both_shapes() -> None:
    msgs = [
        {"role": "user", "content": "hello"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "shell", "input": {"c": "ls"}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "x" * 5000}]},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "done"},
    ]
    lines = compaction.render(msgs)
    assert lines[0] == "user: hello"
    assert lines[1].startswith("assistant used tool shell:")
    assert lines[2].startswith("tool result: ") and lines[2].endswith("[...clipped]")
    assert len(lines[2]) <= compaction.TOOL_RESULT_CLIP + 20
    assert lines[3] == "assistant used tool f: {}" and lines[4] == "tool result: done"
    assert compaction.chunks(["a" * 10] * 5, 25) == ["a" * 10 + "\n" + "a" * 10] * 2 + ["a" * 10]
