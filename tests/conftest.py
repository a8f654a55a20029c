"""Shared fixtures: real Docker (or a loud failure in CI), isolated config/data dirs, fake upstreams."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fakes.model_server import FakeModelServer  # noqa: E402

REQUIRE_DOCKER = os.environ.get("CLAWGATE_REQUIRE_DOCKER") == "1"
TEST_IMAGE = os.environ.get("CLAWGATE_TEST_IMAGE", "clawgate-sandbox:latest")


def _docker_client():  # type: ignore[no-untyped-def]
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env()
        client.ping()
        return client
    except DockerException as exc:
        return exc


@pytest.fixture(scope="session")
def docker_client():  # type: ignore[no-untyped-def]
    """A live Docker client; skips locally without Docker, fails when CLAWGATE_REQUIRE_DOCKER=1."""
    client = _docker_client()
    if isinstance(client, Exception):
        message = f"Docker is not reachable: {client}"
        if REQUIRE_DOCKER:
            pytest.fail(message + " (CLAWGATE_REQUIRE_DOCKER=1)")
        pytest.skip(message)
    return client


@pytest.fixture(scope="session")
def sandbox_image(docker_client) -> str:  # type: ignore[no-untyped-def]
    """The sandbox image, rebuilt from the working tree once per session so tests run current code."""
    from groups.sandbox.image import build_image

    # pytest-xdist workers each run this once: one builds, the others wait and rebuild from cache.
    with exclusive_file_lock(f"image-{TEST_IMAGE}"):
        build_image(docker_client, TEST_IMAGE, None, lambda line: None)
    return TEST_IMAGE


@contextlib.contextmanager
def exclusive_file_lock(name: str) -> Iterator[None]:
    """A lock shared by every pytest process on this machine (xdist workers, parallel runs)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    with open(Path(tempfile.gettempdir()) / f"clawgate-test-{safe}.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


CLAUDE_WHEELS = os.environ.get("CLAWGATE_CLAUDE_WHEELS", "")
REQUIRE_CLAUDE = os.environ.get("CLAWGATE_REQUIRE_CLAUDE") == "1"


@pytest.fixture(scope="session")
def claude_image(sandbox_image: str, docker_client) -> str:  # type: ignore[no-untyped-def]
    """The `claude` runtime's image, built on `sandbox_image` from pre-downloaded wheels.

    The wheels (`pip download`, see .ci/run) come from CLAWGATE_CLAUDE_WHEELS: tests never
    reach a package index. Without them the claude tests skip, or fail under
    CLAWGATE_REQUIRE_CLAUDE=1 (CI).
    """
    from core.config import claude_variant
    from groups.sandbox.image import build_claude_image, has_claude_wheels

    wheels = Path(CLAUDE_WHEELS) if CLAUDE_WHEELS else None
    if wheels is None or not has_claude_wheels(wheels):
        message = f"no claude-agent-sdk wheels in CLAWGATE_CLAUDE_WHEELS={CLAUDE_WHEELS!r}"
        if REQUIRE_CLAUDE:
            pytest.fail(message + " (CLAWGATE_REQUIRE_CLAUDE=1)")
        pytest.skip(message)
    tag = claude_variant(sandbox_image)
    with exclusive_file_lock(f"image-{tag}"):
        build_claude_image(docker_client, sandbox_image, tag, wheels, lambda line: None)
    return tag


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Private config and data dirs; the data dir sits under /tmp-like short paths for unix sockets."""
    config_dir = tmp_path / "config"
    data_dir = tmp_path / "data"
    config_dir.mkdir()
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(data_dir))
    yield config_dir, data_dir
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server
