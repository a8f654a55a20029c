"""The bubblewrap sandbox backend: one `bwrap` process tree per group, no container engine.

The sandbox gets the same policy as a Docker container; its command line, which carries
all of it (namespaces, read-only root, mounts, no capabilities, seccomp, the uid switch), is
`groups.sandbox.bwrap_argv`. This module runs it: the image's root filesystem (exported
once by `clawgate image build --backend bwrap`), the descriptors the command line names,
the limits, spawning and reaping bwrap, and sweeping what a killed gateway left behind.

System calls. Every sandbox gets the seccomp filter of `groups.sandbox.seccomp`
(`--seccomp FD`): keyring, namespace, mount, ptrace, bpf, perf and io_uring calls, and the
rest of what Docker's default profile denies, fail with EPERM; other ABIs are killed.

Mounts by descriptor. Every bind source is opened before bwrap starts, component by component
without following a symlink (`groups.sandbox.bind_fds`), and mounted by fd (`--bind-fd`):
a grant swapped for a symlink after `groups.mounts` validated it is never mounted.

Environment. bwrap itself is started with `BWRAP_ENV` only, never the gateway's environment
(which may hold tokens); the sandbox gets exactly the spec's (`--clearenv`, `--setenv`).

Limits. Applied to bwrap itself before exec, inherited by everything inside:
- rlimits: RLIMIT_NOFILE, RLIMIT_FSIZE, RLIMIT_CORE=0; RLIMIT_NPROC = pids limit x
  max_containers (per uid over the whole host, so only when the sandbox has its group's own
  uid, with headroom); RLIMIT_AS = memory_mb per process when no memory cgroup applies.
- cgroups (v1 or v2, when writable, i.e. as root): memory (+ swap) = memory_mb, pids =
  pids limit, cpu quota = cpus, in `clawgate/<instance>/<sandbox id>`. The cgroup is
  also used to kill every process of a sandbox on stop. `BwrapBackend.last_limits` and
  the INFO log line say which applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import secrets
import shutil
import signal
import subprocess
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from groups.sandbox import seccomp
from groups.sandbox.base import SandboxSpec, SandboxUnavailable
from groups.sandbox.bind_fds import BindSourceChanged, open_bind_source
from groups.sandbox.bwrap_argv import DEFAULT_PATH, bwrap_argv, privileged_launch, sandbox_binds
from groups.sandbox.bwrap_cgroup import Cgroup, create_cgroup, leftover_cgroups
from groups.sandbox.memory import sandbox_usage

log = logging.getLogger(__name__)

MAX_LOG_BYTES = 64 * 1024
ROOTFS_DIR = "rootfs"  # under the data dir: <data>/rootfs/<image-id-short>/ + current.json
ROOTFS_META = "current.json"
FSIZE_MB = 1024
NOFILE = 1024
FIX = "run `clawgate image build --backend bwrap`"
# bwrap itself gets no gateway environment (the sandbox's is set with --clearenv/--setenv):
# /proc/<pid>/environ of bwrap, and of its pid 1 inside the sandbox, shows only this.
BWRAP_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


# ---------------------------------------------------------------- the exported root filesystem


@dataclass(frozen=True, slots=True)
class Rootfs:
    path: Path
    image: str
    image_id: str
    env_path: str = DEFAULT_PATH


def read_rootfs(data_dir: Path) -> Rootfs | None:
    """The current export recorded by `groups.sandbox.image.export_rootfs`, if any."""
    base = data_dir / ROOTFS_DIR
    try:
        meta = json.loads((base / ROOTFS_META).read_text())
    except (OSError, ValueError):
        return None
    env = dict(item.split("=", 1) for item in meta.get("env", []) if "=" in item)
    return Rootfs(base / meta["dir"], meta["image"], meta["image_id"], env.get("PATH", DEFAULT_PATH))


def _docker_image_id(image: str) -> str | None:
    """The image's current id if Docker is reachable and has it; None when we cannot tell."""
    try:
        import docker
        from docker.errors import DockerException
    except ImportError:  # pragma: no cover
        return None
    try:
        client = docker.from_env(timeout=5)
        try:
            return str(client.images.get(image).id)
        finally:
            client.close()
    except DockerException:
        return None


# ---------------------------------------------------------------- the running sandbox


def _preexec(procs_files: list[str], rlimits: list[tuple[int, int]]) -> None:
    """In the forked child, before exec(bwrap): join the cgroups, lower the limits. No imports here."""
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)
    for which, value in rlimits:
        resource.setrlimit(which, (value, value))


def _start_time(pid: int) -> str | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class BwrapSandbox:
    """A running bwrap tree; `exited` resolves with bwrap's exit code (the agent's)."""

    def __init__(
        self, folder: str, sandbox_id: str, proc: asyncio.subprocess.Process, cgroup: Cgroup, pidfile: Path
    ) -> None:
        self.folder = folder
        self.id = sandbox_id
        self.pid = proc.pid
        self._proc = proc
        self._cgroup = cgroup
        self._pidfile = pidfile
        self._log: deque[bytes] = deque()
        self._log_size = 0
        self._reader = asyncio.ensure_future(self._read_output())
        self.exited: asyncio.Future[int] = asyncio.ensure_future(self._wait())

    async def _read_output(self) -> None:
        assert self._proc.stdout is not None
        while chunk := await self._proc.stdout.read(8192):
            self._log.append(chunk)
            self._log_size += len(chunk)
            while self._log_size - len(self._log[0]) >= MAX_LOG_BYTES:
                self._log_size -= len(self._log.popleft())

    async def _wait(self) -> int:
        code = await self._proc.wait()
        # bwrap is gone; with --die-with-parent its pid namespace died with it. Sweep the cgroup anyway.
        await asyncio.to_thread(self._cleanup)
        with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(self._reader), 2)
        return code

    def _cleanup(self) -> None:
        self._cgroup.kill_all()
        self._cgroup.remove()
        with contextlib.suppress(OSError):
            self._pidfile.unlink()

    async def wait_exit(self) -> int:
        return await asyncio.shield(self.exited)

    async def stop(self) -> None:
        """SIGKILL bwrap (its pid namespace and every process in it die too) and every cgroup member."""
        if not self.exited.done():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            self._cgroup.kill_all()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.exited), 10)

    async def logs_tail(self, max_bytes: int = 4096) -> str:
        raw = b"".join(self._log)
        return raw[-min(max_bytes, MAX_LOG_BYTES) :].decode("utf-8", "replace")

    async def memory_bytes(self) -> int | None:
        """The sandbox's memory cgroup usage, or its process tree's RSS (groups/sandbox/memory.py)."""
        if self.exited.done():
            return None
        has_memory = "memory" in self._cgroup.applied
        return await asyncio.to_thread(sandbox_usage, self._cgroup.dirs, has_memory, self.pid)


# ---------------------------------------------------------------- launching bwrap


def _open_sources(spec: SandboxSpec) -> list[int]:
    """One `O_PATH` fd per bind of `spec`; SandboxUnavailable (nothing left open) if a source moved."""
    fds: list[int] = []
    try:
        for bind in sandbox_binds(spec):
            # a validated grant is already a real path: resolving it again would follow a swapped link
            source = bind.source if bind.validated else Path(os.path.realpath(bind.source))
            fds.append(open_bind_source(source))
    except (BindSourceChanged, OSError) as exc:
        for fd in fds:
            os.close(fd)
        raise SandboxUnavailable(
            f"a mount source of group {spec.folder!r} changed after it was checked ({exc}); "
            "the sandbox was not started"
        ) from None
    return fds


@contextlib.contextmanager
def launch(
    spec: SandboxSpec, rootfs: Rootfs, command: list[str] | None
) -> Iterator[tuple[list[str], list[int]]]:
    """(argv, fds to pass) for one bwrap run: the seccomp filter and every mount source as fds.

    The fds are closed when the block ends (after the spawn: bwrap holds its own copies).
    """
    executable = shutil.which("bwrap")
    if executable is None:
        raise SandboxUnavailable("bubblewrap is not installed: `apt-get install bubblewrap`")
    filter_fd = seccomp.filter_fd()
    fds = [filter_fd]
    try:
        fds += _open_sources(spec)
        argv = bwrap_argv(
            spec, rootfs.path, command, env_path=rootfs.env_path, seccomp_fd=filter_fd, bind_fds=fds[1:]
        )
        argv[0] = executable
        yield argv, fds
    finally:
        for fd in fds:
            os.close(fd)


# ---------------------------------------------------------------- the backend


class BwrapBackend:
    def __init__(self, max_containers: int, data_dir: Path, instance: str | None = None) -> None:
        self._max = max_containers
        self._data_dir = data_dir
        self._instance = instance
        self._rootfs: Rootfs | None = None
        self.last_limits: list[str] = []

    @property
    def pid_dir(self) -> Path:
        return self._data_dir / "bwrap" / "pids"

    def _rootfs_for(self, image: str) -> Rootfs:
        rootfs = read_rootfs(self._data_dir)
        if rootfs is None or not (rootfs.path / "usr").is_dir():
            raise SandboxUnavailable(
                "no root filesystem exported for the bwrap backend under "
                f"{self._data_dir / ROOTFS_DIR}: {FIX}"
            )
        if rootfs.image != image:
            raise SandboxUnavailable(
                f"the exported root filesystem is of image {rootfs.image!r}, not {image!r}: {FIX}"
            )
        return rootfs

    async def check(self, image: str) -> None:
        if shutil.which("bwrap") is None:
            raise SandboxUnavailable(
                "bubblewrap is not installed: `apt-get install bubblewrap` (or `dnf install bubblewrap`)"
            )
        rootfs = await asyncio.to_thread(self._rootfs_for, image)
        current = await asyncio.to_thread(_docker_image_id, image)
        if current is not None and current != rootfs.image_id:
            raise SandboxUnavailable(
                f"the exported root filesystem is stale (image {image!r} was rebuilt since): {FIX}"
            )
        await asyncio.to_thread(seccomp.filter_bpf)  # compiled once (tens of ms), off the event loop
        # the same launch as `start` (seccomp filter, mounts by fd), the rootfs standing in for the dirs
        with launch(_probe_spec(rootfs.path), rootfs, ["true"]) as (argv, fds):
            done = await asyncio.to_thread(
                subprocess.run,
                argv,
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                env=BWRAP_ENV,
                pass_fds=fds,
            )
        if done.returncode != 0:
            raise SandboxUnavailable(
                "bwrap cannot create a sandbox on this host "
                f"({done.stderr.strip()[-300:] or f'exit {done.returncode}'}). It needs user namespaces "
                "(as a normal user: kernel.unprivileged_userns_clone=1, and on Ubuntu 24.04+ "
                "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap) or root; "
                'or use `[sandbox] backend = "docker"`.'
            )
        self._rootfs = rootfs

    def _rlimits(self, spec: SandboxSpec, cgroup: Cgroup) -> list[tuple[int, int]]:
        mib = 1024 * 1024
        wanted = [
            (resource.RLIMIT_NOFILE, NOFILE),
            (resource.RLIMIT_FSIZE, (spec.limits.file_mb or FSIZE_MB) * mib),
            (resource.RLIMIT_CORE, 0),
        ]
        if "memory" not in cgroup.applied:
            wanted.append((resource.RLIMIT_AS, spec.limits.memory_mb * mib))
        if privileged_launch() and spec.uid != os.getuid():
            # counted per uid over the whole host: leave room for a restart overlapping the old
            # sandbox's last processes (the pids cgroup, where it applies, is the exact limit)
            wanted.append((resource.RLIMIT_NPROC, spec.limits.pids * self._max))
        limits = []
        for which, value in wanted:  # never above the current hard limit (that would fail as non-root)
            hard = resource.getrlimit(which)[1]
            limits.append((which, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        return limits

    async def start(self, spec: SandboxSpec, command: list[str] | None = None) -> BwrapSandbox:
        """Start the agent (or `command`, for probes) in a new sandbox for `spec`."""
        rootfs = self._rootfs
        if rootfs is None or rootfs.image != spec.image or not rootfs.path.is_dir():
            rootfs = self._rootfs = self._rootfs_for(spec.image)
        instance = self._instance or spec.labels.get("clawgate.instance", "default")
        sandbox_id = f"bwrap-{spec.folder}-{secrets.token_hex(4)}"
        cgroup = await asyncio.to_thread(create_cgroup, instance, sandbox_id, spec)
        rlimits = self._rlimits(spec, cgroup)
        self.last_limits = cgroup.applied + [f"rlimit:{resource_name(w)}" for w, _ in rlimits]
        procs = cgroup.procs_files
        try:
            # opened now, mounted by fd: the sources are exactly what was validated (`bind_fds`)
            with launch(spec, rootfs, command) as (argv, fds):
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    env=BWRAP_ENV,
                    pass_fds=fds,
                    preexec_fn=lambda: _preexec(procs, rlimits),
                )
        except SandboxUnavailable:
            await asyncio.to_thread(cgroup.remove)
            raise
        except (OSError, subprocess.SubprocessError) as exc:
            await asyncio.to_thread(cgroup.remove)
            raise SandboxUnavailable(f"bwrap could not start the sandbox: {exc}") from None
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        pidfile = self.pid_dir / f"{sandbox_id}.pid"
        pidfile.write_text(f"{proc.pid} {_start_time(proc.pid) or '-'} {instance}\n")
        log.info(
            "started bwrap sandbox %s for group %s (limits: %s)", sandbox_id, spec.folder, self.last_limits
        )
        return BwrapSandbox(spec.folder, sandbox_id, proc, cgroup, pidfile)

    async def remove_orphans(self, instance: str) -> int:
        """Kill sandboxes a previous run of this gateway left behind (pidfiles, then cgroups)."""
        return await asyncio.to_thread(self._remove_orphans, instance)

    def _remove_orphans(self, instance: str) -> int:
        count = 0
        with contextlib.suppress(FileNotFoundError):
            for pidfile in self.pid_dir.glob("*.pid"):
                try:
                    pid_s, started, owner = pidfile.read_text().split()
                except (OSError, ValueError):
                    pidfile.unlink(missing_ok=True)
                    continue
                if owner != instance:
                    continue
                count += 1
                pid = int(pid_s)
                if started != "-" and _start_time(pid) == started:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                pidfile.unlink(missing_ok=True)
        for cgroup in leftover_cgroups(instance):
            cgroup.kill_all()
            cgroup.remove()
            for leaf in cgroup.dirs:
                with contextlib.suppress(OSError):
                    leaf.parent.rmdir()  # the instance's dir, once empty
        return count

    async def close(self) -> None:
        return None


def resource_name(which: int) -> str:
    for name in ("RLIMIT_NOFILE", "RLIMIT_FSIZE", "RLIMIT_CORE", "RLIMIT_AS", "RLIMIT_NPROC"):
        if getattr(resource, name) == which:
            return name[7:].lower()
    return str(which)


def _probe_spec(rootfs: Path) -> SandboxSpec:
    """A throwaway spec for `check`'s trivial `true` run; the rootfs stands in for every mounted dir."""
    from groups.sandbox.base import Limits

    uid = 10_000 if os.getuid() == 0 else os.getuid()
    gid = 10_000 if os.getuid() == 0 else os.getgid()
    return SandboxSpec(
        folder="probe",
        is_main=False,
        image="",
        group_dir=rootfs,
        global_dir=rootfs,
        run_dir=rootfs,
        uid=uid,
        gid=gid,
        limits=Limits(memory_mb=64, cpus=1, pids=16, tmpfs_mb=1),
    )
