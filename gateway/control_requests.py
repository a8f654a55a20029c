"""What a running gateway does with a request on its control socket (`gateway.control`).

The CLI asks it to re-read what it changed in the database (`reload`), for `/status` text
(`status`), or whether it runs (`ping`); the vault tells it about a blocked credential leak
(`leak`, proxy/leaks.py) or a request outside a secret's scope (`unscoped`, proxy/policy.py),
which become one main-chat notice each, never a flood; and it reports the model calls it metered
(`vault_usage`, gateway/vault_usage.py), acknowledged only once stored; and it asks the owner
about a request it holds (`http_approval`, gateway/http_approvals.py), answering once decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from core.pricing import PriceTable
from gateway.http_approvals import ask_owner
from gateway.vault_usage import store_report
from proxy.secrets import SecretStore, VaultError

if TYPE_CHECKING:
    from gateway.running import RunningGateway


class ControlRequests:
    """The control socket's handler; built with the gateway, used once it has started."""

    def __init__(self, gw: RunningGateway, status_text: Callable[[], Awaitable[str]]) -> None:
        self._gw = gw
        self._status_text = status_text
        self._leaks_notified: set[tuple[str, str]] = set()  # (group, pattern) told to main once
        self._unscoped_notified: set[tuple[str, str]] = set()  # (group, host) told to main once
        self._tasks: set[asyncio.Task[None]] = set()  # budget pushes in flight (kept referenced)

    async def __call__(self, request: dict[str, object]) -> dict[str, object]:
        gw = self._gw
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "reload":
            await self._reload(request.get("what"))
            return {"ok": True}
        if op == "status":
            return {"ok": True, "text": await self._status_text()}
        if op == "leak":  # the vault blocked a request carrying a credential (proxy/leaks.py)
            key = (str(request.get("group"))[:64], str(request.get("pattern"))[:100])
            if key not in self._leaks_notified:
                self._leaks_notified.add(key)
                await gw.notify_main(f"⚠️ blocked a request from group {key[0]}: it contained {key[1]}")
            return {"ok": True}
        if op == "vault_usage":  # model calls the vault metered (proxy/meter_addon.py)
            reply = await store_report(gw.store, request, PriceTable.from_config(gw.config.prices))
            self._budgets_after(request)
            return reply
        if op == "unscoped":  # a group's request matched a secret outside its scope (proxy/policy.py)
            return await self._unscoped_notice(request)
        if op == "http_approval":  # the vault holds a request for the owner (proxy/holds.py)
            return await ask_owner(gw, request)
        raise ValueError(f"unknown op {op!r}")

    def _budgets_after(self, request: dict[str, object]) -> None:
        """Stored spend changes the headroom: push it to the vault and send due budget notices
        (gateway/budget_state.py). After the reply, so the vault's acknowledgement never waits."""
        records = request.get("records")
        groups = (
            {r.get("group") for r in records if isinstance(r, dict)} if isinstance(records, list) else set()
        )
        folders = sorted(g for g in groups if isinstance(g, str))
        guard = getattr(self._gw, "budget", None)  # absent only in tests that drive this alone
        if guard is None:
            return
        task = asyncio.create_task(guard.after_usage(folders), name="budget-after-usage")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload(self, what: object) -> None:
        gw = self._gw
        if what == "groups":
            await reload_groups(gw)
        elif what == "tasks" and gw.services.tasks is not None:
            await gw.scheduler.reload()  # the scheduler is services.tasks once it is wired
        elif what == "dlq":
            for chat_id in await gw.store.chats_with_pending():
                group = gw.registry.for_chat(chat_id)
                if group is not None:
                    gw.queue.wake(group.folder)
            await gw.outbox.flush()  # `clawgate dlq retry` of a reply: send it now
        else:
            raise ValueError(f"cannot reload {what!r}")

    async def _unscoped_notice(self, request: dict[str, object]) -> dict[str, object]:
        """One main-chat notice per group and host: the owner learns why that group's calls fail."""
        group, secret, host = (str(request.get(k))[:100] for k in ("group", "secret", "host"))
        if (group, host) in self._unscoped_notified:
            return {"ok": True}
        self._unscoped_notified.add((group, host))
        info = None
        with contextlib.suppress(VaultError):
            info = SecretStore(self._gw.config_dir).get(secret)
        scope = ",".join((*info.groups, group)) if info is not None else f"main,{group}"
        fate = "was refused" if request.get("refused") is True else "left without it"
        await self._gw.notify_main(
            f"⚠️ group {group} sent a request to {host}, which needs the vault secret {secret}, "
            f"but {group} is not in its scope, so the request {fate}. To allow it: "
            f"clawgate vault scope {secret} --groups {scope}"
        )
        return {"ok": True}


async def reload_groups(gw: RunningGateway) -> None:
    """What a change to the groups in the database means for the running gateway (the CLI's
    `clawgate groups …` asks for it over the socket; the dashboard's `groups set` calls it)."""
    await gw.registry.load()
    for folder, live in list(gw.pool.live.items()):
        group = gw.registry.by_folder(folder)
        # `clawgate groups unregister`: its container goes too; `groups set --runtime`:
        # the next message starts the other runtime's image.
        if group is None or group.runtime != live.group.runtime:
            await gw.pool.stop(folder)
    await gw.senders.reload()  # `clawgate groups allow|block|set --senders`
