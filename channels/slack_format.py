"""Markdown as agents write it, turned into Slack's mrkdwn, and cut into messages Slack keeps.

Slack has three control characters (`&`, `<`, `>`) and its own flavour of emphasis and links;
an agent writes CommonMark. Everything the agent wrote is escaped (so it cannot forge a mention,
a channel link or a `<!here>`); only links it wrote as Markdown become Slack links, and bold,
italics, strike, headings and bullets are restyled; code spans and fences are escaped, never
restyled. Long replies are split at paragraph, line or word boundaries below `MESSAGE_LIMIT`:
a code block that fits is moved whole to the next part, a longer one is closed at the cut and
reopened, so each part renders on its own.
"""

from __future__ import annotations

import re

MESSAGE_LIMIT = 3900  # Slack truncates long messages; stay well under its ~4000-character guidance
_FENCE = "```"


def escape(text: str) -> str:
    """Slack's three control characters; everything else is literal."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def unescape(text: str) -> str:
    """The inverse of `escape`, for what Slack sends us (its text arrives escaped)."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_AUTOLINK = re.compile(r"<(https?://[^\s>]+)>")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)
_BOLD = re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*|__(?=\S)(.+?)(?<=\S)__")
_ITALIC = re.compile(r"(?<![\w*])\*(?=\S)([^*\n]+?)(?<=\S)\*(?![\w*])")
_STRIKE = re.compile(r"~~(?=\S)(.+?)(?<=\S)~~")
_INLINE_CODE = re.compile(r"(`[^`\n]+`)")
_BOLD_MARK = "\x01"


def _inline(text: str) -> str:
    links: list[str] = []

    def keep(url: str, label: str | None = None) -> str:
        links.append(f"<{escape(url)}|{escape(label)}>" if label else f"<{escape(url)}>")
        return f"\x02{len(links) - 1}\x02"

    text = _LINK.sub(lambda m: keep(m.group(2), m.group(1)), text)
    text = _AUTOLINK.sub(lambda m: keep(m.group(1)), text)
    text = escape(text)
    text = _HEADING.sub(lambda m: f"{_BOLD_MARK}{m.group(1)}{_BOLD_MARK}", text)
    text = _BULLET.sub(lambda m: f"{m.group(1)}• ", text)
    text = _BOLD.sub(lambda m: f"{_BOLD_MARK}{m.group(1) or m.group(2)}{_BOLD_MARK}", text)
    text = _ITALIC.sub(r"_\1_", text)
    text = _STRIKE.sub(r"~\1~", text)
    text = text.replace(_BOLD_MARK, "*")
    return re.sub("\x02(\\d+)\x02", lambda m: links[int(m.group(1))], text)


def to_mrkdwn(markdown: str) -> str:
    """Agent Markdown → Slack mrkdwn; code (fenced and inline) is only escaped, never restyled."""
    out: list[str] = []
    for i, part in enumerate(re.split(r"(```.*?(?:```|\Z))", markdown, flags=re.DOTALL)):
        if i % 2:  # a fenced block: drop the language tag Slack would print literally
            body = part[3:-3] if part.endswith(_FENCE) and len(part) >= 6 else part[3:]
            first, nl, rest = body.partition("\n")
            if nl and re.fullmatch(r"[\w+#.-]*", first.strip()):
                body = rest
            out.append(f"{_FENCE}\n{escape(body.strip(chr(10)))}\n{_FENCE}" if body.strip() else "")
        else:
            pieces = _INLINE_CODE.split(part)
            out.append("".join(escape(p) if j % 2 else _inline(p) for j, p in enumerate(pieces)))
    return "".join(out)


def _cut(text: str, limit: int) -> int:
    window = text[:limit]
    for sep, floor in (("\n\n", limit // 3), ("\n", limit // 3), (" ", limit // 2)):
        at = window.rfind(sep)
        if at >= floor:
            return at + len(sep)
    return limit


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Chunks of at most `limit` characters, cut at paragraph, line or word boundaries.

    A code block that fits in a chunk is never split; one that is longer than a chunk is
    closed at the cut and reopened in the next chunk, so each chunk renders on its own.
    """
    chunks: list[str] = []
    rest = text.strip("\n")
    reserve = len(_FENCE) + 1
    while len(rest) > limit:
        cut = _cut(rest, limit - reserve)
        head, tail = rest[:cut], rest[cut:]
        if head.count(_FENCE) % 2:  # the cut falls inside a code block
            opening = head.rfind(_FENCE)
            if opening > 0 and head[:opening].strip():
                head, tail = head[:opening], head[opening:] + tail  # move the whole block on
            else:
                head, tail = head.rstrip("\n") + "\n" + _FENCE, _FENCE + "\n" + tail.lstrip("\n")
        chunks.append(head.rstrip())
        rest = tail.lstrip("\n") if not tail.startswith(_FENCE) else tail
    if rest.strip():
        chunks.append(rest.rstrip())
    return chunks or [""]
