"""TurnRunner: failures become short errors and leave history well-formed for the next turn."""

from __future__ import annotations

from pathlib import Path

from agent_fakes import FakeModelServer, anthropic_text

from groups.agent import history, llm, tools, turn
from groups.agent.config import Config


def test_failed_turn_keeps_valid_history_and_next_turn_works(tmp_path: Path) -> None:
    overloaded = (529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, {})
    server = FakeModelServer([overloaded, anthropic_text("back again")])
    logs: list[tuple[str, str]] = []
    try:
        cfg = Config(model="m", base_url=server.url, group_dir=str(tmp_path), global_dir=str(tmp_path))
        provider = llm.AnthropicProvider(cfg, retries=0)
        store = history.HistoryStore(str(tmp_path), provider.name, provider.is_turn_start)
        box = tools.Toolbox(str(tmp_path), lambda text: None)
        runner = turn.TurnRunner(
            provider, store, lambda: "sys", box.execute, lambda lv, m: logs.append((lv, m))
        )
        assert runner.run("first") == (None, "model error: HTTP 529 from upstream (overloaded)")
        assert runner.run("second") == ("back again", None)
    finally:
        server.close()
    sent = server.requests[1]["body"]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert "this turn failed" in sent[1]["content"][0]["text"]
    assert logs and logs[0][0] == "warning"
    # persisted: a fresh runner (container restart) sees both turns
    reloaded = store.load().messages
    assert len(reloaded) == 4 and reloaded[-1]["content"][0]["text"] == "back again"
    assert [r["calls"] for r in runner.usage.reports()] == [1]  # the last turn's, failed one apart


def test_unexpected_exception_is_contained(tmp_path: Path) -> None:
    class Broken:
        name = "anthropic"
        is_turn_start = staticmethod(llm.AnthropicProvider.is_turn_start)
        user_message = llm.AnthropicProvider.user_message
        assistant_message = llm.AnthropicProvider.assistant_message

        def step(self, *args: object) -> None:
            raise KeyError("boom")

    logs: list[tuple[str, str]] = []
    store = history.HistoryStore(str(tmp_path), "anthropic", llm.AnthropicProvider.is_turn_start)
    runner = turn.TurnRunner(
        Broken(), store, lambda: "sys", lambda n, a: ("", False), lambda *a: logs.append(a)
    )
    assert runner.run("hi") == (None, "internal error: KeyError")
    assert logs[0][0] == "error" and "Traceback" in logs[0][1]


def test_budget_refusal_ends_the_turn_at_once_with_the_vaults_message(tmp_path: Path) -> None:
    """A 403 whose message starts "clawgate budget:" (proxy/budget.py) is final: no retry, no
    further call, and the message is the turn's error, relayed to the chat as it is."""
    message = "clawgate budget: group team's daily USD budget ($2.00) is used up; the owner can raise it"
    refusals = {
        "anthropic": (403, {"type": "error", "error": {"type": "permission_error", "message": message}}, {}),
        "openai": (
            403,
            {"error": {"message": message, "type": "insufficient_quota", "code": "budget_exhausted"}},
            {},
        ),
    }
    for name, refusal in refusals.items():
        server = FakeModelServer([refusal, refusal, refusal])
        try:
            cfg = Config(
                model="m", base_url=server.url, group_dir=str(tmp_path / name), global_dir=str(tmp_path)
            )
            (tmp_path / name).mkdir()
            provider = llm.AnthropicProvider(cfg) if name == "anthropic" else llm.OpenAIProvider(cfg)
            store = history.HistoryStore(str(tmp_path / name), provider.name, provider.is_turn_start)
            box = tools.Toolbox(str(tmp_path / name), lambda text: None)
            runner = turn.TurnRunner(provider, store, lambda: "sys", box.execute, lambda lv, m: None)
            assert runner.run("hello") == (None, message)
        finally:
            server.close()
        assert len(server.requests) == 1, name  # the default transport retries would have made 3
