"""gVisor (runsc) for tests: whether it is usable here, and what the host sees of a gVisor sandbox.

Locally an unusable runsc skips its tests; with CLAWGATE_REQUIRE_DOCKER=1 (CI) they fail.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REQUIRE = os.environ.get("CLAWGATE_REQUIRE_DOCKER") == "1"
RUNTIMES = ("runc", "runsc")

_verdicts: dict[str, str | None] = {}


def runsc_problem(docker_client: Any, image: str) -> str | None:
    """Why gVisor is not usable with `image` (None when it is); probed once per image per session."""
    if image not in _verdicts:
        from groups.sandbox.runsc import probe

        _verdicts[image] = probe(docker_client, image)
    return _verdicts[image]


def require_runsc(docker_client: Any, image: str) -> None:
    problem = runsc_problem(docker_client, image)
    if problem is None:
        return
    message = f"gVisor (runsc) is not usable: {problem}"
    if REQUIRE:
        pytest.fail(message + " (CLAWGATE_REQUIRE_DOCKER=1)")
    pytest.skip(message)


@pytest.fixture(params=RUNTIMES)
def container_runtime(request, docker_client, sandbox_image) -> str:  # type: ignore[no-untyped-def]
    """Runs a test once per Docker runtime ("runc", "runsc"); import it into a test module to use it."""
    if request.param == "runsc":
        require_runsc(docker_client, sandbox_image)
    return str(request.param)


def sentry_pids(container_id: str) -> list[int]:
    """Host pids of the gVisor Sentry (`runsc-sandbox`) serving this container."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"runsc-sandbox") and any(container_id.encode() in a for a in argv):
            found.append(int(entry))
    return found


def host_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def host_cgroup_file(container_id: str, controller: str, v1_file: str, v2_file: str) -> Path:
    """The container's cgroup control file as the host sees it (cgroup v1 or v2, cgroupfs or systemd)."""
    candidates = [
        Path(f"/sys/fs/cgroup/{controller}/docker/{container_id}/{v1_file}"),
        Path(f"/sys/fs/cgroup/{controller}/system.slice/docker-{container_id}.scope/{v1_file}"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/{v2_file}"),
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/{v2_file}"),
    ]
    for path in candidates:
        if path.exists():
            return path
    raise AssertionError(f"no host cgroup file for {container_id[:12]}: tried {candidates}")
