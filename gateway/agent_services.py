"""What the gateway does for an agent once `gateway.ipc` has authorized the request.

Authorization lives in one place (`gateway.ipc_protocol.authorize`); this module only acts.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from core.config import Config
from core.models import Group
from gateway.ipc_protocol import Caller, IpcError
from gateway.registry import GroupRegistry
from gateway.runs import RunExecutor
from gateway.store import Store


class TaskBook(Protocol):
    """The scheduler's face towards agents (implemented by `gateway.scheduler.Scheduler`)."""

    async def schedule(
        self,
        folder: str,
        prompt: str,
        *,
        cron: str | None,
        every_s: float | None,
        at: str | None,
        created_by: str,
    ) -> dict[str, Any]: ...

    async def list(self, folder: str | None) -> list[dict[str, Any]]: ...

    async def group_of(self, task_id: int | str) -> str | None: ...

    async def update(self, task_id: int | str, action: str) -> dict[str, Any]: ...


class WalletHandler(Protocol):
    """`gateway.wallet.service.WalletService` as the IPC layer sees it."""

    async def handle(self, caller: Caller, method: str, params: dict[str, Any]) -> dict[str, Any]: ...


class AgentServices:
    def __init__(
        self, config: Config, store: Store, registry: GroupRegistry, tasks: TaskBook | None = None
    ) -> None:
        self._config = config
        self._store = store
        self._registry = registry
        self._executor: RunExecutor | None = None
        self.tasks = tasks
        self.wallet: WalletHandler | None = None

    def bind_executor(self, executor: RunExecutor) -> None:
        """The executor needs the sandbox pool, which needs these services: tie the knot after both exist."""
        self._executor = executor

    def _book(self) -> TaskBook:
        if self.tasks is None:
            raise IpcError("unavailable", "the scheduler is not running")
        return self.tasks

    def folder_of_chat(self, chat_id: str) -> str | None:
        group = self._registry.for_chat(chat_id)
        return None if group is None else group.folder

    async def send_message(self, caller: Caller, run_id: int | None, chat_id: str, text: str) -> None:
        assert self._executor is not None, "bind_executor() was not called"
        await self._executor.send_from_agent(run_id, chat_id, text)

    async def schedule_task(self, caller: Caller, target: str, params: dict[str, Any]) -> dict[str, Any]:
        if self._registry.by_folder(target) is None:
            raise IpcError("unknown_group", f"no registered group {target!r}")
        try:
            return await self._book().schedule(
                target,
                params["prompt"],
                cron=params.get("cron"),
                every_s=params.get("every_s"),
                at=params.get("at"),
                created_by=caller.folder,
            )
        except ValueError as exc:
            raise IpcError("bad_params", str(exc)) from None

    async def list_tasks(self, folder: str | None) -> list[dict[str, Any]]:
        return await self._book().list(folder)

    async def task_group(self, task_id: int | str) -> str | None:
        return await self._book().group_of(task_id)

    async def update_task(self, task_id: int | str, action: str) -> dict[str, Any]:
        try:
            return await self._book().update(task_id, action)
        except ValueError as exc:
            raise IpcError("bad_params", str(exc)) from None

    async def register_group(self, params: dict[str, Any]) -> dict[str, Any]:
        group = Group(
            folder=params["folder"],
            chat_id=params["chat_id"],
            name=params.get("name") or params["folder"],
            trigger=params.get("trigger") or self._config.default_trigger,
            requires_trigger=params.get("requires_trigger", True),
            is_main=False,
        )
        try:
            await self._registry.register(group)
        except ValueError as exc:
            raise IpcError("bad_params", str(exc)) from None
        return {"folder": group.folder, "chat_id": group.chat_id, "trigger": group.trigger}

    async def unregister_group(self, folder: str) -> bool:
        try:
            return await self._registry.unregister(folder)
        except ValueError as exc:
            raise IpcError("bad_params", str(exc)) from None

    async def set_mounts(self, folder: str, mounts: list[Any]) -> None:
        try:
            await self._registry.set_mounts(folder, mounts)
        except (ValueError, TypeError) as exc:
            raise IpcError("bad_params", str(exc)) from None

    async def list_chats(self) -> list[dict[str, Any]]:
        registered = {g.chat_id: g.folder for g in self._registry.all()}
        return [
            {
                "chat_id": chat_id,
                "name": name,
                "channel": channel,
                "last_message_at": last,
                "registered_as": registered.get(chat_id),
                "age_s": round(time.time() - last),
            }
            for chat_id, name, channel, last in await self._store.chats()
        ]

    async def wallet_request(self, caller: Caller, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if self.wallet is None:
            raise IpcError("unavailable", "the NEAR wallet is not enabled on this gateway")
        return await self.wallet.handle(caller, method, params)
