"""`read_or_create_token`: a host secret is read only from a private regular file of ours."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.private_files import PrivateFileError, read_or_create_token

PATTERN = r"[A-Za-z0-9_-]{1,256}"


def make(path: Path) -> str:
    return read_or_create_token(path, lambda: "fresh-token", PATTERN, "test secret")


def test_created_private_then_reused(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret"
    assert make(path) == "fresh-token"
    assert (path.stat().st_mode & 0o777, path.parent.stat().st_mode & 0o777) == (0o600, 0o700)
    path.write_text("kept-token\n")
    assert make(path) == "kept-token"


def test_a_symlink_a_readable_file_a_fifo_or_a_corrupt_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("planted\n")
    target.chmod(0o600)
    link = tmp_path / "link"
    link.symlink_to(target)
    with pytest.raises(PrivateFileError, match="cannot open"):
        make(link)
    readable = tmp_path / "readable"
    readable.write_text("abc\n")
    readable.chmod(0o644)
    with pytest.raises(PrivateFileError, match="chmod 600"):
        make(readable)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(PrivateFileError, match="not a regular file"):
        make(fifo)
    corrupt = tmp_path / "corrupt"
    corrupt.write_text("not a token!\n")
    corrupt.chmod(0o600)
    with pytest.raises(PrivateFileError, match="corrupt; delete it"):
        make(corrupt)
