"""History persistence: restart survival, trimming at user-turn boundaries, corruption."""

from __future__ import annotations

import json
from pathlib import Path

from groups.agent.history import HistoryStore, trim
from groups.agent.llm import AnthropicProvider, OpenAIProvider


def _anthropic_turn(i: int) -> list[dict]:
    return [
        {"role": "user", "content": f"prompt {i}"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": f"t{i}", "name": "shell", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": f"t{i}", "content": "ok"}]},
        {"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]},
    ]


def _store(group: Path, provider: str = "anthropic", **kw: int) -> HistoryStore:
    cls = AnthropicProvider if provider == "anthropic" else OpenAIProvider
    return HistoryStore(str(group), provider, cls.is_turn_start, **kw)


def test_history_survives_restart(tmp_path: Path) -> None:
    msgs = _anthropic_turn(1)
    _store(tmp_path).save(msgs)
    assert (tmp_path / ".clawgate" / "history.json").exists()
    assert _store(tmp_path).load() == msgs
    assert not list((tmp_path / ".clawgate").glob("*.tmp"))


def test_trim_keeps_whole_turns_and_pairs(tmp_path: Path) -> None:
    msgs = [m for i in range(30) for m in _anthropic_turn(i)]  # 120 messages
    kept = _store(tmp_path, max_messages=40).save(msgs)
    assert len(kept) == 40
    assert kept[0] == {"role": "user", "content": "prompt 20"}
    # every tool_use is followed by its tool_result
    for idx, m in enumerate(kept):
        if m["role"] == "assistant" and m["content"][0]["type"] == "tool_use":
            assert kept[idx + 1]["content"][0]["tool_use_id"] == m["content"][0]["id"]
    odd = trim(msgs, AnthropicProvider.is_turn_start, max_messages=39)
    assert len(odd) == 36 and odd[0]["content"] == "prompt 21"


def test_trim_by_size_and_oversized_newest_turn() -> None:
    msgs = [m for i in range(5) for m in _anthropic_turn(i)]
    msgs[-2]["content"][0]["content"] = "x" * 5000
    kept = trim(msgs, AnthropicProvider.is_turn_start, max_messages=40, max_chars=1000)
    assert kept[0]["content"] == "prompt 4" and len(kept) == 4  # newest turn always kept
    assert trim([{"role": "assistant", "content": "orphan"}], AnthropicProvider.is_turn_start) == []


def test_corrupt_history_is_kept_as_bak(tmp_path: Path) -> None:
    hist = tmp_path / ".clawgate" / "history.json"
    hist.parent.mkdir()
    hist.write_text("{not json")
    assert _store(tmp_path).load() == []
    assert (tmp_path / ".clawgate" / "history.json.bak").read_text() == "{not json"
    hist.write_text(json.dumps(["wrong", "shape"]))
    assert _store(tmp_path).load() == []


def test_other_provider_history_starts_fresh(tmp_path: Path) -> None:
    _store(tmp_path, "anthropic").save(_anthropic_turn(1))
    openai_store = _store(tmp_path, "openai")
    assert openai_store.load() == []
    openai_store.save([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert _store(tmp_path, "anthropic").load() == []
    assert len(openai_store.load()) == 2
