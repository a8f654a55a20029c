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
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from channels.base import Channel, ChannelUnavailable
from core.config import Config
from core.models import Group, InboundMessage
from core.paths import DATABASE
from core.pricing import PriceTable
from core.private_files import PrivateFileError
from core.redaction import one_line, scrub
from gateway import fdlimit, preflight
from gateway import reload as reload_mod
from gateway.agent_services import AgentServices
from gateway.approvals import Approvals
from gateway.budget_state import BudgetGuard
from gateway.channel_setup import GroupInboxes, default_channels
from gateway.commands import AdminCommands, Command
from gateway.control import SOCKET_NAME as CONTROL_SOCKET
from gateway.control import ControlServer
from gateway.control_requests import ControlRequests
from gateway.disk import DiskGuard
from gateway.endpoints import EndpointError, Endpoints
from gateway.instance_lock import AlreadyRunning, DataDirLock
from gateway.logs import FILE_ONLY
from gateway.outbox import Outbox
from gateway.queue import GroupQueue
from gateway.registry import GroupRegistry
from gateway.retention import Retention
from gateway.router import Router
from gateway.running import RunningGateway
from gateway.runs import RunExecutor
from gateway.sandboxes import SandboxPool
from gateway.scheduler import ChatLauncher, Scheduler
from gateway.senders import SenderGate
from gateway.store import Store, StoreUnusable
from gateway.wallet.keystore import KeyStore
from gateway.wallet.rpc import NearRpc
from gateway.wallet.service import WalletService
from groups.sandbox.base import SandboxUnavailable
from groups.sandbox.select import make_backend
from proxy.policy import write_policy_config
from proxy.process import VaultProcess, VaultUnavailable
from proxy.secrets import SecretStore, VaultError

log = logging.getLogger(__name__)


class StartupError(Exception):
    """Something the gateway needs is missing; the message says what and how to fix it."""


def instance_id(data_dir: Path) -> str:
    """Labels this gateway's containers, so two installs on one host never remove each other's."""
    return hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:12]


class Gateway:
    commands: AdminCommands  # made by start(); the control socket's `status` asks it

    def __init__(
        self,
        config: Config,
        config_dir: Path,
        data_dir: Path,
        adjust: Callable[[Config], Config] | None = None,
    ) -> None:
        self.config = config
        self._adjust = adjust or (lambda c: c)  # what `run` did to the file (console off as a daemon)
        self.config_dir = config_dir
        self.data_dir = data_dir
        self.instance = instance_id(data_dir)
        self.channels: list[Channel] = []
        self.input_closed = asyncio.Event()
        self.started_at = time.time()
        self._started = False
        self._stopping = False
        self.endpoints = Endpoints()  # /metrics and the dashboard, when enabled (gateway.endpoints)
        # The control socket's requests (gateway.control_requests); `status` needs start() done.
        self._control = ControlRequests(self, lambda: self.commands.status_text())
        self.lock = DataDirLock(data_dir)
        self.warnings: list[str] = []  # preflight warnings, printed by `clawgate run` (gateway/cli.py)

    async def start(self, channels: list[Channel] | None = None) -> None:
        """Start everything, or fail with a StartupError and leave nothing running.

        Whatever goes wrong — a refused bot token, an unreachable Bot API, Docker gone, a
        vault that will not come up, a bug — what was opened so far is closed in reverse
        order (connected channels, control socket, vault, backend, store, the data-dir
        lock): no orphan vault, no task or database thread keeping the process alive, and
        the next start is not refused as "already running". The error becomes one line
        with its type and secrets redacted by value (`core.redaction`); the traceback,
        redacted too, goes only to the log file.
        """
        served = None if channels is None else lambda chat: any(c.owns_chat(chat) for c in channels)
        static = preflight.channel_findings(self.config, served)
        static += preflight.private_upstream_findings(self.config)
        static += preflight.approval_policy_findings(self.config)
        folders = preflight.registered_folders(self.data_dir) or ["main"]
        static += preflight.socket_path_findings(self.data_dir, folders)
        self._preflight(static)  # before any side effect
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.data_dir.chmod(0o700)
            self.lock.acquire()  # before anything that touches containers, sockets, the vault or the DB
        except AlreadyRunning as exc:
            raise StartupError(str(exc)) from None
        except OSError as exc:
            raise StartupError(f"cannot use the data dir {self.data_dir}: {one_line(exc)}") from None
        async with contextlib.AsyncExitStack() as undo:
            undo.callback(self.release_lock)
            try:
                await self._start(undo, channels)
            except StartupError:
                self._started = False
                raise
            except Exception as exc:
                self._started = False
                log.error("start-up failed", exc_info=True, extra=FILE_ONLY)
                raise StartupError(one_line(exc)) from None
            undo.pop_all()  # running: stop() closes everything from now on

    async def _start(self, undo: contextlib.AsyncExitStack, channels: list[Channel] | None) -> None:
        """The start-up steps; each thing opened registers its closing on `undo` right away."""
        # The per-group caps (gateway.ipc_limits), not a low default soft limit, decide who gets
        # descriptors. Sandboxes get their own low limit (Docker ulimit, bwrap rlimit).
        soft, hard = fdlimit.raise_soft_limit()
        log.info("open-file limit %d (hard %d)", soft, hard)
        try:
            self.store = await Store.open(self.data_dir / DATABASE)
        except StoreUnusable as exc:
            raise StartupError(str(exc)) from None
        undo.push_async_callback(_quietly, self.store.close)
        try:
            self.backend = make_backend(self.config, self.data_dir)
        except SandboxUnavailable as exc:
            raise StartupError(str(exc)) from None
        undo.push_async_callback(_quietly, self.backend.close)
        upstream_ca = self.config.vault.upstream_ca
        self.vault = VaultProcess(
            self.config_dir,
            self.data_dir / "vault",
            list(self.config.vault.allow_private_upstreams),
            upstream_ca=Path(upstream_ca) if upstream_ca else None,
            gateway_socket=self.data_dir / "run" / CONTROL_SOCKET,  # leak notices (proxy/leaks.py)
        )
        write_policy_config(self.config, self.data_dir / "vault")
        try:
            await self.backend.check(self.config.runtime_image(self.config.agent.runtime))
            self._preflight(await asyncio.to_thread(preflight.image_findings, self.config))
            removed = await self.backend.remove_orphans(self.instance)
            if removed:
                log.warning("removed %d container(s) left over from a previous run", removed)
            # Not earlier: a stop before the start would forget the pid file of a stale vault
            # that only the start reaps. From here on, a vault half-way up is stopped too.
            undo.push_async_callback(_quietly, self.vault.stop)
            await self.vault.start()
        except (SandboxUnavailable, VaultUnavailable) as exc:
            raise StartupError(str(exc)) from None
        undo.push_async_callback(_quietly, self.endpoints.close_metrics)
        await self._serve(self.endpoints.start_metrics)  # a taken port is a StartupError
        recovered = await self.store.recover_interrupted()
        if recovered:
            log.warning("%d message(s) of interrupted runs will be answered again", recovered)

        self.registry = GroupRegistry(self.store)
        await self.registry.load()
        # Budgets reach the vault before any sandbox can exist (gateway/budget_state.py), and
        # again whenever the supervisor restarts it.
        self.budget = BudgetGuard(
            self.config.budget,
            lambda: PriceTable.from_config(self.config.prices).to_json(),
            self.store,
            self.vault,
            lambda: [g.folder for g in self.registry.all()],
            self.notify_main,
        )
        await self.budget.push()
        self.vault.on_restart = self._vault_restarted
        try:
            self.channels = channels if channels is not None else self._default_channels()
        except (ValueError, PrivateFileError) as exc:  # e.g. an unreadable webhook secret file
            raise StartupError(str(exc)) from None
        await self._ensure_main_group()
        try:  # the groups that will call the model are known now
            folders = [g.folder for g in self.registry.all()]
            main = self.registry.main
            secrets = SecretStore(self.config_dir).list()
            self._preflight(
                preflight.model_key_findings(self.config, secrets, folders, main.folder if main else None)
                + preflight.budget_findings(self.config, folders)
            )
        except (StartupError, VaultError) as exc:  # what was opened is closed by start()
            raise StartupError(getattr(exc, "message", str(exc))) from None

        self.outbox = Outbox(self.store, self.channels, self.config.retry, self._main_chat_id)
        requeued, unknown = await self.outbox.recover()
        if requeued:
            log.info("%d reply(ies) had not left the gateway at the stop; sending them now", requeued)
        if unknown:
            log.warning("%d reply(ies) may have been sent at the stop; dead-lettered, never resent", unknown)
        self.queue = GroupQueue(self.config.sandbox.max_containers, self._process, self._evict)
        self.disk = DiskGuard(self.config.sandbox, self.data_dir, self.notify_main)
        self.services = AgentServices(self.config, self.store, self.registry)
        self.pool = SandboxPool(
            self.config,
            self.backend,
            self.vault,
            self.config_dir,
            self.data_dir,
            self.instance,
            services=self.services,
            on_gone=self._on_sandbox_gone,
            on_idle=self._on_idle,
            disk=self.disk,
        )
        self.executor = RunExecutor(
            self.config,
            self.store,
            self.pool,
            self.outbox,
            self.registry.by_folder,
            wake=self.queue.wake,
            notify_main=self.notify_main,
            disk=self.disk,
            budget=self.budget,
        )
        self.services.bind_executor(self.executor)
        self.scheduler = Scheduler(
            self.store, ChatLauncher(self.store, self.registry.by_folder, self._channel_name, self.queue.wake)
        )
        self.services.tasks = self.scheduler
        self.executor.finish_observers.append(self.scheduler.run_finished)
        if self.endpoints.metrics is not None:
            self.executor.finish_observers.append(self.endpoints.metrics.observe_finished_run(self))
        self.commands = AdminCommands(self)
        # Approval prompts in the main chat (gateway.approvals); the wallet asks through it.
        self.approvals = Approvals(self.store, self.registry, self.channels, self.config.admin.users)
        self.wallet = self._wallet_service()
        self.services.wallet = self.wallet
        self.senders = SenderGate(self)  # who may trigger each group's assistant (gateway.senders)
        await self.senders.load()
        self.router = Router(
            self.store, self.registry.for_chat, self.queue.wake, self._run_command, self.senders
        )
        self.control = ControlServer(self.data_dir / "run" / CONTROL_SOCKET, self._control)
        undo.push_async_callback(_quietly, self.control.close)
        await self.control.start()
        # The previous run's requests are settled BEFORE any channel delivers an update: a click
        # Telegram held while we were down must find them expired, never approve what nobody runs.
        await self.approvals.recover()
        undo.push_async_callback(_quietly, self.wallet.aclose)
        await self.wallet.start()
        undo.callback(self.outbox.close)
        for channel in self.channels:
            undo.push_async_callback(_quietly, channel.disconnect)  # a half-connected one too
            try:
                await channel.connect(self.ingest, self.approvals.on_button)
            except ChannelUnavailable as exc:
                raise StartupError(f"{channel.name}: {scrub(str(exc))}") from None
            except Exception as exc:
                log.error("%s: connecting failed", channel.name, exc_info=True, extra=FILE_ONLY)
                raise StartupError(f"{channel.name}: cannot connect: {one_line(exc)}") from None
        undo.push_async_callback(_quietly, self.approvals.stop)
        await self.approvals.start()  # now the settled prompts can be edited
        undo.push_async_callback(_quietly, self.senders.stop)
        await self.senders.start()  # held messages: asked about again, or settled
        undo.push_async_callback(_quietly, self.scheduler.stop)
        await self.scheduler.start()
        self.retention = Retention(self.store, self.config)
        self.retention.start()
        undo.push_async_callback(_quietly, self.budget.stop)
        self.budget.start()  # pushes fresh headroom at each day boundary
        undo.push_async_callback(_quietly, self.endpoints.close_dashboard)
        await self._serve(self.endpoints.start_dashboard)  # everything it shows exists now
        self._started = True
        self.started_at = time.time()
        await self.outbox.flush()
        for chat_id in await self.store.chats_with_pending():
            group = self.registry.for_chat(chat_id)
            if group is not None:
                self.queue.wake(group.folder)

    @property
    def running(self) -> bool:
        """Started and not (yet) stopping: what /healthz calls up."""
        return self._started

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def _serve(self, start: Callable[[RunningGateway], Awaitable[None]]) -> None:
        try:
            await start(self)
        except EndpointError as exc:
            raise StartupError(str(exc)) from None

    def _preflight(self, findings: list[preflight.Finding]) -> None:
        """Warnings are logged and kept for `run` to print; the first error stops the start."""
        for finding in findings:
            if finding.level == "warning":
                log.warning("%s", finding.line())
                self.warnings.append(finding.line())
        errors = [f for f in findings if f.level == "error"]
        if errors:
            raise StartupError("; ".join(f.line() for f in errors))

    def _wallet_service(self) -> WalletService:
        """Keys stay in this process (config dir); agents reach them only through `near_*` IPC."""
        settings = self.config.wallet
        rpc = NearRpc(
            settings.effective_rpc_url, timeout_s=settings.rpc_timeout_s, retries=settings.rpc_retries
        )
        return WalletService(
            settings, self.store, KeyStore(self.config_dir), rpc, self.approvals, self.notify_main
        )

    def _default_channels(self) -> list[Channel]:
        return default_channels(
            self.config,
            self.config_dir,
            self.data_dir,
            input_closed=self.input_closed,
            # the disk guard is made after the channels: looked up when an attachment comes
            group_inbox=GroupInboxes(self.registry, lambda folder: self.disk.refusal(folder), self.data_dir),
            on_migrate=self.registry.follow_migration,
        )

    async def _ensure_main_group(self) -> None:
        """The main group lives in `main_chat` (config) or, by default, the console."""
        chat_id = self.config.main_chat or (
            self.config.console.main_chat if self.config.console.enabled else None
        )
        if chat_id is not None:
            await self.registry.ensure_main(chat_id, self.config.default_trigger)

    async def ingest(self, message: InboundMessage) -> str:
        status = await self.router.ingest(message)
        if self.endpoints.dashboard is not None:
            self.endpoints.dashboard.publish(message, status)  # the overview's live feed
        metrics = self.endpoints.metrics
        if metrics is not None and status != "bot":  # counted once stored; labelled by channel, never chat
            metrics.received(self._channel_name(message.chat_id) or "unknown")
        return status

    async def _run_command(self, command: Command, message: InboundMessage, group: Group | None) -> None:
        try:
            reply = await self.commands.execute(command, message, group)
        except Exception as exc:  # an admin gets a short answer, never silence or a traceback
            log.exception("command /%s failed", command.name)
            allowed = command.name in self.commands.allowed(message, group)
            reply = (
                f"⚠️ /{command.name} failed: {exc.__class__.__name__}: {str(exc)[:200]}" if allowed else None
            )
        if reply is not None:
            await self.outbox.post(None, 0, message.chat_id, reply)

    async def notify_main(self, text: str) -> None:
        """One short notice to the owner's main chat (dead letters, failures)."""
        main = self.registry.main
        if main is None:
            return
        if not self._started:  # channels not connected yet: queued durably, sent by start()'s flush
            await self.store.enqueue_notice(main.chat_id, text)
            return
        await self.outbox.notice(main.chat_id, text)

    def _main_chat_id(self) -> str | None:
        main = self.registry.main
        return None if main is None else main.chat_id

    def reload_config(self) -> bool:
        """SIGHUP: apply what can change live (gateway.reload); an invalid file changes nothing."""
        config = reload_mod.reread(self.config_dir, self.config, self._adjust)
        if config is None:
            return False
        self.config = config
        self.executor.config = config
        self.outbox.set_retry_policy(config.retry)
        self.approvals.set_admins(config.admin.users)
        self.budget.config = config.budget
        asyncio.create_task(self.budget.push(), name="budget-push-after-reload")
        asyncio.create_task(self.senders.pump(), name="sender-prompts-after-reload")  # a raised cap
        return True

    # -- callbacks between the parts ------------------------------------------------------

    def _channel_name(self, chat_id: str) -> str | None:
        channel = self.outbox.channel_for(chat_id)
        return None if channel is None else channel.name

    async def _process(self, folder: str) -> None:
        await self.executor.process(folder)

    async def _evict(self, folder: str) -> None:
        await self.pool.stop(folder)

    def _vault_restarted(self) -> None:
        asyncio.create_task(self.budget.push(), name="budget-push-after-vault-restart")

    def _on_sandbox_gone(self, folder: str) -> None:
        self.queue.released(folder)

    def _on_idle(self, folder: str) -> None:
        asyncio.create_task(self.queue.expire(folder), name=f"expire:{folder}")

    # -- shutdown -------------------------------------------------------------------------

    async def drain(self) -> None:
        """Wait until every accepted message has been answered and every reply sent.

        A message whose turn failed transiently has a retry armed while its lane is idle; that
        is not "answered", so drain waits for the retry (bounded: after `[retry] max_attempts`
        the messages become a dead letter, see `gateway.dead_letters.newer_than`).
        """
        while True:
            await self.queue.wait_idle()
            await self.outbox.flush()
            wait = self.executor.next_retry_in()
            if wait is None:
                return
            await asyncio.sleep(wait + 0.01)

    async def stop(self, grace_s: float = 30) -> None:
        if not self._started:
            return
        self._started = False
        self._stopping = True
        await self.endpoints.close_dashboard()  # no decision from a page while the parts it calls stop
        for channel in self.channels:
            with contextlib.suppress(Exception):
                await channel.disconnect()
        await self.senders.stop()
        await self.approvals.stop()
        await self.scheduler.stop()
        await self.retention.stop()
        await self.budget.stop()
        await self.control.close()
        self.executor.cancel_retries()
        self.outbox.close()
        try:
            await asyncio.wait_for(self.queue.close(), grace_s)
        except TimeoutError:
            log.warning("running turns did not finish within %ss; stopping them", grace_s)
        await self.pool.stop_all()
        with contextlib.suppress(Exception):
            await self.wallet.aclose()
        await self._close_partial()

    async def _close_partial(self) -> None:
        with contextlib.suppress(Exception):
            await self.endpoints.close_metrics()
        with contextlib.suppress(Exception):
            await self.vault.stop()
        with contextlib.suppress(Exception):
            await self.backend.close()
        try:
            await self.store.close()
        finally:
            self.release_lock()

    def release_lock(self) -> None:
        """Called by whoever ends this process's use of the data dir (stop or a failed start)."""
        self.lock.release()


async def _quietly(close: Callable[[], Awaitable[object]]) -> None:
    """One undo step of a failed start-up: its own failure is logged, the next step still runs."""
    try:
        await close()
    except Exception:
        log.warning("closing after a failed start-up: %s failed", close, exc_info=True, extra=FILE_ONLY)
