"""The sandbox policy of the bwrap backend against hostile probes, in real bwrap sandboxes.

The mirror of `test_sandbox_hardening.py` (Docker). Every probe runs in a sandbox started by
`BwrapBackend.start` from a spec built the way `gateway/sandboxes.py` builds it, with the
command replaced by the probe (bwrap has no `exec`, so each probe gets its own sandbox with
the identical policy). Network probes only ever touch loopback addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core.config import parse
from core.models import Group, MountRequest
from gateway.sandboxes import sandbox_spec
from groups import folders
from groups.mounts import plan_mounts
from groups.sandbox.base import ExtraMount, Limits, SandboxSpec, SandboxUnavailable
from groups.sandbox.bwrap import BWRAP_ENV, BwrapBackend, launch, read_rootfs
from groups.sandbox.bwrap_argv import bwrap_argv
from groups.uids import group_identity
from tests.integration.bwrap_support import alive, bwrap_rootfs, descendants, link_rootfs, probe
from tests.integration.probes import (
    ABI_PROBE,
    FORK_BOMB,
    KEY_PLANT,
    KEY_STEAL,
    SECCOMP_DENIED,
    SYSCALL_PROBE,
    connect_probe,
    parse_probe,
)

__all__ = ["bwrap_rootfs"]  # the session fixture, imported for pytest

DEFAULT_LIMITS = Limits(memory_mb=256, cpus=1.0, pids=128, tmpfs_mb=16)
SECRET_VAR = "CLAWGATE_TEST_FAKE_SECRET"
ROOT = Path(__file__).resolve().parents[2]


class World:
    """A data dir (using the session's rootfs export) and a config dir, plus group specs."""

    def __init__(self, root: Path, image: str, store: Path) -> None:
        self.config_dir = root / "config"
        self.data_dir = root / "data"
        self.config_dir.mkdir(parents=True)
        link_rootfs(self.data_dir, store)
        self.data_dir.chmod(0o700)  # as the gateway leaves it
        # a uid range of its own: RLIMIT_NPROC counts per uid over the whole host, and other test
        # sessions on this machine run sandboxes as the default range
        base = 100_000 + secrets.randbelow(1_000) * 1_000
        toml = f'[sandbox]\nbackend = "bwrap"\nimage = "{image}"\nrun_as_uid = {base}\n'
        self.config = parse(toml, self.config_dir / "config.toml")
        (self.config_dir / "config.toml").write_text(toml)
        self.instance = "test-" + secrets.token_hex(6)
        self.token = secrets.token_hex(8)
        self.secret = "fake-secret-" + secrets.token_hex(16)
        (self.config_dir / f"host-config-marker-{self.token}").write_text("host config")
        self.backend = BwrapBackend(max_containers=2, data_dir=self.data_dir)

    def spec(
        self,
        folder: str,
        *,
        is_main: bool = False,
        limits: Limits = DEFAULT_LIMITS,
        extra_mounts: tuple[ExtraMount, ...] = (),
    ) -> SandboxSpec:
        dirs = folders.group_dirs(self.data_dir, folder)
        identity = group_identity(self.data_dir, folder, self.config.sandbox.run_as_uid)
        folders.prepare(dirs, identity if os.getuid() == 0 else None, is_main=is_main)
        (dirs.run / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nnot a real cert\n")
        (dirs.run / "ca.pem").chmod(0o644)
        group = Group(folder=folder, chat_id=f"test:{folder}", name=folder, trigger="@bot", is_main=is_main)
        return sandbox_spec(self.config, group, dirs, identity, self.instance, extra_mounts, limits=limits)

    async def sh(self, spec: SandboxSpec, script: str) -> tuple[int, str]:
        return await probe(self.backend, spec, script)

    async def py(self, spec: SandboxSpec, code: str) -> tuple[int, str]:
        sandbox = await self.backend.start(spec, ["python3", "-c", code])
        try:
            exit_code = await asyncio.wait_for(sandbox.wait_exit(), 60)
        finally:
            await sandbox.stop()
        return exit_code, await sandbox.logs_tail(64 * 1024)


@pytest.fixture
def world(sandbox_image, bwrap_rootfs, tmp_path) -> Iterator[World]:  # type: ignore[no-untyped-def]
    yield World(tmp_path, sandbox_image, bwrap_rootfs)


def parse_mountinfo(text: str) -> dict[str, tuple[str, str, str]]:
    mounts = {}
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        sep = fields.index("-")
        mounts[fields[4]] = (fields[3], fields[5], fields[sep + 1])
    return mounts


def status(text: str) -> dict[str, str]:
    return {k: v.strip() for k, _, v in (line.partition(":") for line in text.splitlines())}


# ---------------------------------------------------------------- the policy itself


def test_argv_unshares_everything_and_never_shares_the_network(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    for privileged in (True, False):
        argv = bwrap_argv(spec, Path("/rootfs"), privileged=privileged)
        assert "--share-net" not in argv and "--unshare-net" in argv or "--unshare-all" in argv
        for flag in ("--die-with-parent", "--new-session", "--clearenv"):
            assert flag in argv
        assert argv[argv.index("--ro-bind") + 1 : argv.index("--ro-bind") + 3] == ["/rootfs", "/"]
        assert argv[argv.index("--cap-drop") + 1] == "ALL"
        assert argv[-3:] == ["python3", "-m", "agent"]
    assert "--unshare-user" in bwrap_argv(spec, Path("/r"), privileged=False)
    with pytest.raises(SandboxUnavailable, match="root"):
        bwrap_argv(replace(spec, uid=0), Path("/r"))


async def test_check_says_how_to_fix_a_missing_or_stale_export(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    await world.backend.check(world.config.sandbox.image)  # the real export is fine
    empty = BwrapBackend(1, tmp_path / "empty")
    with pytest.raises(SandboxUnavailable, match="clawgate image build --backend bwrap"):
        await empty.check(world.config.sandbox.image)
    with pytest.raises(SandboxUnavailable, match="clawgate image build --backend bwrap"):
        await world.backend.check("clawgate-some-other-image:1")
    current = read_rootfs(world.data_dir)
    assert current is not None and (current.path / "usr/bin/python3").exists()
    assert current.path.stat().st_uid == 0 or os.getuid() != 0
    assert not current.path.stat().st_mode & 0o022  # nobody but its owner could ever write it


# ---------------------------------------------------------------- identity and privileges


async def test_runs_as_the_spec_uid_which_is_not_root(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    assert spec.uid != 0 and spec.gid != 0
    if os.getuid() == 0:  # its own uid, never the shared run_as_uid of old
        assert spec.uid == spec.gid and spec.uid > world.config.sandbox.run_as_uid
    code, out = await world.sh(spec, "id -u; id -g; id -G; echo ---; cat /proc/self/status")
    assert code == 0, out
    ids, _, text = out.partition("---\n")
    assert ids.split() == [str(spec.uid), str(spec.gid), str(spec.gid)]
    fields = status(text)
    assert fields["Uid"].split() == [str(spec.uid)] * 4
    assert fields["Gid"].split() == [str(spec.gid)] * 4
    assert fields["Groups"] in ("", str(spec.gid))


async def test_has_no_capabilities_and_no_new_privileges(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    code, out = await world.sh(spec, "cat /proc/self/status")
    fields = status(out)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(fields[cap], 16) == 0, (cap, fields[cap])
    assert fields["NoNewPrivs"] == "1"
    code, out = await world.py(
        spec,
        "import os\nfor f in (lambda: os.setuid(0), lambda: os.setgroups([0]), lambda: os.setgid(0)):\n"
        "    try:\n        f(); print('GAINED')\n    except PermissionError: print('denied')\n",
    )
    assert code == 0 and out.split() == ["denied"] * 3, out
    # pid 1 is bwrap's reaper; whatever uid it has, it holds no capability the sandbox could use
    code, out = await world.sh(spec, "cat /proc/1/status")
    fields = status(out)
    assert int(fields["CapEff"], 16) == 0 and int(fields["CapPrm"], 16) == 0, out
    assert fields["NoNewPrivs"] == "1"
    code, out = await world.sh(spec, "kill -9 1; echo rc=$?")
    assert "rc=0" not in out or fields["Uid"].split()[0] == str(spec.uid), out


# ---------------------------------------------------------------- filesystem


async def test_root_is_read_only_but_tmp_and_group_folder_are_writable(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    code, out = await world.sh(spec, "cat /proc/self/mountinfo")
    mounts = parse_mountinfo(out)
    assert "ro" in mounts["/"][1].split(",")
    for path in ("/usr/probe", "/etc/probe", "/probe", "/opt/clawgate/agent/probe", "/workspace/probe"):
        code, out = await world.sh(spec, f"touch {path}")
        assert code != 0 and "Read-only file system" in out, (path, out)
    code, out = await world.sh(spec, "echo pwned >> /etc/passwd")
    assert code != 0, out
    _, options, fstype = mounts["/tmp"]
    assert fstype == "tmpfs" and {"rw", "nosuid", "nodev"} <= set(options.split(","))
    code, out = await world.sh(spec, "echo scratch > /tmp/scratch && cat /tmp/scratch")
    assert (code, out.strip()) == (0, "scratch")
    code, out = await world.sh(spec, "head -c 33554432 /dev/zero > /tmp/big; echo rc=$?")
    assert "No space left on device" in out and "rc=1" in out, out
    code, out = await world.sh(spec, "echo from-sandbox > /workspace/group/note.txt && echo ok")
    assert (code, out.strip()) == (0, "ok")
    written = spec.group_dir / "note.txt"
    assert written.read_text() == "from-sandbox\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (spec.uid, spec.gid)


async def test_non_main_group_cannot_write_global_memory(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    (spec.global_dir / "shared.md").write_text("global memory")
    os.chown(spec.global_dir / "shared.md", spec.uid, spec.gid)
    code, out = await world.sh(spec, "cat /workspace/global/shared.md")
    assert (code, out) == (0, "global memory")
    for script in (
        "touch /workspace/global/evil",
        "echo x >> /workspace/global/shared.md",
        "rm /workspace/global/shared.md",
        "mkdir /workspace/global/d",
    ):
        code, out = await world.sh(spec, script)
        assert code != 0 and "Read-only file system" in out, (script, out)
    assert sorted(p.name for p in spec.global_dir.iterdir()) == ["shared.md"]
    assert (spec.global_dir / "shared.md").read_text() == "global memory"


async def test_main_group_can_write_global_memory(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("main", is_main=True)
    code, out = await world.sh(spec, "echo remember > /workspace/global/memory.md && echo ok")
    assert (code, out.strip()) == (0, "ok")
    assert (spec.global_dir / "memory.md").read_text() == "remember\n"
    code, out = await world.sh(spec, "touch /run/clawgate/evil")
    assert code != 0 and "Read-only file system" in out, out


async def test_run_dir_is_mounted_read_only(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    code, out = await world.sh(spec, "cat /run/clawgate/ca.pem")
    assert code == 0 and "not a real cert" in out
    for script in (
        "touch /run/clawgate/evil.sock",
        "rm -f /run/clawgate/ca.pem",
        "echo x > /run/clawgate/ca.pem",
        "mv /run/clawgate/ca.pem /run/clawgate/x",
    ):
        code, out = await world.sh(spec, script)
        assert code != 0 and "Read-only file system" in out, (script, out)
    assert sorted(p.name for p in spec.run_dir.iterdir()) == ["ca.pem"]


async def test_only_its_own_mounts_are_visible(world) -> None:  # type: ignore[no-untyped-def]
    sibling = world.spec("sibling")
    (sibling.group_dir / f"sibling-marker-{world.token}").write_text("another group's data")
    spec = world.spec("alpha")
    code, out = await world.sh(spec, "cat /proc/self/mountinfo")
    mounts = parse_mountinfo(out)
    exposed = {p for p in mounts if p.startswith(("/workspace", "/run/clawgate"))}
    assert exposed == {
        "/workspace",
        "/workspace/group",
        "/workspace/global",
        "/workspace/inbox",
        "/run/clawgate",
    }
    assert "ro" in mounts["/workspace/inbox"][1].split(",")  # host-owned attachments: read-only
    assert mounts["/workspace"][2] == "tmpfs" and "ro" in mounts["/workspace"][1].split(",")
    for point, host_dir in {
        "/workspace/group": spec.group_dir,
        "/workspace/global": spec.global_dir,
        "/run/clawgate": spec.run_dir,
    }.items():
        assert mounts[point][0].endswith("/".join(host_dir.parts[-2:])), (point, mounts[point])
    for root, _, _ in mounts.values():
        assert "config" not in Path(root).parts and "sibling" not in Path(root).parts, root
    code, out = await world.sh(spec, "ls -A /workspace")
    assert sorted(out.split()) == ["global", "group", "inbox"]
    code, out = await world.sh(spec, "test -e /var/run/docker.sock || test -e /run/docker.sock; echo $?")
    assert out.strip() == "1"
    for name in (f"sibling-marker-{world.token}", f"host-config-marker-{world.token}", "clawgate.db"):
        code, out = await world.sh(
            spec,
            "find / \\( -path /proc -o -path /sys \\) -prune -o "
            f"-name '{name}' -print 2>/dev/null; echo done",
        )
        assert out.strip() == "done", out
    code, out = await world.sh(
        spec, "ls /workspace/group/../../; cat ../sibling/* 2>&1; ls /workspace/group/.."
    )
    assert world.token not in out


# ---------------------------------------------------------------- network


async def test_only_loopback_and_no_route(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    code, out = await world.sh(spec, "tail -n +3 /proc/net/dev | cut -d: -f1")
    assert out.split() == ["lo"]
    code, out = await world.sh(spec, "cat /proc/net/route")
    assert code == 0 and out.splitlines()[0].startswith("Iface") and out.splitlines()[1:] == [], out
    code, out = await world.sh(spec, "cat /proc/net/ipv6_route 2>/dev/null || true")
    assert [line for line in out.splitlines() if line.split()[-1] != "lo"] == [], out


async def test_cannot_reach_a_server_on_the_host_loopback(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    servers = [socket.create_server(("127.0.0.1", 0))]
    with contextlib.suppress(OSError):
        servers.append(socket.create_server(("::1", 0), family=socket.AF_INET6))
    accepted: list[Any] = []
    stop = threading.Event()

    def serve(server: socket.socket) -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, peer = server.accept()
                accepted.append(peer)
                conn.close()

    threads = [threading.Thread(target=serve, args=(s,), daemon=True) for s in servers]
    for thread in threads:
        thread.start()
    try:
        targets = [("127.0.0.1", servers[0].getsockname()[1]), ("localhost", servers[0].getsockname()[1])]
        if len(servers) > 1:
            targets.append(("::1", servers[1].getsockname()[1]))
        for host, port in targets[:1]:  # the host itself can reach it
            with socket.create_connection((host, port), timeout=2):
                pass
        deadline = time.monotonic() + 2
        while not accepted and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(accepted) == 1
        code, out = await world.py(spec, connect_probe(targets))
        assert code == 0 and "CONNECTED" not in out and out.count("failed") == len(targets), out
        await asyncio.sleep(0.3)
        assert len(accepted) == 1, accepted
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=2)
        for server in servers:
            server.close()


# ---------------------------------------------------------------- secrets


async def test_host_environment_does_not_leak_into_the_sandbox(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(SECRET_VAR, world.secret)
    spec = world.spec("alpha")
    sandbox = await world.backend.start(
        spec, ["python3", "-c", "import sys; sys.stdout.buffer.write(open('/proc/self/environ','rb').read())"]
    )
    pids = descendants(sandbox.pid) | {sandbox.pid}
    host_view = {pid: await asyncio.to_thread(Path(f"/proc/{pid}/cmdline").read_bytes) for pid in pids}
    assert await asyncio.wait_for(sandbox.wait_exit(), 30) == 0
    raw = await sandbox.logs_tail(64 * 1024)
    environ = dict(item.split("=", 1) for item in raw.split("\0") if item)
    assert world.secret not in raw and SECRET_VAR not in environ
    extra = {"PATH", "PYTHONPATH", "PYTHONSAFEPATH", "PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "HOME"}
    assert environ.pop("PWD") == "/workspace/group"  # bwrap's --chdir sets it, like a login shell
    assert set(environ) == set(spec.env) | extra, set(environ) ^ (set(spec.env) | extra)
    for key, value in spec.env.items():
        assert environ[key] == value, key
    assert environ["ANTHROPIC_API_KEY"] == "placeholder"
    for cmdline in host_view.values():  # argv of bwrap and of everything in the sandbox, seen from the host
        assert world.secret.encode() not in cmdline


# ---------------------------------------------------------------- resource limits


async def test_fork_bomb_is_contained_by_the_pids_limit(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("bomb", limits=replace(DEFAULT_LIMITS, pids=64))
    code, out = await world.py(
        spec,
        FORK_BOMB,
    )
    assert "UNLIMITED" not in out and "Resource temporarily unavailable" in out, out
    assert int(out.split()[2]) < 64, out
    code, out = await world.sh(
        spec,
        "for i in $(seq 200); do sleep 30 & done 2>&1 | head -3; kill -9 $(jobs -p) 2>/dev/null; echo alive",
    )
    assert "alive" in out and ("Resource temporarily unavailable" in out or "fork" in out.lower()), out
    assert subprocess.run(["true"], check=False).returncode == 0  # the host can still fork
    code, out = await world.sh(spec, "echo alive")
    assert (code, out.strip()) == (0, "alive")


async def test_memory_above_the_limit_is_contained(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("hog", limits=replace(DEFAULT_LIMITS, memory_mb=64))
    code, out = await world.sh(
        spec, "python3 -c \"data = b'x' * (200 * 1024 * 1024); print('ALLOCATED', len(data))\"; echo rc=$?"
    )
    assert "ALLOCATED" not in out, out
    assert "rc=137" in out or ("rc=1" in out and "MemoryError" in out), out
    # only the hog died: the shell that ran it reported its exit code; a fresh sandbox works
    code, out = await world.sh(spec, "echo alive")
    assert (code, out.strip()) == (0, "alive")


# ---------------------------------------------------------------- stopping


async def test_stop_kills_everything_including_background_children(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("gone")
    sandbox = await world.backend.start(
        spec,
        ["sh", "-c", "(setsid sleep 300 &); nohup sleep 301 >/dev/null 2>&1 & sleep 302 & echo up; wait"],
    )
    deadline = time.monotonic() + 10
    while len(descendants(sandbox.pid)) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    tree = descendants(sandbox.pid) | {sandbox.pid}
    assert len(tree) >= 5, tree
    await sandbox.stop()
    assert await sandbox.wait_exit() != 0
    await sandbox.stop()  # idempotent
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert not [pid for pid in tree if alive(pid)]
    assert list(world.backend.pid_dir.glob("*.pid")) == []


def test_sandbox_dies_with_the_gateway_process(world) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL the process that started the sandbox: nothing of the sandbox survives it."""
    spec = world.spec("orphan")
    script = f"""
import asyncio, sys
sys.path.insert(0, {str(ROOT)!r})
from pathlib import Path
from groups.sandbox.base import Limits, SandboxSpec
from groups.sandbox.bwrap import BwrapBackend
spec = SandboxSpec(folder="orphan", is_main=False, image={spec.image!r},
    group_dir=Path({str(spec.group_dir)!r}), global_dir=Path({str(spec.global_dir)!r}),
    run_dir=Path({str(spec.run_dir)!r}), uid={spec.uid}, gid={spec.gid},
    limits=Limits(256, 1.0, 128, 16), labels={{"clawgate.instance": {world.instance!r}}})
async def main():
    backend = BwrapBackend(1, Path({str(world.data_dir)!r}))
    sb = await backend.start(spec, ["sh", "-c", "sleep 300 & sleep 301"])
    print(sb.pid, flush=True)
    await asyncio.sleep(300)
asyncio.run(main())
"""
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        bwrap_pid = int(parent.stdout.readline())  # type: ignore[union-attr]
        deadline = time.monotonic() + 10
        while len(descendants(bwrap_pid)) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        tree = descendants(bwrap_pid) | {bwrap_pid}
        assert len(tree) >= 4, tree
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in tree) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in tree if alive(pid)]
    # the dead gateway's pidfile (and cgroup, as root) are what the next start cleans up
    assert asyncio.run(world.backend.remove_orphans(world.instance)) == 1
    assert list(world.backend.pid_dir.glob("*.pid")) == []


async def test_remove_orphans_only_touches_this_instance(world) -> None:  # type: ignore[no-untyped-def]
    # a leftover of this instance (its gateway died: --die-with-parent took the processes,
    # the pidfile stayed), a live sandbox of another instance, and one of ours
    world.backend.pid_dir.mkdir(parents=True, exist_ok=True)
    (world.backend.pid_dir / "bwrap-x-1.pid").write_text(f"999999 12345 {world.instance}\n")
    other = BwrapBackend(1, world.data_dir, instance="other")
    foreign = await other.start(world.spec("foreign"), ["sleep", "300"])
    try:
        assert await world.backend.remove_orphans(world.instance) == 1
        assert await world.backend.remove_orphans(world.instance) == 0
        assert not foreign.exited.done() and alive(foreign.pid)
    finally:
        await foreign.stop()


# ---------------------------------------------------------------- seccomp, uid, env (issue 11, break 6)


async def test_dangerous_syscalls_are_denied_by_the_seccomp_filter(world) -> None:  # type: ignore[no-untyped-def]
    """Keyring, namespaces, mounts, ptrace, bpf, perf, io_uring…: what Docker's default profile denies."""
    spec = world.spec("alpha")
    code, out = await world.sh(spec, "grep -E '^Seccomp' /proc/self/status")
    assert status(out)["Seccomp"] == "2" and int(status(out)["Seccomp_filters"]) >= 1, out
    code, out = await world.py(spec, SYSCALL_PROBE)
    assert code == 0, out
    assert parse_probe(out) == SECCOMP_DENIED, out
    # threads still start: libc falls back from clone3 (ENOSYS) to clone without namespace flags
    code, out = await world.py(
        spec,
        "import threading\nt = threading.Thread(target=print, args=('thread ran',)); t.start(); t.join()",
    )
    assert (code, out.strip()) == (0, "thread ran"), out


@pytest.mark.skipif(platform.machine() != "x86_64", reason="the x32 and i386 ABIs exist on x86_64 only")
async def test_system_calls_through_another_abi_kill_the_caller(world) -> None:  # type: ignore[no-untyped-def]
    """i386 `int 0x80` (and x32) numbers differ from x86_64's: they must not slip past the filter."""
    code, out = await world.py(world.spec("alpha"), ABI_PROBE)
    assert code == 0, out
    assert out.split("\n")[:2] == ["x32 killed SIGSYS", "i386 killed SIGSYS"], out


async def test_unshare_cannot_make_a_user_namespace_with_root_inside(world) -> None:  # type: ignore[no-untyped-def]
    spec = world.spec("alpha")
    code, out = await world.sh(
        spec,
        "unshare -r id -u; echo rc=$?; "
        "unshare -rm sh -c 'mount -t tmpfs none /tmp && echo MOUNTED'; echo rc=$?; "
        "unshare -rn ip link 2>&1; echo done",
    )
    assert "MOUNTED" not in out and "rc=0" not in out, out
    assert out.count("Operation not permitted") >= 2 and out.strip().endswith("done"), out


async def test_a_key_one_group_plants_cannot_be_read_by_another(world) -> None:  # type: ignore[no-untyped-def]
    planter, thief = world.spec("alpha"), world.spec("beta")
    if os.getuid() == 0:  # each group its own uid: nothing keyed by uid is shared
        assert planter.uid != thief.uid and planter.gid != thief.gid
    secret = "planted-" + secrets.token_hex(8)
    sandbox = await world.backend.start(planter, ["python3", "-c", KEY_PLANT, secret])
    try:
        deadline = time.monotonic() + 30
        while "planted" not in await sandbox.logs_tail() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        planted = await sandbox.logs_tail()
        code, stolen = await world.py(thief, KEY_STEAL)
    finally:
        await sandbox.stop()
    assert planted.split() == ["planted", "EPERM"], planted
    assert "STOLEN" not in stolen and secret not in stolen, stolen
    assert stolen.split() == ["search", "EPERM"], stolen


async def test_bwrap_itself_gets_none_of_the_gateway_environment(world, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """/proc/<pid>/environ of bwrap and of every process in the sandbox, as the host sees it."""
    monkeypatch.setenv(SECRET_VAR, world.secret)
    monkeypatch.setenv("CLAWGATE_TELEGRAM_TOKEN", world.secret)
    spec = world.spec("alpha")
    sandbox = await world.backend.start(spec, ["sh", "-c", "cat /proc/1/environ; echo; echo up; sleep 60"])
    try:
        deadline = time.monotonic() + 30
        while "up" not in await sandbox.logs_tail() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        bwrap_environ = await asyncio.to_thread(Path(f"/proc/{sandbox.pid}/environ").read_bytes)
        seen = b""
        for pid in descendants(sandbox.pid):
            with contextlib.suppress(OSError):
                seen += await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
        inside = await sandbox.logs_tail()
    finally:
        await sandbox.stop()
    keys = {item.split(b"=", 1)[0].decode() for item in bwrap_environ.split(b"\0") if item}
    assert keys <= set(BWRAP_ENV), keys
    assert world.secret.encode() not in bwrap_environ + seen
    assert SECRET_VAR not in inside and world.secret not in inside, inside


# ---------------------------------------------------------------- mount check/use race (issue 11, break 9b)


class Tree:
    """An allowed root with a nested read-write grant, and a secret tree the grant must never reach."""

    def __init__(self, world: World, root: Path) -> None:
        self.projects, self.secret = root / "projects", root / "secret"
        self.grant = self.projects / "team" / "shared"
        self.grant.mkdir(parents=True)
        self.grant.chmod(0o777)  # so only the mount decides what the sandbox uid may write
        (self.grant / "original.txt").write_text("the validated tree")
        self.secret.mkdir()
        (self.secret / "secret.txt").write_text("host secret " + world.token)
        (self.secret / "shared").mkdir()  # what a swapped parent would lead to
        (self.secret / "shared" / "secret.txt").write_text("host secret " + world.token)
        allowlist = {
            "allowed_roots": [{"path": str(self.projects), "allow_read_write": True}],
            "non_main_read_only": False,
        }
        (world.config_dir / "mount-allowlist.json").write_text(json.dumps(allowlist))
        group = Group(
            "alpha",
            "test:alpha",
            "alpha",
            "@bot",
            extra_mounts=(MountRequest(str(self.grant), "shared", read_write=True),),
        )
        plan = plan_mounts(
            group, world.config_dir / "mount-allowlist.json", world.config_dir, world.data_dir, None
        )
        assert [(m.container_path, m.read_only) for m in plan.granted] == [("/workspace/extra/shared", False)]
        self.spec = world.spec("alpha", extra_mounts=tuple(plan.granted))

    def swap_grant_for_symlink(self) -> None:
        self.grant.rename(self.grant.with_name("shared-original"))
        self.grant.symlink_to(self.secret, target_is_directory=True)

    def swap_parent_for_symlink(self) -> None:
        team = self.projects / "team"
        team.rename(self.projects / "team-original")
        team.symlink_to(self.secret, target_is_directory=True)


@pytest.mark.parametrize("swap", ["grant", "parent"])
async def test_grant_swapped_for_a_symlink_after_validation_is_never_mounted(world, tmp_path, swap) -> None:  # type: ignore[no-untyped-def]
    tree = Tree(world, tmp_path / "hostfs")
    tree.swap_grant_for_symlink() if swap == "grant" else tree.swap_parent_for_symlink()
    with pytest.raises(SandboxUnavailable, match="changed after it was checked"):
        sandbox = await world.backend.start(tree.spec, ["sh", "-c", "cat /workspace/extra/shared/*"])
        await sandbox.stop()  # pragma: no cover - only reached when the race is open
    assert list(world.backend.pid_dir.glob("*.pid")) == []


def test_swap_after_the_sources_are_opened_still_mounts_the_original_inode(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The sources are held as descriptors from the check on: a later swap changes nothing."""
    tree = Tree(world, tmp_path / "hostfs")
    rootfs = read_rootfs(world.data_dir)
    assert rootfs is not None
    script = "cd /workspace/extra/shared && ls && cat ./* && echo written > new"
    with launch(tree.spec, rootfs, ["sh", "-c", script]) as (argv, fds):
        tree.swap_grant_for_symlink()
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, env=BWRAP_ENV, pass_fds=fds, check=False
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["original.txt", "the validated tree"], done.stdout
    assert world.token not in done.stdout
    assert (tree.projects / "team" / "shared-original" / "new").read_text() == "written\n"
    assert sorted(p.name for p in tree.secret.iterdir()) == ["secret.txt", "shared"]


async def test_project_mount_by_fd_still_shadows_its_env_file(world, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Files and devices are mounted by fd too: main's project `.env` stays covered by /dev/null."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "README").write_text("project")
    (project / ".env").write_text("TOKEN=env-secret-" + world.token)
    (world.config_dir / "mount-allowlist.json").write_text(json.dumps({"allowed_roots": []}))
    main = Group("main", "test:main", "main", "@bot", is_main=True)
    plan = plan_mounts(
        main, world.config_dir / "mount-allowlist.json", world.config_dir, world.data_dir, str(project)
    )
    assert [m.container_path for m in plan.granted] == ["/workspace/project", "/workspace/project/.env"]
    spec = world.spec("main", is_main=True, extra_mounts=tuple(plan.granted))
    code, out = await world.sh(
        spec, "cat /workspace/project/README; cat /workspace/project/.env; echo; touch /workspace/project/x"
    )
    assert out.startswith("project") and world.token not in out, out
    assert code != 0 and "Read-only file system" in out, out
