"""Live sandboxes, one per group: start on demand, keep warm, stop when idle.

Starting a sandbox means: the group's folders exist, its IPC socket listens, its
vault socket is open in the vault process, the vault's public CA certificate is in
the group's socket dir, and only then the container starts. If any step fails the
container does not start (fail closed, invariant 8).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.config import AGENT_RUNTIMES, AgentRuntime, Config
from core.models import Group
from core.paths import socket_path_problem
from gateway import fdlimit
from gateway.disk import DiskGuard
from gateway.ipc import GroupIpc
from gateway.ipc_limits import IpcLimits
from gateway.ipc_protocol import Caller, IpcServices
from groups import folders
from groups.mounts import ALLOWLIST_FILE, log_plan, plan_mounts
from groups.sandbox.base import (
    ExtraMount,
    Limits,
    RunningSandbox,
    SandboxBackend,
    SandboxSpec,
    SandboxUnavailable,
)
from groups.sandbox.docker import LABEL_INSTANCE
from groups.uids import UidError, group_identity
from proxy.process import VaultProcess
from proxy.rules import model_key_usable
from proxy.secrets import SecretInfo, SecretStore, VaultError

log = logging.getLogger(__name__)

PROXY_PORT = 3128
CA_IN_CONTAINER = "/run/clawgate/ca.pem"
AGENT_CONNECT_TIMEOUT_S = 60
IPC_SOCKET, VAULT_SOCKET = "ipc.sock", "vault.sock"  # in the group's run dir, /run/clawgate inside
GROUP_SOCKETS = (IPC_SOCKET, VAULT_SOCKET)


def agent_environment(
    config: Config, group: Group, secrets: Sequence[SecretInfo] | None = None
) -> dict[str, str]:
    """The container's environment. Holds placeholders only; real keys live in the vault.

    With `secrets` (metadata only), the model-key placeholder is set only if the group may
    use a secret for the model host; None keeps the placeholder unconditionally.
    """
    proxy = f"http://127.0.0.1:{PROXY_PORT}"
    key_var = "ANTHROPIC_API_KEY" if config.model.provider == "anthropic" else "OPENAI_API_KEY"
    env = {
        "CLAWGATE_IPC_SOCKET": "/run/clawgate/ipc.sock",
        "CLAWGATE_VAULT_SOCKET": "/run/clawgate/vault.sock",
        "CLAWGATE_PROXY_PORT": str(PROXY_PORT),
        "CLAWGATE_MODEL_PROVIDER": config.model.provider,
        "CLAWGATE_MODEL": config.model.name,
        "CLAWGATE_MODEL_BASE_URL": config.model.base_url,
        "CLAWGATE_MAX_TOKENS": str(config.model.max_tokens),
        "CLAWGATE_MODEL_TIMEOUT": str(config.model.timeout_s),
        "CLAWGATE_MAX_MODEL_CALLS": str(config.agent.max_model_calls),
        "CLAWGATE_HISTORY_BUDGET_TOKENS": str(config.agent.history_budget_tokens),
        "CLAWGATE_ASSISTANT_NAME": config.assistant_name,
        "CLAWGATE_GROUP": group.folder,
        "CLAWGATE_IS_MAIN": "1" if group.is_main else "0",
        "HOME": "/workspace/group",
        "NO_PROXY": "",
        "no_proxy": "",
    }
    if secrets is None or model_key_usable(secrets, group.folder, config.model.base_url):
        env[key_var] = "placeholder"
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        env[name] = proxy
    for name in (
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "NODE_EXTRA_CA_CERTS",
        "GIT_SSL_CAINFO",
        "PIP_CERT",
    ):
        env[name] = CA_IN_CONTAINER
    return env


def group_runtime(config: Config, group: Group) -> AgentRuntime:
    """The agent runtime `group` runs: its own setting, else `[agent] runtime`."""
    if group.runtime in AGENT_RUNTIMES:
        return group.runtime
    return config.agent.runtime


def sandbox_spec(
    config: Config,
    group: Group,
    dirs: folders.GroupDirs,
    identity: tuple[int, int],
    instance: str,
    extra_mounts: tuple[ExtraMount, ...] = (),
    limits: Limits | None = None,
    secrets: Sequence[SecretInfo] | None = None,
) -> SandboxSpec:
    """Everything a backend needs for one group's sandbox; the single place a spec is built."""
    sandbox = config.sandbox
    return SandboxSpec(
        folder=group.folder,
        is_main=group.is_main,
        image=config.runtime_image(group_runtime(config, group)),
        group_dir=dirs.group,
        global_dir=dirs.global_,
        run_dir=dirs.run,
        uid=identity[0],
        gid=identity[1],
        limits=limits
        or Limits(
            sandbox.memory_mb, sandbox.cpus, sandbox.pids_limit, sandbox.tmpfs_mb, sandbox.group_quota_mb
        ),
        env=agent_environment(config, group, secrets),
        labels={LABEL_INSTANCE: instance},
        extra_mounts=extra_mounts,
        inbox_dir=dirs.inbox,
    )


@dataclass
class LiveSandbox:
    group: Group
    sandbox: RunningSandbox
    ipc: GroupIpc
    idle_timer: asyncio.TimerHandle | None = None
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)
    disk_watch: asyncio.Task[None] | None = field(default=None, repr=False)
    started_at: float = field(default_factory=time.time)  # the dashboard shows the uptime


class SandboxPool:
    def __init__(
        self,
        config: Config,
        backend: SandboxBackend,
        vault: VaultProcess,
        config_dir: Path,
        data_dir: Path,
        instance: str,
        services: IpcServices,
        on_gone: Callable[[str], None],
        on_idle: Callable[[str], None],
        disk: DiskGuard | None = None,
    ) -> None:
        self._config = config
        self._disk = disk
        self._backend = backend
        self._vault = vault
        self._config_dir = config_dir
        self._data_dir = data_dir
        self._instance = instance
        self._services = services
        self._on_gone = on_gone
        self._on_idle = on_idle
        self._live: dict[str, LiveSandbox] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def live(self) -> dict[str, LiveSandbox]:
        return dict(self._live)

    def _secret_metadata(self) -> list[SecretInfo]:
        """Which secrets exist and who may use them (never values); [] if unreadable."""
        try:
            return SecretStore(self._config_dir).list()
        except VaultError as e:
            log.warning("cannot read secret metadata (%s); no key placeholders are set", e)
            return []

    def _lock(self, folder: str) -> asyncio.Lock:
        return self._locks.setdefault(folder, asyncio.Lock())

    async def ensure(self, group: Group) -> LiveSandbox:
        """The group's running sandbox, started if needed; cancels a pending idle stop."""
        async with self._lock(group.folder):
            live = self._live.get(group.folder)
            if live is not None and not live.sandbox.exited.done():
                if live.idle_timer is not None:
                    live.idle_timer.cancel()
                    live.idle_timer = None
                return live
            return await self._start(group)

    def _out_of_descriptors(self) -> SandboxUnavailable:
        holders = ", ".join(f"{f}={live.ipc.connections}" for f, live in sorted(self._live.items()))
        message = fdlimit.exhausted_message(f"IPC connections per group: {holders}" if holders else "")
        log.error("%s", message)
        return SandboxUnavailable(message)

    async def _start(self, group: Group) -> LiveSandbox:
        # Out of descriptors, the vault's control socket cannot be reached either: say which it is.
        if fdlimit.exhausted():
            raise self._out_of_descriptors()
        if not await self._vault.healthy():
            if fdlimit.exhausted():
                raise self._out_of_descriptors()
            raise SandboxUnavailable("the credential vault is not running; refusing to start a sandbox")
        dirs = folders.group_dirs(self._data_dir, group.folder)
        for name in GROUP_SOCKETS:  # a folder registered after start-up's check (gateway.preflight)
            problem = socket_path_problem(dirs.run / name)
            if problem is not None:
                raise SandboxUnavailable(f"{problem}; use a shorter data dir or group folder name")
        try:  # each group its own uid (groups.uids): nothing keyed by uid is shared between groups
            identity = await asyncio.to_thread(
                group_identity, self._data_dir, group.folder, self._config.sandbox.run_as_uid
            )
        except UidError as exc:
            raise SandboxUnavailable(str(exc)) from None
        owner = identity if os.getuid() == 0 else None
        await asyncio.to_thread(folders.prepare, dirs, owner, is_main=group.is_main)
        ipc = GroupIpc(
            Caller(group.folder, group.is_main, group.chat_id),
            dirs.run / IPC_SOCKET,
            self._services,
            IpcLimits.from_config(self._config),
        )
        try:
            await ipc.start()
        except OSError as exc:
            if fdlimit.exhausted():
                raise self._out_of_descriptors() from None
            raise SandboxUnavailable(f"cannot open the group's IPC socket: {exc}") from None
        try:
            await self._vault.open_group(group.folder, str(dirs.run / VAULT_SOCKET))
            await asyncio.to_thread(shutil.copyfile, self._vault.ca_cert_path, dirs.run / "ca.pem")
            (dirs.run / "ca.pem").chmod(0o644)
            plan = await asyncio.to_thread(  # the allowlist is re-read on every start
                plan_mounts,
                group,
                self._config_dir / ALLOWLIST_FILE,
                self._config_dir,
                self._data_dir,
                self._config.mounts.project_root,
            )
            log_plan(plan, group.folder)
            spec = sandbox_spec(
                self._config,
                group,
                dirs,
                identity,
                self._instance,
                tuple(plan.granted),
                secrets=self._secret_metadata(),
            )
            sandbox = await self._backend.start(spec)
        except BaseException:
            await ipc.close()
            raise
        live = LiveSandbox(group, sandbox, ipc)
        self._live[group.folder] = live
        live.watcher = asyncio.create_task(self._watch(live), name=f"watch:{group.folder}")
        if self._disk is not None:  # quota and free-space floor, measured while it lives
            live.disk_watch = asyncio.create_task(
                self._disk.watch(group, lambda reason: self._stop_over_limit(live, reason)),
                name=f"disk:{group.folder}",
            )
        connected = asyncio.ensure_future(ipc.connected.wait())
        waiting: set[asyncio.Future[Any]] = {connected, sandbox.exited}
        done, _ = await asyncio.wait(
            waiting, timeout=AGENT_CONNECT_TIMEOUT_S, return_when=asyncio.FIRST_COMPLETED
        )
        if connected not in done:
            connected.cancel()
            tail = await sandbox.logs_tail()
            await self._stop_locked(group.folder)
            raise SandboxUnavailable(f"the agent in the sandbox did not start: {tail.strip()[-500:]}")
        return live

    async def _watch(self, live: LiveSandbox) -> None:
        """When a container exits on its own, fail its turns and free its slot."""
        code = await live.sandbox.wait_exit()
        # Under the group's lock (as _stop_over_limit): a message arriving while this stop
        # still removes the container must not start a new sandbox whose IPC socket and vault
        # socket the rest of this stop would then close.
        async with self._lock(live.group.folder):
            if self._live.get(live.group.folder) is live:
                log.warning("sandbox of %s exited with code %s", live.group.folder, code)
                live.ipc.abort_all(f"the sandbox exited (code {code})")
                await self._stop_locked(live.group.folder)

    async def _stop_over_limit(self, live: LiveSandbox, reason: str) -> None:
        """The disk watch tripped: its turn fails with the reason, then the sandbox goes.

        Under the group's lock, so a new start waits until this one is fully gone (its IPC
        socket removed) instead of racing it for the socket path."""
        async with self._lock(live.group.folder):
            if self._live.get(live.group.folder) is live:
                live.ipc.abort_all(reason)
                await self._stop_locked(live.group.folder)

    def lane_finished(self, folder: str) -> None:
        """Keep a live sandbox warm until the idle timeout; free the slot of one that never started."""
        live = self._live.get(folder)
        if live is None:
            self._on_gone(folder)
            return
        if live.idle_timer is not None:
            live.idle_timer.cancel()
        live.idle_timer = asyncio.get_running_loop().call_later(
            self._config.sandbox.idle_timeout_s, self._on_idle, folder
        )

    async def stop(self, folder: str) -> None:
        """Stop and remove the group's container and close its sockets; idempotent.

        Under the group's lock: a message arriving meanwhile waits for the stop to finish
        instead of starting a sandbox whose IPC and vault sockets this stop would then close.
        """
        async with self._lock(folder):
            await self._stop_locked(folder)

    async def _stop_locked(self, folder: str) -> None:
        """`stop` for a caller that already holds the group's lock."""
        live = self._live.pop(folder, None)
        if live is None:
            return
        if live.idle_timer is not None:
            live.idle_timer.cancel()
        live.ipc.abort_all("the sandbox was stopped")
        await live.sandbox.stop()
        await live.ipc.close()
        with contextlib.suppress(Exception):
            await self._vault.close_group(folder)
        for task in (live.watcher, live.disk_watch):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        log.info("stopped the sandbox of %s", folder)
        self._on_gone(folder)

    async def stop_all(self) -> None:
        await asyncio.gather(*(self.stop(folder) for folder in list(self._live)), return_exceptions=True)
