"""Markdown → Slack mrkdwn, chunking, and the `[slack]` config section."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.slack_format import split_message, to_mrkdwn
from core.config import ConfigError, parse


def test_markdown_becomes_mrkdwn() -> None:
    assert to_mrkdwn("**bold** and __also__, *it*, ~~gone~~") == "*bold* and *also*, _it_, ~gone~"
    assert to_mrkdwn("see [the docs](https://x.io/a?b=1&c=2)") == "see <https://x.io/a?b=1&amp;c=2|the docs>"
    assert to_mrkdwn("# Title\n- one\n* two") == "*Title*\n• one\n• two"
    assert to_mrkdwn("a < b && c > d <!channel>") == "a &lt; b &amp;&amp; c &gt; d &lt;!channel&gt;"


def test_code_is_escaped_but_never_restyled() -> None:
    assert to_mrkdwn("`**x** <y>`") == "`**x** &lt;y&gt;`"
    assert to_mrkdwn("```python\nif a < b: **c**\n```") == "```\nif a &lt; b: **c**\n```"


def test_split_prefers_paragraphs_then_lines_then_words() -> None:
    text = "a" * 50 + "\n\n" + "b" * 50
    assert split_message(text, limit=80) == ["a" * 50, "b" * 50]
    words = " ".join(["word"] * 100)
    chunks = split_message(words, limit=60)
    assert all(len(c) <= 60 for c in chunks) and " ".join(chunks) == words
    assert split_message("short") == ["short"]


def test_split_keeps_code_blocks_renderable() -> None:
    intro = "intro " * 5
    block = "```\n" + "\n".join(f"x{i}" for i in range(10)) + "\n```"
    chunks = split_message(intro + "\n" + block, limit=60)
    assert chunks[0] == intro.strip() and chunks[1] == block  # the block moved on whole
    huge = "```\n" + "\n".join(f"line{i}" for i in range(100)) + "\n```"
    chunks = split_message(huge, limit=100)
    assert len(chunks) > 1 and all(len(c) <= 100 and c.count("```") == 2 for c in chunks)
    assert "".join(chunks).count("line") == 100


def test_slack_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse("", Path("c")).slack.enabled is False
    with pytest.raises(ConfigError, match="slack.bot_token"):
        parse("[slack]\nenabled = true\n", Path("c"))
    with pytest.raises(ConfigError, match="slack.signing_secret"):
        parse('[slack]\nenabled = true\nmode = "http"\nbot_token = "xoxb-1"\n', Path("c"))
    with pytest.raises(ConfigError, match="mode"):
        parse('[slack]\nmode = "webhook"\n', Path("c"))
    monkeypatch.setenv("CLAWGATE_SLACK_BOT_TOKEN", "xoxb-env")
    monkeypatch.setenv("CLAWGATE_SLACK_APP_TOKEN", "xapp-env")
    config = parse('[slack]\nenabled = true\nbase_url = "http://127.0.0.1:9/api"\n', Path("c")).slack
    assert config.bot_token is not None and config.bot_token.get_secret_value() == "xoxb-env"
    assert config.base_url == "http://127.0.0.1:9/api/"
    assert "xoxb-env" not in repr(config) and "xapp-env" not in repr(config)
