"""The sandbox policy against hostile probes, in real containers.

Every container here is started from exactly `container_kwargs(spec)` — the arguments the
gateway passes to `containers.run` — with one change: the entrypoint is `sleep`, so the
agent runtime does not start and the test can `exec` probes inside instead. The spec is
built the way `gateway/sandboxes.py` builds it (folders prepared and chowned by
`groups.folders.prepare`, `groups.uids.group_identity`, `agent_environment`, instance label).

Every proof runs twice: on Docker's default runtime (`[runc]`) and under gVisor (`[runsc]`,
`[sandbox] runtime = "runsc"`). Where gVisor legitimately differs (its own /proc and mount
table, limits enforced by the Sentry), the runsc case asserts gVisor's behaviour, which is
at least as strict, and what the host sees of the Sentry.

Network probes only ever touch loopback addresses.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from docker.errors import NotFound

from core.config import parse
from core.models import Group
from gateway.sandboxes import sandbox_spec
from groups import folders
from groups.sandbox.base import Limits, SandboxSpec
from groups.sandbox.docker import LABEL_GROUP, LABEL_INSTANCE, DockerBackend, DockerSandbox, container_kwargs
from groups.sandbox.runsc import GVISOR_PROC_VERSION
from groups.uids import group_identity
from tests.integration.probes import FORK_BOMB, connect_probe
from tests.integration.runsc_support import (
    RUNTIMES,
    host_cgroup_file,
    host_status,
    require_runsc,
    sentry_pids,
)

SLEEP = ["sleep", "300"]
DEFAULT_LIMITS = Limits(memory_mb=256, cpus=1.0, pids=128, tmpfs_mb=16)
SECRET_VAR = "CLAWGATE_TEST_FAKE_SECRET"
SANDBOX_MOUNTS = {"/workspace/group", "/workspace/global", "/workspace/inbox", "/run/clawgate"}


# ---------------------------------------------------------------- helpers


class World:
    """A data dir and a config dir as the gateway would lay them out, plus the group specs."""

    def __init__(self, root: Path, image: str, runtime: str = "runc") -> None:
        self.runtime = runtime
        self.config_dir = root / "config"
        self.data_dir = root / "data"
        self.config_dir.mkdir(parents=True)
        self.config = parse(f'[sandbox]\nimage = "{image}"\n', self.config_dir / "config.toml")
        self.instance = "test-" + secrets.token_hex(6)
        self.token = secrets.token_hex(8)  # makes marker file names unique to this run
        self.secret = "fake-secret-" + secrets.token_hex(16)
        (self.config_dir / "config.toml").write_text(f'[sandbox]\nimage = "{image}"\n')
        (self.config_dir / f"host-config-marker-{self.token}").write_text("host config")

    def spec(self, folder: str, *, is_main: bool = False, limits: Limits = DEFAULT_LIMITS) -> SandboxSpec:
        dirs = folders.group_dirs(self.data_dir, folder)
        identity = group_identity(self.data_dir, folder, self.config.sandbox.run_as_uid)
        folders.prepare(dirs, identity if os.getuid() == 0 else None, is_main=is_main)
        (dirs.run / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a real cert\n")
        (dirs.run / "ca.pem").chmod(0o644)
        group = Group(folder=folder, chat_id=f"test:{folder}", name=folder, trigger="@bot", is_main=is_main)
        return sandbox_spec(self.config, group, dirs, identity, self.instance, limits=limits)


def start(client: Any, spec: SandboxSpec, created: list[Any], runtime: str = "runc") -> Any:
    """Run the container exactly as the gateway would, except that it sleeps instead of running the agent."""
    kwargs = container_kwargs(spec, runtime)
    assert "entrypoint" not in kwargs and "command" not in kwargs
    container = client.containers.run(**{**kwargs, "entrypoint": SLEEP})
    created.append(container)
    container.reload()
    assert container.status == "running", container.logs()
    return container


def remove_all(created: list[Any]) -> None:
    for container in created:
        with contextlib.suppress(NotFound):
            container.remove(force=True)


def sh(container: Any, script: str, **kwargs: Any) -> tuple[int, str]:
    code, out = container.exec_run(["sh", "-c", script], **kwargs)
    return code, out.decode("utf-8", "replace")


def py(container: Any, code: str) -> tuple[int, str]:
    exit_code, out = container.exec_run(["python3", "-c", code])
    return exit_code, out.decode("utf-8", "replace")


def mountinfo(container: Any) -> dict[str, tuple[str, str, str]]:
    """mount point -> (root inside its filesystem, mount options, fs type), from /proc/self/mountinfo."""
    code, text = sh(container, "cat /proc/self/mountinfo")
    assert code == 0, text
    mounts = {}
    for line in text.splitlines():
        fields = line.split()
        sep = fields.index("-")
        mounts[fields[4]] = (fields[3], fields[5], fields[sep + 1])
    return mounts


def cgroup_value(container: Any, v2_file: str, v1_file: str) -> str:
    """A cgroup control file's content, from a v2 (unified) or v1 (per-controller) hierarchy."""
    code, out = sh(container, f"cat /sys/fs/cgroup/{v2_file} 2>/dev/null || cat /sys/fs/cgroup/{v1_file}")
    assert code == 0, out
    return out.strip()


def status_fields(container: Any, path: str = "/proc/self/status") -> dict[str, str]:
    code, text = sh(container, f"cat {path}")
    assert code == 0, text
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


def write_refused(out: str, runtime: str) -> bool:
    """Whether a write failed because the mount is read-only.

    The host kernel checks the mount first (EROFS). gVisor checks the directory's permissions
    first, so where the sandbox uid could not write anyway it says EACCES; the read-only flag
    of that mount is asserted separately from /proc/self/mountinfo.
    """
    if runtime == "runsc" and "Permission denied" in out:
        return True
    return "Read-only file system" in out


def super_options(container: Any, point: str) -> set[str]:
    """The filesystem's own options (after the ` - fstype source` part) of the mount at `point`."""
    code, text = sh(container, "cat /proc/self/mountinfo")
    assert code == 0, text
    for line in text.splitlines():
        fields = line.split()
        if fields[4] == point:
            return set(fields[fields.index("-") + 3].split(","))
    raise AssertionError(f"{point} is not mounted: {text}")


def ls(container: Any, path: str) -> list[str]:
    """Directory entries, via Python: coreutils 9 `ls` fails under Debian's runsc 20221219 (statx flag)."""
    code, out = py(container, f"import os; print(' '.join(sorted(os.listdir({path!r}))))")
    assert code == 0, out
    return out.split()


def sentry_of(container: Any) -> dict[str, str]:
    """Host /proc status of the gVisor Sentry running `container` (exactly one)."""
    [pid] = sentry_pids(container.id)
    return host_status(pid)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", params=RUNTIMES)
def runtime(request, docker_client, sandbox_image) -> str:  # type: ignore[no-untyped-def]
    """Each proof once per container runtime; runsc fails (not skips) in CI when unusable."""
    if request.param == "runsc":
        require_runsc(docker_client, sandbox_image)
    return request.param


@pytest.fixture(scope="module")
def hostile(  # type: ignore[no-untyped-def]
    docker_client, sandbox_image, runtime, tmp_path_factory
) -> Iterator[tuple[Any, SandboxSpec, World]]:
    """One non-main group's container, started while a fake secret sits in the host environment.

    A sibling group with a marker file exists next to it on the host.
    """
    world = World(tmp_path_factory.mktemp("hardening"), sandbox_image, runtime)
    sibling = world.spec("sibling")
    (sibling.group_dir / f"sibling-marker-{world.token}").write_text("another group's data")
    spec = world.spec("alpha")
    # Global memory is written by the main group's container, i.e. by the same uid every group runs
    # as: file permissions cannot stop a non-main group, only the read-only mount can.
    (spec.global_dir / "shared.md").write_text("global memory")
    os.chown(spec.global_dir / "shared.md", spec.uid, spec.gid)
    created: list[Any] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(SECRET_VAR, world.secret)
        try:
            container = start(docker_client, spec, created, runtime)
            yield container, spec, world
        finally:
            remove_all(created)


@pytest.fixture
def run_sandbox(  # type: ignore[no-untyped-def]
    docker_client, sandbox_image, runtime, tmp_path
) -> Iterator[tuple[World, Callable[[SandboxSpec], Any]]]:
    """A fresh world plus a starter whose containers are force-removed after the test."""
    world = World(tmp_path, sandbox_image, runtime)
    created: list[Any] = []
    try:
        yield world, lambda spec: start(docker_client, spec, created, runtime)
    finally:
        remove_all(created)


# ---------------------------------------------------------------- identity and privileges


def test_runs_as_the_spec_uid_which_is_not_root(hostile) -> None:  # type: ignore[no-untyped-def]
    container, spec, world = hostile
    assert spec.uid != 0 and spec.gid != 0
    if os.getuid() == 0:  # its own uid, never the shared run_as_uid of old
        assert spec.uid == spec.gid and spec.uid > world.config.sandbox.run_as_uid
    code, out = sh(container, "id -u; id -g; id -G")
    assert code == 0, out
    assert out.split() == [str(spec.uid), str(spec.gid), str(spec.gid)]
    for path in ("/proc/self/status", "/proc/1/status"):  # an exec'd probe and the container's init
        status = status_fields(container, path)
        assert status["Uid"].split() == [str(spec.uid)] * 4, path
        assert status["Gid"].split() == [str(spec.gid)] * 4, path
        assert status["Groups"] in ("", str(spec.gid)), path


def test_has_no_capabilities_and_no_new_privileges(hostile) -> None:  # type: ignore[no-untyped-def]
    container, _, world = hostile
    for path in ("/proc/self/status", "/proc/1/status"):
        status = status_fields(container, path)
        for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
            if world.runtime == "runsc" and cap == "CapAmb":
                # gVisor's /proc shows no ambient set; it is a subset of CapPrm & CapInh (both 0).
                assert cap not in status or int(status[cap], 16) == 0
                continue
            assert int(status[cap], 16) == 0, (path, cap, status[cap])
        if world.runtime == "runc":
            assert status["NoNewPrivs"] == "1", path
            assert status["Seccomp"] == "2", path  # docker's default seccomp filter stays on
    if world.runtime == "runsc":
        # The sandbox's system calls never reach the host kernel: the Sentry serves them, and the
        # Sentry itself runs on the host under its own seccomp filter with no_new_privs.
        sentry = sentry_of(container)
        assert sentry["Seccomp"] == "2" and sentry["NoNewPrivs"] == "1", sentry
    code, out = py(container, "import os\ntry:\n os.setuid(0)\nexcept PermissionError: print('denied')")
    assert code == 0 and "denied" in out, out
    code, out = py(container, "import os\ntry:\n os.setgroups([0])\nexcept PermissionError: print('denied')")
    assert code == 0 and "denied" in out, out


def test_system_calls_reach_only_the_kernel_of_the_tier(hostile) -> None:  # type: ignore[no-untyped-def]
    """runc: the host kernel (behind Docker's seccomp filter). runsc: gVisor's kernel, never the host's."""
    container, _, world = hostile
    code, out = sh(container, "uname -r; cat /proc/version")
    assert code == 0, out
    if world.runtime == "runc":
        assert os.uname().release in out, out
        return
    assert GVISOR_PROC_VERSION in out and os.uname().release not in out, out
    code, out = sh(container, "dmesg")  # the Sentry's own boot log, not the host's ring buffer
    assert code == 0 and "Starting gVisor" in out, out
    assert len(sentry_pids(container.id)) == 1  # one user-space kernel per sandbox, on the host


# ---------------------------------------------------------------- filesystem


def test_root_is_read_only_but_tmp_and_group_folder_are_writable(hostile) -> None:  # type: ignore[no-untyped-def]
    container, spec, world = hostile
    mounts = mountinfo(container)
    assert "ro" in mounts["/"][1].split(",")
    for path in ("/usr/probe", "/etc/probe", "/probe", "/opt/clawgate/agent/probe"):
        code, out = sh(container, f"touch {path}")
        assert code != 0 and write_refused(out, world.runtime), (path, out)
    # /var/tmp is world-writable in the image: only the read-only root can refuse this, on every runtime
    code, out = sh(container, "touch /var/tmp/probe")
    assert code != 0 and "Read-only file system" in out, out
    code, out = sh(container, "echo pwned >> /etc/passwd")
    assert code != 0, out

    _, options, fstype = mounts["/tmp"]
    if world.runtime == "runc":
        assert fstype == "tmpfs" and {"rw", "nosuid", "nodev"} <= set(options.split(","))
    else:  # gVisor's own tmpfs, in the Sentry's memory; its mount table shows only rw and the size
        assert fstype == "tmpfs" and "rw" in options.split(",")
        assert f"size={spec.limits.tmpfs_mb}m" in super_options(container, "/tmp")
    code, out = sh(container, "echo scratch > /tmp/scratch && cat /tmp/scratch")
    assert (code, out.strip()) == (0, "scratch")
    # the tmpfs is capped: 16 MB limit, writing 32 MB fails with ENOSPC
    code, out = sh(container, "head -c 33554432 /dev/zero > /tmp/big; echo rc=$?; rm -f /tmp/big")
    assert "No space left on device" in out and "rc=1" in out, out

    code, out = sh(container, "echo from-sandbox > /workspace/group/note.txt && echo ok")
    assert (code, out.strip()) == (0, "ok")
    written = spec.group_dir / "note.txt"
    assert written.read_text() == "from-sandbox\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (spec.uid, spec.gid)


def test_non_main_group_cannot_write_global_memory(hostile) -> None:  # type: ignore[no-untyped-def]
    container, spec, world = hostile
    code, out = sh(container, "cat /workspace/global/shared.md")
    assert (code, out) == (0, "global memory")
    assert "ro" in mountinfo(container)["/workspace/global"][1].split(",")
    for script in (
        "touch /workspace/global/evil",
        "echo x >> /workspace/global/shared.md",
        "rm /workspace/global/shared.md",
        "mkdir /workspace/global/d",
    ):
        code, out = sh(container, script)
        assert code != 0 and write_refused(out, world.runtime), (script, out)
    assert sorted(p.name for p in spec.global_dir.iterdir()) == ["shared.md"]
    assert (spec.global_dir / "shared.md").read_text() == "global memory"


def test_main_group_can_write_global_memory(run_sandbox) -> None:  # type: ignore[no-untyped-def]
    world, start_sandbox = run_sandbox
    spec = world.spec("main", is_main=True)
    container = start_sandbox(spec)
    assert "rw" in mountinfo(container)["/workspace/global"][1].split(",")
    code, out = sh(container, "echo remember > /workspace/global/memory.md && echo ok")
    assert (code, out.strip()) == (0, "ok")
    assert (spec.global_dir / "memory.md").read_text() == "remember\n"
    # the main group's socket dir is read-only all the same
    code, out = sh(container, "touch /run/clawgate/evil")
    assert code != 0 and write_refused(out, world.runtime), out


def test_run_dir_is_mounted_read_only(hostile) -> None:  # type: ignore[no-untyped-def]
    container, spec, world = hostile
    root, options, _ = mountinfo(container)["/run/clawgate"]
    assert "ro" in options.split(",")
    code, out = sh(container, "cat /run/clawgate/ca.pem")
    assert code == 0 and "not a real cert" in out
    for script in (
        "touch /run/clawgate/evil.sock",
        "rm -f /run/clawgate/ca.pem",
        "echo x > /run/clawgate/ca.pem",
        "mv /run/clawgate/ca.pem /run/clawgate/x",
    ):
        code, out = sh(container, script)
        assert code != 0 and write_refused(out, world.runtime), (script, out)
    assert sorted(p.name for p in spec.run_dir.iterdir()) == ["ca.pem"]


def test_only_its_own_mounts_are_visible(hostile) -> None:  # type: ignore[no-untyped-def]
    container, spec, world = hostile
    mounts = mountinfo(container)
    exposed = {point for point in mounts if point.startswith(("/workspace", "/run/clawgate"))}
    assert exposed == SANDBOX_MOUNTS
    # each bind mount's source is the spec's own directory, not a parent of it
    expected = {
        "/workspace/group": spec.group_dir,
        "/workspace/global": spec.global_dir,
        "/run/clawgate": spec.run_dir,
        "/workspace/inbox": spec.inbox_dir,
    }
    assert "ro" in mounts["/workspace/inbox"][1].split(",")  # attachments: host-owned, read-only
    for point, host_dir in expected.items():
        root = mounts[point][0]
        if world.runtime == "runsc":
            assert root == "/", (point, root)  # gVisor's mount table names no host path at all
        else:
            assert root.endswith("/".join(host_dir.parts[-2:])), (point, root)
    for root, _, _ in mounts.values():  # nothing anywhere comes from the config dir or a sibling group
        assert "config" not in Path(root).parts and "sibling" not in Path(root).parts, root
    assert ls(container, "/workspace") == ["global", "group", "inbox"]
    code, out = sh(container, "test -e /var/run/docker.sock || test -e /run/docker.sock; echo $?")
    assert out.strip() == "1"
    for name in (f"sibling-marker-{world.token}", f"host-config-marker-{world.token}"):
        code, out = sh(
            container,
            f"find / \\( -path /proc -o -path /sys \\) -prune -o -name '{name}' -print "
            "2>/dev/null; echo done",
        )
        assert out.strip() == "done", out
    code, out = sh(
        container,
        "find /workspace/group/../../ -maxdepth 1; cat ../sibling/* 2>&1; "
        "find /workspace/group/.. -maxdepth 1",
    )
    assert world.token not in out


# ---------------------------------------------------------------- network


def test_only_loopback_and_no_route(hostile) -> None:  # type: ignore[no-untyped-def]
    container, _, _ = hostile
    assert ls(container, "/sys/class/net") == ["lo"]
    code, out = sh(container, "tail -n +3 /proc/net/dev | cut -d: -f1")
    assert out.split() == ["lo"]
    code, out = sh(container, "cat /proc/net/route")
    assert code == 0 and out.splitlines()[0].startswith("Iface"), out
    assert out.splitlines()[1:] == [], out  # no IPv4 route at all, not even a default one
    code, out = sh(container, "cat /proc/net/ipv6_route 2>/dev/null || true")
    assert [line for line in out.splitlines() if line.split()[-1] != "lo"] == [], out


def test_cannot_reach_a_server_on_the_host_loopback(hostile) -> None:  # type: ignore[no-untyped-def]
    container, _, _ = hostile
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, peer = server.accept()
                accepted.append(peer)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        # the host itself can reach it: the server is live while the container tries
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        deadline = time.monotonic() + 2
        while len(accepted) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(accepted) == 1
        code, out = py(container, connect_probe([("127.0.0.1", port), ("localhost", port)]))
        assert code == 0, out
        assert "CONNECTED" not in out and out.count("failed") == 2, out
        time.sleep(0.3)
        assert len(accepted) == 1, accepted  # nothing from the container ever arrived
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


# ---------------------------------------------------------------- secrets


def test_host_environment_does_not_leak_into_the_container(hostile, docker_client) -> None:  # type: ignore[no-untyped-def]
    container, spec, world = hostile
    secret = world.secret
    assert os.environ.get(SECRET_VAR) == secret  # it was set while the container was created
    inspect = json.dumps(docker_client.api.inspect_container(container.id))
    assert secret not in inspect and SECRET_VAR not in inspect
    code, raw = container.exec_run(["cat", "/proc/1/environ"])
    assert code == 0
    environ = dict(item.split("=", 1) for item in raw.decode().split("\0") if item)
    assert secret not in raw.decode() and SECRET_VAR not in environ
    code, out = sh(container, "env; cat /proc/self/environ")
    assert secret not in out and SECRET_VAR not in out
    # exactly the spec's environment plus what the image sets and docker's HOSTNAME
    image_env = dict(e.split("=", 1) for e in docker_client.images.get(spec.image).attrs["Config"]["Env"])
    assert set(environ) <= set(spec.env) | set(image_env) | {"HOSTNAME"}, set(environ) - set(spec.env)
    for key, value in spec.env.items():
        assert environ[key] == value, key
    assert environ["ANTHROPIC_API_KEY"] == "placeholder"


# ---------------------------------------------------------------- resource limits


def test_fork_bomb_is_contained_by_the_pids_limit(run_sandbox, docker_client) -> None:  # type: ignore[no-untyped-def]
    world, start_sandbox = run_sandbox
    # memory is generous here: 64 forked Pythons must not hit the memory limit before the pids one
    limits = replace(DEFAULT_LIMITS, pids=64, memory_mb=512)
    container = start_sandbox(replace(world.spec("bomb"), limits=limits))
    host_config = docker_client.api.inspect_container(container.id)["HostConfig"]
    if world.runtime == "runc":
        assert host_config["PidsLimit"] == 64
        assert cgroup_value(container, "pids.max", "pids/pids.max") == "64"
    else:
        # gVisor counts the sandbox's tasks itself (RLIMIT_NPROC, per sandbox); the host cgroup
        # only backstops the Sentry's own threads (see groups.sandbox.docker.process_limits).
        assert {"Name": "nproc", "Soft": 64, "Hard": 64} in host_config["Ulimits"]
        assert host_config["PidsLimit"] > 64
        code, out = sh(container, "bash -c 'ulimit -u; ulimit -Hu'")
        assert (code, out.split()) == (0, ["64", "64"]), out
    # The shell version. bash retries a failed fork with back-off, so a python parent kills it after
    # a few seconds; it is a child subreaper so the orphaned `sleep`s are reaped (PID 1 here is
    # `sleep`, which reaps nothing) and the pids come back.
    code, out = py(
        container,
        (
            "import ctypes, os, signal, subprocess, time\n"
            "ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER\n"
            "bomb = subprocess.Popen(['bash', '-c', 'for i in $(seq 200); do sleep 30 & done; wait'],\n"
            "                        stderr=subprocess.PIPE, start_new_session=True)\n"
            "time.sleep(3)\n"
            "os.killpg(bomb.pid, signal.SIGKILL)\n"
            "err = bomb.stderr.read().decode()\n"
            "while True:\n"
            "    try: os.waitpid(-1, 0)\n"
            "    except ChildProcessError: break\n"
            "print(err[:2000])\n"
        ),
    )
    assert code == 0 and "Resource temporarily unavailable" in out, out
    # The python version reports exactly how far it got, then cleans up after itself.
    code, out = py(
        container,
        FORK_BOMB,
    )
    assert "UNLIMITED" not in out and "Resource temporarily unavailable" in out, out
    assert int(out.split()[2]) < 64, out
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork
    # the container is still alive and answering
    container.reload()
    assert container.status == "running"
    deadline = time.monotonic() + 10
    while True:
        code, out = sh(container, "echo alive")
        if (code, out.strip()) == (0, "alive") or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert (code, out.strip()) == (0, "alive"), out


def test_memory_above_the_limit_is_oom_killed(run_sandbox, docker_client) -> None:  # type: ignore[no-untyped-def]
    world, start_sandbox = run_sandbox
    spec = replace(world.spec("hog"), limits=replace(DEFAULT_LIMITS, memory_mb=64))
    container = start_sandbox(spec)
    host_config = docker_client.api.inspect_container(container.id)["HostConfig"]
    assert host_config["Memory"] == host_config["MemorySwap"] == 64 * 1024 * 1024  # and no swap on top
    if world.runtime == "runsc":
        check_gvisor_memory_cap(container, docker_client, spec.group_dir)
        return
    assert cgroup_value(container, "memory.max", "memory/memory.limit_in_bytes") == str(64 * 1024 * 1024)
    code, out = py(container, "data = b'x' * (200 * 1024 * 1024)\nprint('ALLOCATED', len(data))")
    assert "ALLOCATED" not in out
    assert code == 137 or (code == 1 and "MemoryError" in out), (code, out)
    if code == 137:
        events = cgroup_value(container, "memory.events", "memory/memory.oom_control")
        oom_kills = dict(line.split() for line in events.splitlines()).get("oom_kill", "0")
        assert int(oom_kills) >= 1, events
    container.reload()
    assert container.status == "running"  # only the hog died
    code, out = sh(container, "echo alive")
    assert (code, out.strip()) == (0, "alive")


def check_gvisor_memory_cap(container: Any, docker_client: Any, group_dir: Path) -> None:
    """Under gVisor the host cgroup holds the Sentry and all guest memory: the guest is told the
    limit is all the RAM there is, and a hog gets MemoryError or takes only its own sandbox down.

    The hog runs as a detached exec reporting into the group folder: an exec attached to a
    sandbox whose Sentry was OOM-killed never returns.
    """
    limit = 64 * 1024 * 1024
    path = host_cgroup_file(container.id, "memory", "memory.limit_in_bytes", "memory.max")
    assert path.read_text().strip() == str(limit)
    code, out = sh(container, "grep MemTotal /proc/meminfo")
    assert code == 0 and out.split()[1:] == [str(limit // 1024), "kB"], out
    hog = (
        "import pathlib\nout = pathlib.Path('/workspace/group/hog.out')\n"
        "try:\n    data = b'x' * (200 * 1024 * 1024)\n    out.write_text(f'ALLOCATED {len(data)}')\n"
        "except MemoryError:\n    out.write_text('MemoryError')\n"
    )
    exec_id = docker_client.api.exec_create(container.id, ["python3", "-c", hog])["Id"]
    docker_client.api.exec_start(exec_id, detach=True)
    report = group_dir / "hog.out"
    deadline = time.monotonic() + 60
    while not report.exists() and time.monotonic() < deadline:
        container.reload()
        if container.status != "running":
            break
        time.sleep(0.2)
    container.reload()
    if container.status == "running":
        assert report.read_text() == "MemoryError"
        assert sh(container, "echo alive") == (0, "alive\n")
    else:  # the host's OOM killer took the whole sandbox (its Sentry), nothing outside it
        assert not report.exists() or "ALLOCATED" not in report.read_text()
        state = container.attrs["State"]
        assert state["Status"] == "exited" and (state["OOMKilled"] or state["ExitCode"] != 0), state
        assert sentry_pids(container.id) == []


# ---------------------------------------------------------------- removal


async def test_stop_removes_the_container(run_sandbox, docker_client) -> None:  # type: ignore[no-untyped-def]
    world, start_sandbox = run_sandbox
    container = start_sandbox(world.spec("gone"))
    waiter = ThreadPoolExecutor(max_workers=1)
    try:
        sandbox = DockerSandbox("gone", container, waiter)
        await sandbox.stop()  # container.remove(force=True)
        assert await sandbox.wait_exit() != 0
        await sandbox.stop()  # idempotent
    finally:
        waiter.shutdown(wait=False, cancel_futures=True)
    listing = subprocess.run(
        ["docker", "ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert container.id not in listing and container.name not in listing
    with pytest.raises(NotFound):
        docker_client.containers.get(container.id)


async def test_remove_orphans_only_touches_this_instance(run_sandbox, docker_client) -> None:  # type: ignore[no-untyped-def]
    world, start_sandbox = run_sandbox
    mine = [start_sandbox(world.spec("orphan-a")), start_sandbox(world.spec("orphan-b"))]
    mine[1].stop(timeout=0)  # an exited leftover counts too
    other_instance = "other-" + secrets.token_hex(6)
    spec = world.spec("foreign")
    foreign = start_sandbox(replace(spec, labels={LABEL_INSTANCE: other_instance}))
    unlabeled = start_sandbox(replace(spec, labels={}))
    backend = DockerBackend(max_containers=2)
    try:
        assert await backend.remove_orphans(world.instance) == 2
        assert await backend.remove_orphans(world.instance) == 0
    finally:
        await backend.close()
    for container in mine:
        with pytest.raises(NotFound):
            docker_client.containers.get(container.id)
    for survivor in (foreign, unlabeled):
        survivor.reload()
        assert survivor.status == "running"
        assert survivor.labels[LABEL_GROUP] == "foreign"
    assert foreign.labels[LABEL_INSTANCE] == other_instance
    # (the run_sandbox fixture force-removes the survivors)
