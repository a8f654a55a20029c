"""A clone of the repository is complete: nothing in it points outside it, every file the docs
name exists, and every invariant a comment cites is one of the numbered invariants in
docs/ARCHITECTURE.md.

This repository was once developed next to a design document that lived outside it; comments
and the README pointed there, and a public clone had no architecture at all. The architecture
now lives in docs/ARCHITECTURE.md, and these checks keep it the only place such references go.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
THIS_FILE = Path(__file__).resolve()

# Spelled in pieces so this file does not match its own patterns.
_OUTSIDE = {
    "a sibling folder of the checkout": re.compile(re.escape("../" + "shared")),
    "the design document that lived outside the repository": re.compile(re.escape("DESIGN" + ".md")),
    "the development machine's absolute paths": re.compile(r"(?<![\w./~-])/" + "work" + r"(?![\w-])"),
}
_MD_LINK = re.compile(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_CITATION = re.compile(r"\binvariants?\b((?:[\s,]+(?:and\s+)?\d+)*)", re.IGNORECASE)
_NUMBERED = re.compile(r"^(\d+)\. \*\*", re.MULTILINE)
_CODE_SUFFIXES = {".py", ".sh", ".mjs", ".toml", ".cfg"}


def repository_files() -> list[Path]:
    """Tracked files plus new ones not yet committed (never ignored ones such as .venv)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    files = []
    for name in filter(None, listed):
        path = ROOT / name
        if "node_modules" in path.parts or not path.is_file():
            continue
        files.append(path)
    return files


def _text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def _is_code(path: Path) -> bool:
    named = path.name in {"Makefile", "run"} or path.name.startswith("Dockerfile")
    return named or path.suffix in _CODE_SUFFIXES


def outside_references(files: list[Path]) -> list[str]:
    problems = []
    for path in files:
        if path == THIS_FILE or (text := _text(path)) is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for what, pattern in _OUTSIDE.items():
                if pattern.search(line):
                    problems.append(f"{path.relative_to(ROOT)}:{number} refers to {what}: {line.strip()}")
    return problems


def broken_links(files: list[Path]) -> list[str]:
    """Relative Markdown links that leave the repository or name a file it does not have."""
    problems = []
    for path in files:
        if path.suffix != ".md" or (text := _text(path)) is None:
            continue
        for target in _MD_LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # https:, mailto:, an anchor in the same page
            resolved = (path.parent / target.split("#", 1)[0]).resolve()
            if not resolved.is_relative_to(ROOT):
                problems.append(f"{path.relative_to(ROOT)} links outside the repository: {target}")
            elif not resolved.exists():
                problems.append(f"{path.relative_to(ROOT)} links to a missing file: {target}")
    return problems


_TOP_LEVEL = ("core", "gateway", "channels", "groups", "proxy", "tests", "benchmarks", "docs", ".ci")
_CODE_SPAN = re.compile(r"`([^`\s<>]+)`")  # `<name>` placeholders are not paths


def _expand(pattern: str) -> list[str]:
    """`groups/sandbox/{docker,bwrap}.py` → both files."""
    braces = re.search(r"\{([^}]*)\}", pattern)
    if braces is None:
        return [pattern]
    head, tail = pattern[: braces.start()], pattern[braces.end() :]
    return [path for alt in braces.group(1).split(",") for path in _expand(head + alt + tail)]


def missing_paths(files: list[Path]) -> list[str]:
    """Repository paths the Markdown files name in code spans that do not exist (any more)."""
    problems = []
    for path in files:
        if path.suffix != ".md" or path.name == "CHANGELOG.md" or (text := _text(path)) is None:
            continue  # the changelog may name what was moved or removed
        for span in _CODE_SPAN.findall(text):
            if not span.startswith(tuple(f"{top}/" for top in _TOP_LEVEL)):
                continue
            name = span.split("::", 1)[0]
            for candidate in _expand(name):  # `tests/x.py::test_y`
                if not any(ROOT.glob(candidate.rstrip("/"))):  # `tests/…/test_sandbox_hardening*.py`
                    problems.append(f"{path.relative_to(ROOT)} names {span}, which does not exist")
                elif "::" in span and not _defines(candidate, span.split("::")[-1]):
                    problems.append(f"{path.relative_to(ROOT)} names {span}, which {name} does not define")
    return problems


def _defines(files: str, name: str) -> bool:
    """Whether a file the glob names defines the test (a glob too: `test_host_env_*`; a
    parametrized id `[…]` is dropped). A test renamed under its citation is a claim nobody checks."""
    name = re.escape(name.split("[", 1)[0]).replace(r"\*", r"\w*")
    defined = re.compile(rf"^\s*(?:async\s+)?(?:def|class)\s+{name}\b", re.MULTILINE)
    return any(defined.search(f.read_text(encoding="utf-8")) for f in ROOT.glob(files))


_README_CITATION = re.compile(r"README(?:'s)?\s+((?:(['\"])[A-Z][^'\"\n]{1,80}\2(?:,\s*|\s+and\s+)?)+)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*$", re.MULTILINE)


def readme_sections() -> set[str]:
    return set(_HEADING.findall((ROOT / "README.md").read_text(encoding="utf-8")))


def section_citation_problems(files: list[Path], sections: set[str]) -> list[str]:
    """In code, `README 'Model budgets'` names a heading the README has: a section renamed or
    split leaves a docstring sending the reader nowhere."""
    problems = []
    for path in files:
        if path == THIS_FILE or not _is_code(path) or (text := _text(path)) is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in _README_CITATION.finditer(line):
                for name in re.findall(r"['\"]([^'\"]+)['\"]", match.group(1)):
                    if name not in sections:
                        where = f"{path.relative_to(ROOT)}:{number}"
                        problems.append(f"{where} cites README section {name!r}, which the README lacks")
    return problems


def architecture_invariants(text: str) -> set[int]:
    invariants_part = text.split("## Invariants", 1)[1].split("\n## ", 1)[0]
    return {int(n) for n in _NUMBERED.findall(invariants_part)}


def citation_problems(files: list[Path], known: set[int]) -> list[str]:
    """In code, every mention of an invariant cites it by a number docs/ARCHITECTURE.md has."""
    problems = []
    for path in files:
        if path == THIS_FILE or not _is_code(path) or (text := _text(path)) is None:
            continue
        for number, line in enumerate(text.splitlines(), 1):
            for match in _CITATION.finditer(line):
                cited = {int(n) for n in re.findall(r"\d+", match.group(1))}
                where = f"{path.relative_to(ROOT)}:{number}"
                if not cited:
                    problems.append(f"{where} mentions an invariant without its number: {line.strip()}")
                for n in sorted(cited - known):
                    problems.append(f"{where} cites invariant {n}, which docs/ARCHITECTURE.md does not have")
    return problems


def test_nothing_refers_to_a_path_outside_the_repository() -> None:
    assert outside_references(repository_files()) == []


def test_every_markdown_link_stays_inside_the_repository_and_resolves() -> None:
    assert broken_links(repository_files()) == []


def test_every_repository_path_the_docs_name_exists() -> None:
    # Files move (the store became a package, config moved to core/); the docs must follow.
    assert missing_paths(repository_files()) == []


def test_code_cites_invariants_by_a_number_the_architecture_has() -> None:
    known = architecture_invariants(ARCHITECTURE.read_text(encoding="utf-8"))
    assert known == set(range(1, len(known) + 1)) and len(known) >= 12  # numbered 1..n, none lost
    assert citation_problems(repository_files(), known) == []


def test_code_cites_readme_sections_the_readme_has() -> None:
    assert section_citation_problems(repository_files(), readme_sections()) == []


# --- the checks fail on the mistakes they exist for ------------------------------------------


def test_the_checks_find_outside_paths_bad_links_and_bad_citations(tmp_path: Path) -> None:
    # Files under the repository root (so relative paths print), removed afterwards.
    scratch = ROOT / ".pytest-links-check"
    scratch.mkdir(exist_ok=True)
    try:
        doc = scratch / "notes.md"
        doc.write_text(
            "See [design](../../" + "shared/" + "DESIGN" + ".md), [gone](missing.md), "
            "[ok](../README.md) and [web](https://example.org).\n"
            "`gateway/app.py`, `groups/sandbox/{docker,podman}.py`, `tests/unit/test_gone.py::test_x`,\n"
            "`tests/unit/test_groupfs*.py`, `core/`, `channels/<name>.py`, `~/.config/clawgate`,\n"
            "`tests/unit/test_repository_links.py::test_gone`,\n"
            "`tests/unit/test_repository_links.py::test_the_*`.\n"
        )
        code = scratch / "module.py"
        code.write_text(
            "# keeps invariant 4 and invariants 5 and 99\n"
            "# the usual invariant holds\n"
            "PATH = '/" + "work/main/x'\nOK = '/workspace/group'\n"
            "# see README 'Model budgets' and 'Memory and compaction'; README's \"Model spend\"\n"
        )
        outside = outside_references([doc, code])
        assert len(outside) == 3  # the sibling folder and the design document in one line, /work once
        assert any("module.py:3" in p for p in outside)
        links = broken_links([doc])
        assert len(links) == 2
        assert any("links outside the repository" in p for p in links)
        assert any("missing file: missing.md" in p for p in links)
        assert missing_paths([doc]) == [
            ".pytest-links-check/notes.md names groups/sandbox/{docker,podman}.py, which does not exist",
            ".pytest-links-check/notes.md names tests/unit/test_gone.py::test_x, which does not exist",
            ".pytest-links-check/notes.md names tests/unit/test_repository_links.py::test_gone, which "
            "tests/unit/test_repository_links.py does not define",
        ]
        assert section_citation_problems([code], readme_sections()) == [
            ".pytest-links-check/module.py:5 cites README section 'Memory and compaction', "
            "which the README lacks"
        ]
        citations = citation_problems([code], set(range(1, 13)))
        assert citations == [
            ".pytest-links-check/module.py:1 cites invariant 99, which docs/ARCHITECTURE.md does not have",
            ".pytest-links-check/module.py:2 mentions an invariant without its number: "
            "# the usual invariant holds",
        ]
    finally:
        for path in scratch.iterdir():
            path.unlink()
        scratch.rmdir()
