"""Fixtures for the agent runtime tests (stdlib runtime, real loopback servers)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PROXY_VARS = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
)


@pytest.fixture(autouse=True)
def _no_host_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process model calls must not pick up a proxy from the developer's shell."""
    for var in PROXY_VARS:
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory for unix sockets (sun_path is limited to ~108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="cga-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def group_dirs(tmp_path: Path) -> tuple[Path, Path]:
    group = tmp_path / "group"
    glob = tmp_path / "global"
    group.mkdir()
    glob.mkdir()
    return group, glob
