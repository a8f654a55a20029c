"""Scheduled tasks through a real gateway: real Docker containers, real vault, real SQLite, real clock.

Only the model is fake (a loopback server speaking the Anthropic API, echoing by default).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime

import pytest

from core.models import Group
from gateway.app import Gateway
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.integration.test_gateway_docker import REAL_KEY, config_for, containers


@pytest.fixture
async def gateway(dirs, model_server, sandbox_image, docker_client):  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    SecretStore(config_dir).add(  # team's turns call the model too: the key is scoped to it
        "anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}", groups=("main", "team")
    )
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image), config_dir, data_dir)
    await gw.start([channel])
    await gw.registry.register(Group("team", "console:team", "team", "@Andy", requires_trigger=True))
    gw.test_channel = channel  # type: ignore[attr-defined]
    yield gw
    await gw.stop(grace_s=5)
    assert containers(docker_client, gw) == []


def soon(seconds: float) -> str:
    return datetime.fromtimestamp(time.time() + seconds, UTC).isoformat()


async def finished_runs(gateway: Gateway, task_id: int, timeout: float = 30) -> list:
    deadline = time.monotonic() + timeout
    while True:
        runs = await gateway.store.task_runs(task_id)
        if runs and all(r.status != "running" for r in runs):
            return runs
        assert time.monotonic() < deadline, runs
        await asyncio.sleep(0.1)


async def test_one_off_task_runs_in_the_groups_container_and_answers_in_its_chat(
    gateway: Gateway, model_server: FakeModelServer, docker_client
) -> None:
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
    scheduled_at = time.time()
    task = await gateway.scheduler.schedule("team", "check the backups", at=soon(1.5), created_by="team")
    [(chat, reply)] = await channel.wait_for(1, timeout=120)
    # The answer goes to the group's own chat, though nobody @mentioned the assistant.
    assert chat == "console:team"
    assert reply.startswith("echo: ") and "check the backups" in reply
    assert f'sender="scheduled task {task["id"]}"' in json.dumps(model_server.requests[0].body).replace(
        '\\"', '"'
    )
    # It ran in the team's sandbox, not main's.
    assert len(containers(docker_client, gateway, "team")) == 1
    assert containers(docker_client, gateway, "main") == []

    [run] = await finished_runs(gateway, task["id"])
    assert run.status == "ok" and run.result == reply and run.error is None
    assert run.scheduled_for >= scheduled_at + 1.4 and run.started_at >= run.scheduled_for
    assert run.duration is not None and 0 < run.duration < 120 and run.run_id is not None
    [row] = await gateway.scheduler.list("team", include_finished=True)
    assert row["status"] == "done" and row["last_result"] == reply
    messages = await gateway.store.messages_for_chat("console:team")
    assert [(m.sender_name, m.status) for m in messages] == [(f"scheduled task {task['id']}", "done")]


async def test_agent_schedules_a_task_with_its_tool_and_it_runs(
    gateway: Gateway, model_server: FakeModelServer
) -> None:
    """The whole loop: the model calls schedule_task over IPC, the scheduler fires it, the answer arrives."""
    channel: CaptureChannel = gateway.test_channel  # type: ignore[attr-defined]
    tool_call = {
        "id": "msg_tool",
        "type": "message",
        "role": "assistant",
        "model": "fake",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "schedule_task",
                "input": {"prompt": "water the plants", "at": soon(4)},
            }
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    model_server.responses.append((200, tool_call))
    await gateway.ingest(channel.message("@Andy remind me in a few seconds", chat_id="console:team"))
    replies = await channel.wait_for(2, timeout=120)
    assert [chat for chat, _ in replies] == ["console:team", "console:team"]
    assert "water the plants" in replies[1][1] and "scheduled task" in replies[1][1]
    [task] = await gateway.scheduler.list("team", include_finished=True)
    assert task["created_by"] == "team" and task["group"] == "team" and task["status"] == "done"
    [run] = await finished_runs(gateway, task["id"])
    assert run.status == "ok" and run.result == replies[1][1]
