"""Helpers for bwrap tests: a session-wide exported root filesystem, and running probes in sandboxes.

Import the `bwrap_rootfs` fixture into a test module to use it. Without bwrap (or without a
usable user namespace / root) the tests skip locally and fail when CLAWGATE_REQUIRE_DOCKER=1.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from groups.sandbox.base import SandboxSpec
from groups.sandbox.bwrap import ROOTFS_DIR, BwrapBackend
from tests.conftest import exclusive_file_lock

REQUIRE = os.environ.get("CLAWGATE_REQUIRE_DOCKER") == "1"


def unusable(message: str) -> None:
    if REQUIRE:
        pytest.fail(message + " (CLAWGATE_REQUIRE_DOCKER=1)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def bwrap_rootfs(docker_client, sandbox_image, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    """`<tmp>/rootfs` holding the sandbox image's exported filesystem; link it into a data dir."""
    from groups.sandbox.image import export_rootfs

    if shutil.which("bwrap") is None:
        unusable("bubblewrap is not installed (apt-get install bubblewrap)")
    # One export per pytest run: xdist workers (basetemp .../pytest-<n>/popen-gw<k>) share the
    # run's directory, the first exports under the lock and the others find it done.
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    store = base / "bwrap-data" / ROOTFS_DIR
    with exclusive_file_lock(f"bwrap-rootfs-{base}"):
        export_rootfs(docker_client, sandbox_image, store)
    done = subprocess.run(
        ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "true"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        unusable(f"bwrap cannot create namespaces here: {done.stderr.strip()}")
    return store


def link_rootfs(data_dir: Path, store: Path) -> None:
    """Make `data_dir` use the session's export (what `clawgate image build --backend bwrap` makes)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    link = data_dir / ROOTFS_DIR
    if not link.exists():
        link.symlink_to(store, target_is_directory=True)


async def probe(
    backend: BwrapBackend, spec: SandboxSpec, script: str, timeout: float = 60
) -> tuple[int, str]:
    """Run `sh -c script` in a fresh sandbox for `spec`; (exit code, combined output)."""
    sandbox = await backend.start(spec, ["sh", "-c", script])
    try:
        code = await asyncio.wait_for(sandbox.wait_exit(), timeout)
    finally:
        await sandbox.stop()
    return code, await sandbox.logs_tail(64 * 1024)


def descendants(pid: int) -> set[int]:
    """Every live process below `pid` on the host (walks /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
