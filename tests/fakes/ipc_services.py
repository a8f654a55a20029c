"""An in-memory stand-in for the gateway's IPC services: records every call that got through.

The IPC tests use it to prove that a refused request never reaches the services at all.
"""

from __future__ import annotations

import itertools
from typing import Any

from gateway.ipc_protocol import Caller

CHATS = {"tg:-1": "team", "tg:-2": "other", "console:main": "main"}


class RecordingServices:
    def __init__(self) -> None:
        self.sent: list[tuple[str, int | None, str, str]] = []
        self.calls: list[tuple[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def folder_of_chat(self, chat_id: str) -> str | None:
        return CHATS.get(chat_id)

    async def send_message(self, caller: Caller, run_id: int | None, chat_id: str, text: str) -> None:
        self.sent.append((caller.folder, run_id, chat_id, text))

    async def schedule_task(self, caller: Caller, target: str, params: dict[str, Any]) -> dict[str, Any]:
        task_id = f"t{next(self._ids)}"
        self.tasks[task_id] = {"id": task_id, "group": target, "status": "active"}
        self.calls.append(("schedule_task", target))
        return self.tasks[task_id]

    async def list_tasks(self, folder: str | None) -> list[dict[str, Any]]:
        self.calls.append(("list_tasks", folder))
        return [t for t in self.tasks.values() if folder is None or t["group"] == folder]

    async def task_group(self, task_id: int | str) -> str | None:
        task = self.tasks.get(str(task_id))
        return None if task is None else task["group"]

    async def update_task(self, task_id: int | str, action: str) -> dict[str, Any]:
        self.calls.append((action, task_id))
        self.tasks[str(task_id)]["status"] = action
        return self.tasks[str(task_id)]

    async def register_group(self, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("register_group", params["folder"]))
        return {"folder": params["folder"]}

    async def unregister_group(self, folder: str) -> bool:
        self.calls.append(("unregister_group", folder))
        return True

    async def set_mounts(self, folder: str, mounts: list[Any]) -> None:
        self.calls.append(("set_mounts", folder))

    async def list_chats(self) -> list[dict[str, Any]]:
        self.calls.append(("list_chats", None))
        return [{"chat_id": c} for c in CHATS]

    async def wallet_request(self, caller: Caller, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((method, caller.folder))
        return {"ok": True}
