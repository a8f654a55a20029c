"""Agent Markdown → Telegram HTML, and splitting that HTML into messages Telegram accepts.

Telegram's HTML mode knows a handful of tags (`b i s u code pre a blockquote`) and
rejects anything unbalanced, so the renderer escapes every other `<`, `>` and `&`, and
the splitter tracks the open tags: a chunk that ends inside `<pre>` or `<b>` closes them
and the next chunk reopens them. Breaks fall at a paragraph, else a line, else a word
boundary, never inside a tag or an entity.
"""

from __future__ import annotations

import html
import re

LIMIT = 4096

_FENCE = re.compile(r"```[^\n`]*\n?(.*?)```", re.DOTALL)
_INLINE_CODE = re.compile(r"`([^`\n]+)`")
_LINK = re.compile(r"\[([^\]\n]+)\]\((https?://[^\s)]+)\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)
_BULLET = re.compile(r"^(\s*)[-*+]\s+", re.MULTILINE)
_INLINE_RULES = (
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*", re.DOTALL), r"<b>\1</b>"),
    (re.compile(r"(?<!\w)__(?=\S)(.+?)(?<=\S)__(?!\w)", re.DOTALL), r"<b>\1</b>"),
    (re.compile(r"~~(?=\S)(.+?)(?<=\S)~~", re.DOTALL), r"<s>\1</s>"),
    (re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*])\*(?![\w*])"), r"<i>\1</i>"),
    (re.compile(r"(?<![\w_])_(?=[^\s_])(.+?)(?<=[^\s_])_(?![\w_])"), r"<i>\1</i>"),
)
_TAG = re.compile(r"<(/?)([a-z]+)[^>]*>")
_ATOM = re.compile(r"<[^>]*>|&[#\w]+;|[^<&]|[<&]", re.DOTALL)


def _escape(text: str) -> str:
    return html.escape(text, quote=False)


def _inline(text: str) -> str:
    """One prose segment (no fenced code): escape, then inline code, links, emphasis."""
    stash: list[str] = []
    text = text.replace("\x00", "")

    def keep(fragment: str) -> str:
        stash.append(fragment)
        return f"\x00{len(stash) - 1}\x00"

    text = _INLINE_CODE.sub(lambda m: keep(f"<code>{_escape(m.group(1))}</code>"), text)
    text = _LINK.sub(
        lambda m: keep(f'<a href="{_escape(m.group(2)).replace(chr(34), "%22")}">{_escape(m.group(1))}</a>'),
        text,
    )
    text = _escape(text)  # placeholders survive: escaping touches only < > &
    text = _HEADING.sub(r"<b>\1</b>", text)
    text = _BULLET.sub(r"\1• ", text)
    for pattern, replacement in _INLINE_RULES:
        text = pattern.sub(replacement, text)
    return re.sub(r"\x00(\d+)\x00", lambda m: stash[int(m.group(1))], text)


def markdown_to_html(text: str) -> str:
    """Render the Markdown an agent writes (bold, italic, code, pre, links) as Telegram HTML."""
    out: list[str] = []
    position = 0
    for match in _FENCE.finditer(text):
        out.append(_inline(text[position : match.start()]))
        out.append(f"<pre>{_escape(match.group(1).rstrip(chr(10)))}</pre>")
        position = match.end()
    out.append(_inline(text[position:]))
    return "".join(out).strip()


def html_to_plain(fragment: str) -> str:
    """What a chunk says without markup: the fallback when Telegram rejects our HTML."""
    return html.unescape(_TAG.sub("", fragment))


def _open_tags(stack: list[tuple[str, str]]) -> str:
    return "".join(opening for _, opening in stack)


def _close_tags(stack: list[tuple[str, str]]) -> str:
    return "".join(f"</{name}>" for name, _ in reversed(stack))


def split_html(text: str, limit: int = LIMIT) -> list[str]:
    """Split rendered HTML into chunks of at most `limit` characters, each with balanced tags."""
    if len(text) <= limit:
        return [text] if text.strip() else []
    atoms = _ATOM.findall(text)
    chunks: list[str] = []
    start = 0
    stack: list[tuple[str, str]] = []
    while start < len(atoms):
        # skip whitespace at the start of a chunk outside <pre>
        while start < len(atoms) and atoms[start].isspace() and not any(n == "pre" for n, _ in stack):
            start += 1
        if start >= len(atoms):
            break
        prefix = _open_tags(stack)
        length = len(prefix)
        current = list(stack)
        best: dict[int, tuple[int, list[tuple[str, str]]]] = {}  # priority -> (cut index, stack there)
        index = start
        cut: tuple[int, list[tuple[str, str]]] | None = None
        while index < len(atoms):
            atom = atoms[index]
            after = _apply(current, atom)
            if length + len(atom) + len(_close_tags(after)) > limit:
                cut = _choose(best, index, current, start)
                break
            length += len(atom)
            current = after
            index += 1
            if not atom.startswith("<"):
                previous = atoms[index - 2] if index - 2 >= start else ""
                if atom == "\n" and previous == "\n":
                    best[0] = (index, list(current))
                elif atom == "\n":
                    best[1] = (index, list(current))
                elif atom == " ":
                    best[2] = (index, list(current))
        if cut is None:
            cut = (len(atoms), current)
        end, end_stack = cut
        if end <= start:  # a single atom wider than the limit cannot happen with sane limits
            end, end_stack = start + 1, _apply(stack, atoms[start])
        body = prefix + "".join(atoms[start:end])
        chunk = body.rstrip() + _close_tags(end_stack)
        if html_to_plain(chunk).strip():
            chunks.append(chunk)
        start, stack = end, end_stack
    return chunks


def _choose(
    best: dict[int, tuple[int, list[tuple[str, str]]]],
    index: int,
    current: list[tuple[str, str]],
    start: int,
) -> tuple[int, list[tuple[str, str]]]:
    span = index - start
    for priority in (0, 1, 2):
        candidate = best.get(priority)
        # a paragraph or line break is worth it only if it does not leave a tiny chunk
        if candidate is not None and (priority == 2 or candidate[0] - start >= span // 3):
            return candidate
    return index, list(current)


def _apply(stack: list[tuple[str, str]], atom: str) -> list[tuple[str, str]]:
    match = _TAG.fullmatch(atom)
    if match is None:
        return stack
    closing, name = match.group(1), match.group(2)
    if not closing:
        return [*stack, (name, atom)]
    for position in range(len(stack) - 1, -1, -1):
        if stack[position][0] == name:
            return stack[:position]
    return stack


def render(text: str, limit: int = LIMIT) -> list[str]:
    """Markdown in, Telegram HTML messages out (each within `limit`)."""
    return split_html(markdown_to_html(text), limit)


def apply_trigger(text: str, bot_username: str | None, replied_to_bot: bool, assistant: str) -> str:
    """A mention of the bot or a reply to it becomes `@<assistant> <text without the mention>`.

    The gateway's trigger rule knows only the assistant's name, not the bot's username, so
    the channel rewrites Telegram's two ways of addressing the bot into that one form.
    """
    if text.lstrip().startswith("/"):
        return text  # commands: `/cmd@bot` is understood by the command parser
    mentioned = False
    if bot_username:
        mention = re.compile(rf"(?<![\w@])@{re.escape(bot_username)}(?!\w)", re.IGNORECASE)
        text, count = mention.subn("", text)
        mentioned = count > 0
        text = re.sub(r"[ \t]{2,}", " ", text).strip()
    if not (mentioned or replied_to_bot):
        return text
    trigger = f"@{assistant}"
    if re.search(rf"(?<![\w@]){re.escape(trigger)}(?!\w)", text, re.IGNORECASE):
        return text
    return f"{trigger} {text}".strip()
