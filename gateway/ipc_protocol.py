"""What crosses the agent IPC socket, and who may ask for what (invariant 4).

The request schemas (`validate`: unknown fields are refused, not ignored), the per-method
policy (`authorize`), the identity a socket is bound to (`Caller`), the values a turn is
handed over as and the services a request reaches once authorized. Plain rules with no
I/O: the socket server that enforces them, with its limits, is `gateway.ipc`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

MAX_TEXT_CHARS = 64 * 1024


class IpcError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Turn:
    run_id: int
    prompt: str


@dataclass(frozen=True, slots=True)
class TurnResult:
    text: str | None
    error: str | None


_OPT_STR = (str, type(None))
_TASK_ID = (int, str)

# method -> {field: (type, required)}
_SCHEMAS: dict[str, dict[str, tuple[type | tuple[type, ...], bool]]] = {
    "next_messages": {},
    "received": {"run_id": (int, True)},
    "send_message": {"text": (str, True), "chat_id": (str, False)},
    "turn_done": {"run_id": (int, True), "text": (_OPT_STR, False), "error": (_OPT_STR, False)},
    "log": {"level": (str, True), "message": (str, True)},
    "status": {"state": (str, True)},
    "schedule_task": {
        "prompt": (str, True),
        "group": (str, False),
        "cron": (str, False),
        "every_s": ((int, float), False),
        "at": (str, False),
    },
    "list_tasks": {"group": (str, False)},
    "pause_task": {"task_id": (_TASK_ID, True)},
    "resume_task": {"task_id": (_TASK_ID, True)},
    "cancel_task": {"task_id": (_TASK_ID, True)},
    "register_group": {
        "chat_id": (str, True),
        "folder": (str, True),
        "name": (str, False),
        "trigger": (str, False),
        "requires_trigger": (bool, False),
    },
    "unregister_group": {"folder": (str, True)},
    "set_mounts": {"folder": (str, True), "mounts": (list, True)},
    "list_chats": {},
    "near_balance": {"account_id": (str, False), "key": (str, False)},
    "near_view": {"contract_id": (str, True), "method": (str, True), "args": ((dict, str), False)},
    "near_transfer": {"receiver_id": (str, True), "amount": ((str, int), True), "key": (str, False)},
    "near_function_call": {
        "receiver_id": (str, True),
        "method": (str, True),
        "args": ((dict, str), False),
        "deposit": ((str, int), False),
        "gas": (int, False),
        "key": (str, False),
    },
    "near_sign_message": {
        "message": (str, True),
        "recipient": (str, True),
        "nonce": (str, False),
        "callback_url": (str, False),
        "key": (str, False),
    },
}

# Who may do what (invariant 4). "self" = only when the target is the caller's own group;
# "main" = only the main group; "any" = every group (the method acts on the caller itself).
_POLICY: dict[str, str] = {
    "next_messages": "any",
    "received": "any",
    "turn_done": "any",
    "log": "any",
    "status": "any",
    "send_message": "self",
    "schedule_task": "self",
    "list_tasks": "self",
    "pause_task": "self",
    "resume_task": "self",
    "cancel_task": "self",
    "register_group": "main",
    "unregister_group": "main",
    "set_mounts": "main",
    "list_chats": "main",
    # The wallet acts for the calling group only; which keys a group may use is the wallet
    # policy's call (`[wallet.policy] key_groups`), checked in gateway.wallet.service.
    "near_balance": "self",
    "near_view": "self",
    "near_transfer": "self",
    "near_function_call": "self",
    "near_sign_message": "self",
}


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is on the other end of a socket: fixed when the socket is created, never from a payload."""

    folder: str
    is_main: bool
    chat_id: str


def authorize(caller: Caller, method: str, target_folder: str | None) -> None:
    """Raise `forbidden` unless `caller` may run `method` against `target_folder` (None = itself)."""
    rule = _POLICY[method]
    if rule == "any" or caller.is_main:
        return
    if rule == "self" and (target_folder is None or target_folder == caller.folder):
        return
    raise IpcError("forbidden", f"{method} is not allowed for this group")


class IpcServices(Protocol):
    """What the gateway does on an agent's behalf once a request is authorized."""

    def folder_of_chat(self, chat_id: str) -> str | None: ...

    async def send_message(self, caller: Caller, run_id: int | None, chat_id: str, text: str) -> None: ...

    async def schedule_task(self, caller: Caller, target: str, params: dict[str, Any]) -> dict[str, Any]: ...

    async def list_tasks(self, folder: str | None) -> list[dict[str, Any]]: ...

    async def task_group(self, task_id: int | str) -> str | None: ...

    async def update_task(self, task_id: int | str, action: str) -> dict[str, Any]: ...

    async def register_group(self, params: dict[str, Any]) -> dict[str, Any]: ...

    async def unregister_group(self, folder: str) -> bool: ...

    async def set_mounts(self, folder: str, mounts: list[Any]) -> None: ...

    async def list_chats(self) -> list[dict[str, Any]]: ...

    async def wallet_request(self, caller: Caller, method: str, params: dict[str, Any]) -> dict[str, Any]: ...


def validate(method: object, params: object) -> dict[str, Any]:
    if not isinstance(method, str) or method not in _SCHEMAS:
        raise IpcError("unknown_method", f"unknown method {method!r}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise IpcError("bad_params", "params must be an object")
    schema = _SCHEMAS[method]
    for key in params:
        if key not in schema:
            raise IpcError("bad_params", f"unexpected field {key!r} for {method}")
    for key, (kind, required) in schema.items():
        if key not in params:
            if required:
                raise IpcError("bad_params", f"missing field {key!r} for {method}")
            continue
        value = params[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise IpcError("bad_params", f"field {key!r} has the wrong type")
        if isinstance(value, str) and len(value) > MAX_TEXT_CHARS:
            raise IpcError("too_large", f"field {key!r} exceeds {MAX_TEXT_CHARS} characters")
    return params
