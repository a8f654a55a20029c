"""Tool executor: shell timeout/cap/process-group kill, file tools, errors never raise."""

from __future__ import annotations

import time
from pathlib import Path

from groups.agent.tools import Toolbox, cap_text


def _box(tmp_path: Path, cap: int = 30_000) -> Toolbox:
    return Toolbox(str(tmp_path), lambda text: None, output_cap=cap)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_shell_runs_in_group_dir_and_reports_exit_code(tmp_path: Path) -> None:
    text, is_error = _box(tmp_path).execute("shell", {"command": "pwd; echo oops >&2; exit 3"})
    assert not is_error
    assert str(tmp_path) in text and "oops" in text and "[exit code 3]" in text


def test_shell_timeout_kills_process_group(tmp_path: Path) -> None:
    start = time.monotonic()
    text, is_error = _box(tmp_path).execute(
        "shell", {"command": "sleep 60 & echo $! > child.pid; echo started; wait", "timeout_s": 1}
    )
    assert time.monotonic() - start < 5
    assert is_error and "timed out after 1s" in text and "started" in text
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 2
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_shell_output_is_capped_keeping_head_and_tail(tmp_path: Path) -> None:
    text, is_error = _box(tmp_path, cap=2000).execute("shell", {"command": "seq 1 200000"})
    assert not is_error
    assert len(text) < 2200
    assert text.startswith("1\n2\n3\n")
    assert "200000\n[exit code 0]" in text
    assert "bytes truncated" in text


def test_shell_bad_args_are_errors(tmp_path: Path) -> None:
    assert _box(tmp_path).execute("shell", {})[1] is True
    assert _box(tmp_path).execute("shell", {"command": "true", "timeout_s": "x"})[1] is True


def test_edit_file_requires_exactly_one_occurrence(tmp_path: Path) -> None:
    box = _box(tmp_path)
    (tmp_path / "f.txt").write_text("a b a\n")
    text, err = box.execute("edit_file", {"path": "f.txt", "old": "a", "new": "x"})
    assert err and "occurs 2 times" in text
    text, err = box.execute("edit_file", {"path": "f.txt", "old": "zzz", "new": "x"})
    assert err and "not found" in text
    text, err = box.execute("edit_file", {"path": "f.txt", "old": "b", "new": "B"})
    assert not err
    assert (tmp_path / "f.txt").read_text() == "a B a\n"
    assert box.execute("edit_file", {"path": "f.txt", "old": "", "new": "x"})[1] is True


def test_read_write_list(tmp_path: Path) -> None:
    box = _box(tmp_path)
    text, err = box.execute(
        "write_file", {"path": "sub/dir/n.txt", "content": "".join(f"L{i}\n" for i in range(1, 11))}
    )
    assert not err
    text, err = box.execute("read_file", {"path": "sub/dir/n.txt", "offset": 3, "limit": 2})
    assert not err and text.startswith("L3\nL4\n") and "[lines 3-4 of 10]" in text
    text, err = box.execute("read_file", {"path": str(tmp_path / "sub/dir/n.txt")})
    assert not err and text == "".join(f"L{i}\n" for i in range(1, 11))
    text, err = box.execute("list_files", {})
    assert not err and "sub/" in text
    text, err = box.execute("list_files", {"path": "sub/dir"})
    assert "n.txt\t" in text
    text, err = box.execute("read_file", {"path": "missing.txt"})
    assert err and "FileNotFoundError" in text
    assert box.execute("read_file", {"path": "sub"})[1] is True


def test_read_file_output_capped(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("x" * 100_000)
    text, err = _box(tmp_path, cap=1000).execute("read_file", {"path": "big.txt"})
    assert not err and len(text) < 1100 and "truncated" in text


def test_cap_text() -> None:
    assert cap_text("short", 10) == "short"
    capped = cap_text("a" * 50 + "b" * 50, 20)
    assert capped.startswith("a" * 10) and capped.endswith("b" * 10) and "80 characters truncated" in capped


def test_send_message_errors_are_results(tmp_path: Path) -> None:
    def boom(text: str) -> None:
        raise RuntimeError("rate limited")

    box = Toolbox(str(tmp_path), boom)
    text, err = box.execute("send_message", {"text": "hi"})
    assert err and "rate limited" in text
    assert box.execute("nope", {})[1] is True
    assert box.execute("list_files", None)[1] is True


def test_relative_paths_resolve_against_group_dir(tmp_path: Path) -> None:
    text, err = _box(tmp_path).execute("write_file", {"path": "./x/../y.txt", "content": "q"})
    assert not err and (tmp_path / "y.txt").read_text() == "q"
