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
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # "gw0", "gw1", ... under pytest-xdist (make test)
UIDS_PER_WORKER = 1000


def pytest_configure(config: pytest.Config) -> None:
    if WORKER.startswith("gw") and WORKER[2:].isdigit():
        own_uid_range(int(WORKER[2:]))


# Under xdist the files are handed out in collection order (Makefile: --no-loadscope-reorder):
# the suites whose files wait longest (gateways killed and restarted, containers on every
# tier) go first, so that no worker picks up a minute-long file while the others run out of
# work. A stable sort: each file's tests stay together and in order.
SLOW_SUITES_FIRST = ("tests/e2e/", "tests/chaos/", "tests/security/", "tests/integration/", "tests/fuzz/")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not WORKER:
        return  # a serial run keeps the usual order

    def rank(item: pytest.Item) -> int:
        return next(
            (i for i, prefix in enumerate(SLOW_SUITES_FIRST) if item.nodeid.startswith(prefix)),
            len(SLOW_SUITES_FIRST),
        )

    items.sort(key=rank)


# Config defaults this file changes for the test run, with the product's own value (what the
# README must show: tests/unit/test_readme_drift.py).
PRODUCT_DEFAULTS: dict[tuple[str, ...], object] = {}


def own_uid_range(worker: int) -> None:
    """Give xdist worker `worker` its own `[sandbox] run_as_uid` default, as README asks of two
    gateways on one host.

    Every test's data dir numbers its groups from 1 (groups.uids), so without this the first
    group of every worker runs as uid 10001 — and RLIMIT_NPROC counts a uid's processes
    host-wide: one worker's fork bomb (tests/integration/test_sandbox_hardening.py) would stop
    another worker's agent from forking. A config that sets `run_as_uid` keeps its value.
    """
    from core.config import Config, SandboxConfig

    field = SandboxConfig.model_fields["run_as_uid"]
    PRODUCT_DEFAULTS.setdefault(("sandbox", "run_as_uid"), field.default)
    field.default = int(field.default) + worker * UIDS_PER_WORKER
    SandboxConfig.model_rebuild(force=True)
    Config.model_fields["sandbox"].default = SandboxConfig()
    Config.model_rebuild(force=True)


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
def short_tmp() -> Iterator[Path]:
    """A fresh directory with a short path, removed afterwards: for anything holding unix sockets.

    A socket path must fit sun_path (107 bytes, `core.paths.SUN_PATH_MAX`); `tmp_path` is
    /tmp/pytest-of-<user>/pytest-<n>/[popen-gw<k>/]<test name, up to 30>0/ (up to ~75 bytes
    under xdist), which leaves too little for `data/run/<folder>/vault.sock`.
    """
    path = Path(tempfile.mkdtemp(prefix="cg", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def dirs(tmp_path: Path, short_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Private config and data dirs; the data dir has a short path, for its unix sockets."""
    config_dir = tmp_path / "config"
    data_dir = short_tmp / "data"
    config_dir.mkdir()
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(data_dir))
    return config_dir, data_dir


@pytest.fixture
def model_server() -> Iterator[FakeModelServer]:
    with FakeModelServer() as server:
        yield server
