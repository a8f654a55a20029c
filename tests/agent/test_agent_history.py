"""History persistence: restart survival, the summary, whole-turn splits, corruption."""

from __future__ import annotations

import json
from pathlib import Path

from groups.agent.history import History, HistoryStore, estimate_tokens, from_first_turn, split_turns
from groups.agent.llm import AnthropicProvider, OpenAIProvider


def _anthropic_turn(i: int, size: int = 2) -> list[dict]:
    return [
        {"role": "user", "content": f"prompt {i}"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "shell", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "o" * size}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]},
    ]


def _store(group: Path, provider: str = "anthropic") -> HistoryStore:
    cls = AnthropicProvider if provider == "anthropic" else OpenAIProvider
    return HistoryStore(str(group), provider, cls.is_turn_start)


def test_history_and_summary_survive_restart(tmp_path: Path) -> None:
    msgs = _anthropic_turn(1)
    _store(tmp_path).save(History("they like cats", msgs, 3))
    assert (tmp_path / ".clawgate" / "history.json").exists()
    loaded = _store(tmp_path).load()
    assert (loaded.summary, loaded.messages, loaded.compacted_turns) == ("they like cats", msgs, 3)
    assert not list((tmp_path / ".clawgate").glob("*.tmp"))


def test_long_history_is_kept_whole_never_cut_by_count(tmp_path: Path) -> None:
    """The old 40-message cut is gone: only compaction (with a summary) shortens history."""
    msgs = [m for i in range(30) for m in _anthropic_turn(i)]  # 120 messages
    _store(tmp_path).save(History("", msgs))
    assert _store(tmp_path).load().messages == msgs


def test_split_takes_whole_turns_from_the_newest_end() -> None:
    msgs = [m for i in range(6) for m in _anthropic_turn(i, size=400)]
    per_turn = estimate_tokens(_anthropic_turn(0, size=400))
    older, newer = split_turns(msgs, AnthropicProvider.is_turn_start, keep_tokens=2 * per_turn + 5)
    assert older + newer == msgs
    assert newer[0] == {"role": "user", "content": "prompt 4"} and len(newer) == 8
    # every tool_use in either half is followed by its tool_result
    for half in (older, newer):
        for idx, m in enumerate(half):
            if m["role"] == "assistant" and m["content"][0]["type"] == "tool_use":
                assert half[idx + 1]["content"][0]["tool_use_id"] == m["content"][0]["id"]
    older, newer = split_turns(msgs, AnthropicProvider.is_turn_start, keep_tokens=per_turn - 1)
    assert newer == [] and older == msgs  # the newest turn alone is too big: all of it is older
    assert split_turns(msgs, AnthropicProvider.is_turn_start, keep_tokens=10**9) == ([], msgs)


def test_history_always_starts_at_a_turn_start(tmp_path: Path) -> None:
    orphan = [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "x", "content": "?"}]}]
    assert from_first_turn(orphan + _anthropic_turn(1), AnthropicProvider.is_turn_start) == _anthropic_turn(1)
    assert from_first_turn([{"role": "assistant", "content": "x"}], AnthropicProvider.is_turn_start) == []
    _store(tmp_path).save(History("", orphan + _anthropic_turn(2)))
    assert _store(tmp_path).load().messages == _anthropic_turn(2)


def test_corrupt_history_is_kept_as_bak(tmp_path: Path) -> None:
    hist = tmp_path / ".clawgate" / "history.json"
    hist.parent.mkdir()
    hist.write_text("{not json")
    assert _store(tmp_path).load().messages == []
    assert (tmp_path / ".clawgate" / "history.json.bak").read_text() == "{not json"
    hist.write_text(json.dumps(["wrong", "shape"]))
    assert _store(tmp_path).load().messages == []
    hist.write_text(json.dumps({"version": 1, "provider": "anthropic", "summary": 7, "messages": []}))
    assert _store(tmp_path).load().summary == ""


def test_history_from_before_summaries_still_loads(tmp_path: Path) -> None:
    hist = tmp_path / ".clawgate" / "history.json"
    hist.parent.mkdir()
    hist.write_text(json.dumps({"version": 1, "provider": "anthropic", "messages": _anthropic_turn(1)}))
    loaded = _store(tmp_path).load()
    assert loaded.messages == _anthropic_turn(1) and loaded.summary == "" and loaded.compacted_turns == 0


def test_other_provider_keeps_the_summary_not_the_messages(tmp_path: Path) -> None:
    _store(tmp_path, "anthropic").save(History("the owner is Ann", _anthropic_turn(1), 5))
    openai_store = _store(tmp_path, "openai")
    loaded = openai_store.load()
    assert loaded.messages == [] and loaded.summary == "the owner is Ann" and loaded.compacted_turns == 5
    openai_store.save(
        History(loaded.summary, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    )
    assert _store(tmp_path, "anthropic").load().messages == []
    assert len(openai_store.load().messages) == 2


def test_compact_request_file(tmp_path: Path) -> None:
    store = _store(tmp_path)
    assert not store.compact_requested()
    (tmp_path / ".clawgate").mkdir()
    (tmp_path / ".clawgate" / "compact-requested").write_text("x")
    assert store.compact_requested()
    store.clear_compact_request()
    assert not store.compact_requested()
    store.clear_compact_request()  # idempotent
