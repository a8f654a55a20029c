"""Markdown → Telegram HTML and the splitter that keeps every chunk valid."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from channels.telegram_format import html_to_plain, markdown_to_html, render, split_html
from tests.fakes.telegram_api import check_html


def test_markdown_renders_to_telegram_html() -> None:
    text = "# Title\n**b** *i* _j_ ~~s~~ `a<b` [site](https://x.org/a_b?c=1&d=2) 1 < 2 & snake_case\n- item"
    assert markdown_to_html(text) == (
        "<b>Title</b>\n<b>b</b> <i>i</i> <i>j</i> <s>s</s> <code>a&lt;b</code> "
        '<a href="https://x.org/a_b?c=1&amp;d=2">site</a> 1 &lt; 2 &amp; snake_case\n• item'
    )
    assert markdown_to_html("```python\nif a < b:\n    **x**\n```") == "<pre>if a &lt; b:\n    **x**</pre>"


def test_split_prefers_paragraphs_then_lines_then_words() -> None:
    text = "alpha beta delta\n\n" + "gamma " * 10
    assert split_html(text, 40) == [
        "alpha beta delta",
        "gamma gamma gamma gamma gamma gamma",
        "gamma gamma gamma gamma",
    ]
    assert split_html("<b>" + "word " * 30 + "</b>", 50)[0].endswith("</b>")
    assert all(c.startswith("<b>") for c in split_html("<b>" + "word " * 30 + "</b>", 50))


def test_code_block_is_closed_and_reopened() -> None:
    chunks = render("```\n" + "\n".join(f"row {i}" for i in range(50)) + "\n```", 100)
    assert len(chunks) > 2
    assert all(c.startswith("<pre>") and c.endswith("</pre>") for c in chunks)
    rows = [r for c in chunks for r in re.sub(r"</?pre>", "", c).split("\n") if r]
    assert rows == [f"row {i}" for i in range(50)]


def test_entities_are_never_cut() -> None:
    chunks = split_html("&amp;" * 100, 42)
    assert all(re.fullmatch(r"(&amp;)+", c) for c in chunks)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["word", "**bold text**", "`co<de>`", "_it_", "\n", "\n\n", "```\nx < 1\ny\n```", "a&b", " "]
        ),
        max_size=80,
    ),
    st.integers(min_value=40, max_value=300),
)
def test_every_chunk_is_valid_and_nothing_is_lost(parts: list[str], limit: int) -> None:
    text = " ".join(parts)
    chunks = render(text, limit)
    for chunk in chunks:
        assert len(chunk) <= limit
        check_html(chunk)
    whole = re.sub(r"\s+", "", html_to_plain(markdown_to_html(text)))
    assert re.sub(r"\s+", "", "".join(html_to_plain(c) for c in chunks)) == whole
