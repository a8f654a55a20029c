"""The house limit: no module of the product is over 500 lines.

A module that keeps growing has stopped having one concern; by the time it is over the limit
it is split along a real seam (channels/telegram_*.py, groups/sandbox/bwrap_*.py), not
trimmed by packing lines. CONTRIBUTING.md states the rule; this keeps it true.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "gateway", "channels", "proxy", "groups", "dashboard")
MAX_LINES = 500


def line_count(path: Path) -> int:
    with path.open("rb") as f:
        return sum(1 for _ in f)


def oversized(root: Path, packages: tuple[str, ...] = PACKAGES, limit: int = MAX_LINES) -> list[str]:
    """`<path>: <n> lines` for every .py file under `packages` that is over `limit` lines."""
    found = []
    for top in packages:
        for path in sorted((root / top).rglob("*.py")):
            n = line_count(path)
            if n > limit:
                found.append(f"{path.relative_to(root).as_posix()}: {n} lines")
    return found


def test_no_module_is_over_the_limit() -> None:
    offenders = oversized(ROOT)
    assert offenders == [], f"over {MAX_LINES} lines (split along a real seam):\n" + "\n".join(offenders)


def test_the_rule_sees_the_code_base() -> None:
    """Not vacuous: every package is there and has modules, and the largest is near the limit."""
    for top in PACKAGES:
        assert list((ROOT / top).rglob("*.py")), top
    largest = max(line_count(p) for top in PACKAGES for p in (ROOT / top).rglob("*.py"))
    assert largest > MAX_LINES // 2


def test_an_oversized_module_is_named_with_its_length(tmp_path: Path) -> None:
    (tmp_path / "channels" / "deep").mkdir(parents=True)
    (tmp_path / "channels" / "deep" / "big.py").write_text("x = 1\n" * 501)
    (tmp_path / "channels" / "edge.py").write_text("x = 1\n" * 500)
    (tmp_path / "channels" / "no_newline.py").write_text("x = 1\n" * 500 + "y = 2")
    (tmp_path / "gateway").mkdir()
    (tmp_path / "gateway" / "notes.txt").write_text("x\n" * 900)  # not Python
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "huge.py").write_text("x = 1\n" * 900)  # not a product package
    assert oversized(tmp_path, ("channels", "gateway")) == [
        "channels/deep/big.py: 501 lines",
        "channels/no_newline.py: 501 lines",
    ]
