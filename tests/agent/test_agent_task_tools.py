"""The agent's task tools: what goes over IPC, and gateway refusals coming back as tool errors."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import FakeIPCServer, FakeModelServer, FakeVault, anthropic_text, anthropic_tool
from test_agent_runtime import PROMPT, _env, _run

from groups.agent.ipc_client import IPCClient, IPCClosed
from groups.agent.tool_specs import TOOL_SPECS
from groups.agent.tools import Toolbox


class ScriptedGateway:
    """The gateway end of a socketpair: answers each request with `answer(method, params)`."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ours, theirs = socket.socketpair()
        self.client = IPCClient(theirs)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with self.ours.makefile("rb") as rfile:
            for raw in rfile:
                req = json.loads(raw)
                self.calls.append((req["method"], req["params"]))
                reply = self.answer(req["method"], req["params"])
                if reply is None:  # the gateway went away
                    self.ours.close()
                    return
                self.ours.sendall((json.dumps({"id": req["id"], **reply}) + "\n").encode())

    def close(self) -> None:
        self.client.close()
        self.ours.close()


def accept(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "schedule_task":
        return {"result": {"id": 3, "group": params.get("group", "team"), "status": "active"}}
    if method == "list_tasks":
        return {"result": {"tasks": [{"id": 3, "group": "team", "prompt": "p"}]}}
    return {"result": {"id": params["task_id"], "status": method.removesuffix("_task") + "d"}}


@pytest.fixture
def gateway() -> Any:
    gw = ScriptedGateway(accept)
    yield gw
    gw.close()


def box(tmp_path: Path, gw: ScriptedGateway) -> Toolbox:
    return Toolbox(str(tmp_path), lambda text: None, ipc_call=gw.client.call)


def test_task_tools_are_offered_to_the_model() -> None:
    names = {spec["name"] for spec in TOOL_SPECS}
    assert {"schedule_task", "list_tasks", "pause_task", "resume_task", "cancel_task"} <= names


@pytest.mark.parametrize(
    "spec",
    [{"cron": "0 9 * * 1-5"}, {"every_s": 3600}, {"every_s": 90.5}, {"at": "2030-01-31T09:00:00+01:00"}],
)
def test_schedule_task_passes_the_schedule_through(
    tmp_path: Path, gateway: ScriptedGateway, spec: dict
) -> None:
    text, is_error = box(tmp_path, gateway).execute("schedule_task", {"prompt": "water the plants", **spec})
    assert not is_error
    assert json.loads(text) == {"id": 3, "group": "team", "status": "active"}
    assert gateway.calls == [("schedule_task", {"prompt": "water the plants", **spec})]


def test_schedule_task_for_another_group_is_passed_to_the_gateway_to_decide(
    tmp_path: Path, gateway: ScriptedGateway
) -> None:
    box(tmp_path, gateway).execute("schedule_task", {"prompt": "p", "every_s": 60, "group": "other"})
    assert gateway.calls == [("schedule_task", {"prompt": "p", "every_s": 60, "group": "other"})]


@pytest.mark.parametrize(
    "args",
    [
        {"prompt": "p"},
        {"prompt": "p", "cron": "* * * * *", "every_s": 60},
        {"prompt": "", "every_s": 60},
        {"every_s": 60},
        {"prompt": "p", "every_s": "sixty"},
        {"prompt": "p", "every_s": True},
    ],
)
def test_schedule_task_bad_arguments_never_reach_the_gateway(
    tmp_path: Path, gateway: ScriptedGateway, args: dict
) -> None:
    text, is_error = box(tmp_path, gateway).execute("schedule_task", args)
    assert is_error and text
    assert gateway.calls == []


def test_list_pause_resume_cancel(tmp_path: Path, gateway: ScriptedGateway) -> None:
    tools = box(tmp_path, gateway)
    text, is_error = tools.execute("list_tasks", {})
    assert not is_error and json.loads(text)["tasks"][0]["id"] == 3
    tools.execute("list_tasks", {"group": "other"})
    for name in ("pause_task", "resume_task", "cancel_task"):
        text, is_error = tools.execute(name, {"task_id": 3})
        assert not is_error and json.loads(text)["id"] == 3
    assert gateway.calls == [
        ("list_tasks", {}),
        ("list_tasks", {"group": "other"}),
        ("pause_task", {"task_id": 3}),
        ("resume_task", {"task_id": 3}),
        ("cancel_task", {"task_id": 3}),
    ]
    assert tools.execute("pause_task", {})[1] is True
    assert tools.execute("pause_task", {"task_id": [3]})[1] is True


@pytest.mark.parametrize(
    ("method", "args", "code", "message"),
    [
        ("schedule_task", {"prompt": "p", "every_s": 1}, "bad_params", "every_s must be at least 10 seconds"),
        ("schedule_task", {"prompt": "p", "every_s": 60, "group": "main"}, "forbidden", "not allowed"),
        ("cancel_task", {"task_id": 99}, "not_found", "no task 99 in this group"),
    ],
)
def test_gateway_refusals_come_back_as_tool_errors(
    tmp_path: Path, method: str, args: dict, code: str, message: str
) -> None:
    gw = ScriptedGateway(lambda m, p: {"error": {"code": code, "message": message}})
    try:
        text, is_error = box(tmp_path, gw).execute(method, args)
    finally:
        gw.close()
    assert is_error
    assert code in text and message in text


def test_a_closed_gateway_stops_the_runtime(tmp_path: Path) -> None:
    gw = ScriptedGateway(lambda m, p: None)
    try:
        with pytest.raises(IPCClosed):
            box(tmp_path, gw).execute("list_tasks", {})
    finally:
        gw.close()


def test_without_ipc_the_task_tools_say_so(tmp_path: Path) -> None:
    text, is_error = Toolbox(str(tmp_path), lambda t: None).execute("list_tasks", {})
    assert is_error and "not available" in text


def test_runtime_schedules_a_task_over_ipc(sock_dir: Path, group_dirs: tuple[Path, Path]) -> None:
    """The real runtime process: the model calls schedule_task, the request reaches the gateway socket."""
    group, glob = group_dirs
    model = FakeModelServer(
        [
            anthropic_tool("toolu_1", "schedule_task", {"prompt": "daily digest", "cron": "0 8 * * *"}),
            anthropic_text("Scheduled."),
        ]
    )
    vault = FakeVault(str(sock_dir / "vault.sock"), model.port)
    ipc = FakeIPCServer(str(sock_dir / "ipc.sock"), [(5, PROMPT)])
    try:
        proc = _run(_env(sock_dir, group, glob, "anthropic", model.url), group)
        assert proc.returncode == 0, proc.stderr
        assert ipc.by_method("schedule_task") == [{"prompt": "daily digest", "cron": "0 8 * * *"}]
        assert ipc.by_method("turn_done") == [{"run_id": 5, "text": "Scheduled.", "error": None}]
        tool_result = model.requests[1]["body"]["messages"][-1]["content"][0]
        assert tool_result["type"] == "tool_result" and not tool_result.get("is_error")
    finally:
        model.close()
        vault.close()
