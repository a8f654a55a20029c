"""Which path components a mount may not show: blocked names, matched by what they look like.

A component matches a pattern when the pattern's *skeleton* is a substring of the component's
skeleton (glob patterns containing `*?[` are matched with `fnmatch` against the whole component
skeleton instead). The skeleton is NFKC, casefold, NFKD, combining marks and invisible format
characters dropped, common Cyrillic/Greek look-alike letters mapped to Latin, NFKC + casefold
again — so `.SSH`, fullwidth `．ｓｓｈ`, Cyrillic `.ѕѕһ` and `.s̈sh` all read as `.ssh`, and an
agent cannot get a credentials folder past the check by how it spells the name. Patterns
starting with `/` or `~` are blocked *paths*, judged in groups/mounts.py. See that module's
docstring for where this check sits among the others.
"""

from __future__ import annotations

import fnmatch
import unicodedata
from collections.abc import Iterable, Sequence

DEFAULT_BLOCKED_PATTERNS: tuple[str, ...] = (
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".kube",
    ".docker",
    "credentials",
    ".env",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "private_key",
    ".secret",
)

# Letters that render like Latin ones (after casefolding). Not exhaustive, but it covers
# the scripts a look-alike `.ssh`/`.env`/`id_rsa` would be typed in.
_CONFUSABLES = str.maketrans(
    {
        # Cyrillic
        "а": "a",
        "в": "b",
        "ь": "b",
        "с": "c",
        "ԁ": "d",
        "е": "e",
        "һ": "h",
        "н": "h",
        "і": "i",
        "ӏ": "l",
        "ј": "j",
        "к": "k",
        "м": "m",
        "п": "n",
        "о": "o",
        "р": "p",
        "ԛ": "q",
        "г": "r",
        "ѕ": "s",
        "т": "t",
        "у": "y",
        "ѵ": "v",
        "ԝ": "w",
        "х": "x",
        # Greek
        "α": "a",
        "β": "b",
        "ϲ": "c",
        "ε": "e",
        "η": "n",
        "ι": "i",
        "ϳ": "j",
        "κ": "k",
        "ν": "v",
        "ο": "o",
        "ρ": "p",
        "τ": "t",
        "υ": "u",
        "χ": "x",
        "γ": "y",
        # Latin specials and punctuation
        "ı": "i",
        "ɡ": "g",
        "ʀ": "r",
        "ꜱ": "s",
        "ᴇ": "e",
        "ɴ": "n",
        "ᴠ": "v",
        "。": ".",
        "‧": ".",
        "·": ".",
        "‐": "-",
        "‑": "-",
        "‒": "-",
        "–": "-",
        "＿": "_",
    }
)
_DROP_CATEGORIES = frozenset({"Mn", "Me", "Cf"})


def skeleton(text: str) -> str:
    """A name reduced to what it looks like: see the module docstring."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    decomposed = unicodedata.normalize("NFKD", folded)
    stripped = "".join(ch for ch in decomposed if unicodedata.category(ch) not in _DROP_CATEGORIES)
    return unicodedata.normalize("NFKC", stripped.translate(_CONFUSABLES)).casefold()


def is_glob(pattern: str) -> bool:
    return any(ch in pattern for ch in "*?[")


def is_path_pattern(pattern: str) -> bool:
    return pattern.startswith("/") or pattern.startswith("~")


def blocked_match(component: str, patterns: Iterable[str]) -> str | None:
    """The first name pattern a path component matches, or None (path patterns are ignored here)."""
    name = skeleton(component)
    for pattern in patterns:
        if is_path_pattern(pattern):
            continue
        key = skeleton(pattern)
        if (fnmatch.fnmatchcase(name, key) if is_glob(pattern) else key in name) and key:
            return pattern
    return None


def blocked_in_path(path: str, patterns: Sequence[str]) -> tuple[str, str] | None:
    for component in path.split("/"):
        if component in ("", ".", ".."):
            continue
        pattern = blocked_match(component, patterns)
        if pattern is not None:
            return component, pattern
    return None
