"""The gateway process: wires store, router, queue, sandboxes, vault and channels together.

Start-up checks everything the agent's isolation depends on (Docker, the image, the
vault) before a single message is accepted, and says what is missing and how to fix
it. Shutdown stops intake first, lets running turns finish within a grace period,
then stops containers and the vault.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from pathlib import Path

from channels.base import Channel
from channels.console import ConsoleChannel
from gateway.agent_services import AgentServices
from gateway.config import Config
from gateway.models import Group, InboundMessage
from gateway.outbox import Outbox
from gateway.queue import GroupQueue
from gateway.registry import GroupRegistry
from gateway.router import Router
from gateway.runs import RunExecutor
from gateway.sandboxes import SandboxPool
from gateway.store import Store
from groups.sandbox.base import SandboxUnavailable
from groups.sandbox.docker import DockerBackend
from proxy.process import VaultProcess, VaultUnavailable

log = logging.getLogger(__name__)

DATABASE = "clawgate.db"


class StartupError(Exception):
    """Something the gateway needs is missing; the message says what and how to fix it."""


def instance_id(data_dir: Path) -> str:
    """Labels this gateway's containers, so two installs on one host never remove each other's."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


class Gateway:
    def __init__(self, config: Config, config_dir: Path, data_dir: Path) -> None:
        self.config = config
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.instance = instance_id(data_dir)
        self.channels: list[Channel] = []
        self.input_closed = asyncio.Event()
        self._started = False

    async def start(self, channels: list[Channel] | None = None) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        self.store = await Store.open(self.data_dir / DATABASE)
        self.backend = DockerBackend(self.config.sandbox.max_containers)
        self.vault = VaultProcess(
            self.config_dir, self.data_dir / "vault", list(self.config.vault.allow_private_upstreams)
        )
        try:
            await self.backend.check(self.config.sandbox.image)
            removed = await self.backend.remove_orphans(self.instance)
            if removed:
                log.warning("removed %d container(s) left over from a previous run", removed)
            await self.vault.start()
        except (SandboxUnavailable, VaultUnavailable) as exc:
            await self._close_partial()
            raise StartupError(str(exc)) from None
        recovered = await self.store.recover_interrupted()
        if recovered:
            log.warning("%d message(s) of interrupted runs will be answered again", recovered)

        self.registry = GroupRegistry(self.store)
        await self.registry.load()
        self.channels = channels if channels is not None else self._default_channels()
        await self._ensure_main_group()

        self.outbox = Outbox(self.store, self.channels)
        self.queue = GroupQueue(self.config.sandbox.max_containers, self._process, self._evict)
        self.services = AgentServices(self.config, self.store, self.registry)
        self.pool = SandboxPool(
            self.config,
            self.backend,
            self.vault,
            self.data_dir,
            self.instance,
            services=self.services,
            on_gone=self._on_sandbox_gone,
            on_idle=self._on_idle,
        )
        self.executor = RunExecutor(self.config, self.store, self.pool, self.outbox, self.registry.by_folder)
        self.services.bind_executor(self.executor)
        self.router = Router(self.store, self.registry.for_chat, lambda g: self.queue.wake(g.folder))
        for channel in self.channels:
            await channel.connect(self.ingest)
        self._started = True
        await self.outbox.flush()
        for chat_id in await self.store.chats_with_pending():
            group = self.registry.for_chat(chat_id)
            if group is not None:
                self.queue.wake(group.folder)

    def _default_channels(self) -> list[Channel]:
        channels: list[Channel] = []
        if self.config.console.enabled:
            channels.append(
                ConsoleChannel(
                    self.config.console.main_chat, self.config.assistant_name, on_eof=self.input_closed.set
                )
            )
        return channels

    async def _ensure_main_group(self) -> None:
        if self.registry.main is None and self.config.console.enabled:
            await self.registry.register(
                Group(
                    folder="main",
                    chat_id=self.config.console.main_chat,
                    name="main",
                    trigger=self.config.default_trigger,
                    requires_trigger=False,
                    is_main=True,
                )
            )

    async def ingest(self, message: InboundMessage) -> str:
        return await self.router.ingest(message)

    # -- callbacks between the parts ------------------------------------------------------

    async def _process(self, folder: str) -> None:
        await self.executor.process(folder)

    async def _evict(self, folder: str) -> None:
        await self.pool.stop(folder)

    def _on_sandbox_gone(self, folder: str) -> None:
        self.queue.released(folder)

    def _on_idle(self, folder: str) -> None:
        asyncio.create_task(self.queue.expire(folder), name=f"expire:{folder}")

    # -- shutdown -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until every accepted message has been answered and every reply sent."""
        await self.queue.wait_idle()
        await self.outbox.flush()

    async def stop(self, grace_s: float = 30) -> None:
        if not self._started:
            return
        self._started = False
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.disconnect()
        try:
            await asyncio.wait_for(self.queue.close(), grace_s)
        except TimeoutError:
            log.warning("running turns did not finish within %ss; stopping them", grace_s)
        await self.pool.stop_all()
        await self._close_partial()

    async def _close_partial(self) -> None:
        with contextlib.suppress(Exception):
            await self.vault.stop()
        with contextlib.suppress(Exception):
            await self.backend.close()
        await self.store.close()
