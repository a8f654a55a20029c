"""The Docker sandbox backend (docker SDK; blocking calls run in threads).

Every container is locked down the same way regardless of group: no network at all
(`network_mode="none"`), read-only root with a small tmpfs `/tmp`, every capability
dropped, `no-new-privileges`, a non-root uid, memory/CPU/pids limits, a low `nofile`
limit and an init process (`--init`) as pid 1, which reaps the zombies a hostile agent
leaves behind and forwards signals. Its only ways out are the two unix sockets in
`/run/clawgate` (mounted read-only: connecting to a socket needs no write access to the
mount).

With `[sandbox] runtime = "runsc"` the same container runs under gVisor: the agent's
system calls are served by a user-space kernel (the Sentry, itself seccomp-confined
on the host) instead of the host kernel, so a kernel bug reachable from a hostile
group no longer means the host. Every option above applies unchanged; runsc must
be registered with the engine and allowed to connect to host unix sockets (see
`groups.sandbox.runsc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
from docker.errors import DockerException, ImageNotFound, InvalidVersion, NotFound
from docker.models.containers import Container
from docker.types import Mount, Ulimit

from groups.folders import INBOX_IN_SANDBOX
from groups.sandbox.base import SandboxSpec, SandboxUnavailable
from groups.sandbox.memory import docker_usage
from groups.sandbox.runsc import runtime_problem

log = logging.getLogger(__name__)

LABEL_GROUP = "clawgate.group"
LABEL_INSTANCE = "clawgate.instance"
MAX_LOG_BYTES = 64 * 1024
RUNTIMES = ("runc", "runsc")
# Under gVisor with the ptrace platform every guest task costs the host several tasks (Sentry
# threads locked to ptrace'd stubs: ~8 per guest task measured); the host pids cgroup only
# backstops the Sentry itself, the group's own processes are limited inside gVisor (see below).
RUNSC_HOST_PIDS_PER_TASK = 16
RUNSC_HOST_PIDS_BASE = 512
# Open files per process in the sandbox (soft, hard); the engine's default is often 1048576.
NOFILE = (1024, 4096)


def _known(runtime: str) -> None:
    # config validation rejects other names; never fall back to a weaker runtime
    if runtime not in RUNTIMES:
        raise SandboxUnavailable(f"unknown container runtime {runtime!r}: use one of {', '.join(RUNTIMES)}")


def process_limits(runtime: str, pids: int) -> dict[str, Any]:
    """How the `[sandbox] pids_limit` is enforced for `runtime`.

    runc: the container's host pids cgroup, counted over every process in it.
    runsc: the host cgroup would count the Sentry's threads and ptrace stubs too, and a
    Sentry that cannot create a thread panics, killing the whole sandbox on the first
    fork bomb. So the group's processes are limited by RLIMIT_NPROC, which gVisor counts
    per sandbox (not per host uid, unlike runc, where every group shares the uid) and
    answers with EAGAIN like the cgroup does; the host cgroup stays as a backstop.
    """
    if runtime == "runc":
        return {"pids_limit": pids}
    return {
        "pids_limit": pids * RUNSC_HOST_PIDS_PER_TASK + RUNSC_HOST_PIDS_BASE,
        "ulimits": [Ulimit(name="nproc", soft=pids, hard=pids)],
    }


def container_kwargs(spec: SandboxSpec, runtime: str = "runc") -> dict[str, Any]:
    """The full `containers.run` arguments; kept pure so tests can read the policy directly.

    "runc" leaves the engine's default runtime in place (today's behaviour, and whatever
    an operator set as dockerd's default); any other name is asked for explicitly.
    """
    _known(runtime)
    limits = spec.limits
    processes = process_limits(runtime, limits.pids)
    process_ulimits = processes.pop("ulimits", [])
    chosen = {} if runtime == "runc" else {"runtime": runtime}
    kwargs: dict[str, Any] = {
        **chosen,
        "image": spec.image,
        "detach": True,
        "name": f"clawgate-{spec.folder}-{secrets.token_hex(4)}",
        "user": f"{spec.uid}:{spec.gid}",
        "network_mode": "none",
        "read_only": True,
        "tmpfs": {"/tmp": f"rw,nosuid,nodev,size={limits.tmpfs_mb}m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "mem_limit": f"{limits.memory_mb}m",
        "memswap_limit": f"{limits.memory_mb}m",
        "nano_cpus": int(limits.cpus * 1_000_000_000),
        **processes,
        "init": True,
        "ulimits": [Ulimit(name="nofile", soft=NOFILE[0], hard=NOFILE[1]), *process_ulimits],
        "working_dir": "/workspace/group",
        "environment": dict(spec.env),
        "labels": {**spec.labels, LABEL_GROUP: spec.folder},
        "mounts": [
            Mount("/workspace/group", str(spec.group_dir), type="bind", read_only=False),
            Mount("/workspace/global", str(spec.global_dir), type="bind", read_only=not spec.is_main),
            Mount("/run/clawgate", str(spec.run_dir), type="bind", read_only=True),
            *(
                [Mount(INBOX_IN_SANDBOX, str(spec.inbox_dir), type="bind", read_only=True)]
                if spec.inbox_dir is not None
                else []
            ),
            *(
                Mount(m.container_path, str(m.host_path), type="bind", read_only=m.read_only)
                for m in spec.extra_mounts
            ),
        ],
    }
    if limits.file_mb is not None:  # the kernel stops one runaway file at the quota at once
        size = limits.file_mb * 1024 * 1024
        kwargs["ulimits"] = [*kwargs.get("ulimits", []), Ulimit(name="fsize", soft=size, hard=size)]
    return kwargs


class DockerSandbox:
    """A running container; `exited` resolves when it stops for any reason."""

    def __init__(self, folder: str, container: Container, waiter: ThreadPoolExecutor) -> None:
        self.folder = folder
        assert container.id is not None  # a container the engine created has an id
        self.id: str = container.id
        self._container = container
        loop = asyncio.get_running_loop()
        self.exited: asyncio.Future[int] = asyncio.ensure_future(loop.run_in_executor(waiter, self._wait))

    def _wait(self) -> int:
        try:
            return int(self._container.wait().get("StatusCode", -1))
        except (DockerException, OSError, ValueError):
            return -1

    async def wait_exit(self) -> int:
        return await asyncio.shield(self.exited)

    async def stop(self) -> None:
        """Kill and remove at once: the agent keeps no state that a SIGTERM would save."""
        with contextlib.suppress(NotFound):
            await asyncio.to_thread(self._container.remove, force=True)

    async def logs_tail(self, max_bytes: int = 4096) -> str:
        try:
            raw: bytes = await asyncio.to_thread(self._container.logs, tail=200)
        except DockerException:
            return ""
        return raw[-min(max_bytes, MAX_LOG_BYTES) :].decode("utf-8", "replace")

    async def memory_bytes(self) -> int | None:
        """Memory in use now (one stats sample, not a stream); None if the engine gives none.

        The caller bounds the wait: an engine that hangs leaves this thread until docker-py's
        own request timeout, so the caller must not start a second read while one is pending.
        """
        return await asyncio.to_thread(self._memory_bytes)

    def _memory_bytes(self) -> int | None:
        try:
            try:
                stats = self._container.stats(stream=False, one_shot=True)
            except InvalidVersion:  # engine API < 1.41: the two-sample read (about a second)
                stats = self._container.stats(stream=False)
        except (DockerException, OSError, ValueError):
            return None
        return docker_usage(stats) if isinstance(stats, dict) else None


class DockerBackend:
    def __init__(self, max_containers: int, runtime: str = "runc") -> None:
        _known(runtime)
        self._max = max_containers
        self.runtime = runtime
        self._client: Any = None
        self._waiter = ThreadPoolExecutor(max_workers=max_containers + 4, thread_name_prefix="docker-wait")

    def _connect(self) -> Any:
        if self._client is None:
            try:
                # Each live container parks one connection in `wait()`; size the pool for that.
                self._client = docker.from_env(max_pool_size=2 * self._max + 10)
                self._client.ping()
            except DockerException as exc:
                self._client = None
                raise SandboxUnavailable(
                    "cannot reach the Docker engine "
                    f"({str(exc).splitlines()[0][:160]}). Start it (e.g. `sudo systemctl start docker` or "
                    "`dockerd &`) and make sure this user may use /var/run/docker.sock."
                ) from None
        return self._client

    async def check(self, image: str) -> None:
        client = await asyncio.to_thread(self._connect)
        problem = await asyncio.to_thread(runtime_problem, client, self.runtime)
        if problem is not None:
            raise SandboxUnavailable(problem)
        try:
            await asyncio.to_thread(client.images.get, image)
        except ImageNotFound:
            raise SandboxUnavailable(
                f"the sandbox image {image!r} does not exist. Build it with `clawgate image build` "
                "(or `make image`)."
            ) from None
        except DockerException as exc:
            raise SandboxUnavailable(f"Docker error while looking up {image!r}: {exc}") from None

    async def start(self, spec: SandboxSpec) -> DockerSandbox:
        client = await asyncio.to_thread(self._connect)
        try:
            container = await asyncio.to_thread(client.containers.run, **container_kwargs(spec, self.runtime))
        except ImageNotFound:
            raise SandboxUnavailable(
                f"sandbox image {spec.image!r} is missing: run `clawgate image build` "
                "(`--runtime claude` for a group on the claude runtime)"
            ) from None
        except DockerException as exc:
            self._client = None  # reconnect next time; the engine may have restarted
            raise SandboxUnavailable(f"Docker could not start the sandbox: {exc}") from None
        log.info("started container %s for group %s", container.short_id, spec.folder)
        return DockerSandbox(spec.folder, container, self._waiter)

    async def remove_orphans(self, instance: str) -> int:
        """Remove containers a previous run of this gateway (same data dir) left behind."""
        client = await asyncio.to_thread(self._connect)
        found = await asyncio.to_thread(
            client.containers.list, all=True, filters={"label": f"{LABEL_INSTANCE}={instance}"}
        )
        for container in found:
            with contextlib.suppress(NotFound):
                await asyncio.to_thread(container.remove, force=True)
        return len(found)

    async def close(self) -> None:
        self._waiter.shutdown(wait=False, cancel_futures=True)
        if self._client is not None:
            await asyncio.to_thread(self._client.close)
