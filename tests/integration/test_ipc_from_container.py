"""A compromised agent inside a real non-main container attacks the gateway over its IPC socket.

Whatever it claims in the payload, the socket it came through says who it is: it can
talk to its own chat and nothing else.
"""

from __future__ import annotations

import asyncio
import json

from core.models import Group
from gateway.app import Gateway
from tests.fakes.channel import CaptureChannel
from tests.integration.runsc_support import container_runtime
from tests.integration.test_gateway_docker import config_for, containers

__all__ = ["container_runtime"]  # a fixture: the attack runs on runc and under gVisor

ATTACK = r"""
import json, socket
s = socket.socket(socket.AF_UNIX)
s.connect("/run/clawgate/ipc.sock")
f = s.makefile("rwb")
def call(i, method, params, **top):
    f.write(json.dumps({"id": i, "method": method, "params": params, **top}).encode() + b"\n")
    f.flush()
    return json.loads(f.readline())
print(json.dumps({
    "to_main": call(1, "send_message", {"text": "pwned", "chat_id": "console:main"}),
    "forged_param": call(2, "send_message", {"text": "pwned", "group": "main"}),
    "forged_top": call(3, "send_message", {"text": "pwned"}, group="main"),
    "list_chats": call(4, "list_chats", {}),
    "register": call(5, "register_group", {"chat_id": "console:evil", "folder": "evil"}),
    "unregister_main": call(6, "unregister_group", {"folder": "main"}),
    "tasks_of_main": call(7, "list_tasks", {"group": "main"}),
    "own_chat": call(8, "send_message", {"text": "hello from team"}),
}))
"""


async def test_hostile_agent_in_non_main_container_is_confined(
    dirs, model_server, sandbox_image, docker_client, container_runtime
) -> None:
    config_dir, data_dir = dirs
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image, runtime=container_runtime), config_dir, data_dir)
    await gw.start([channel])
    try:
        await gw.registry.register(Group("team", "console:team", "team", "@Andy"))
        await gw.ingest(
            channel.message(
                "@Andy hi", chat_id="console:team", sender="console:mallory", sender_name="mallory"
            )
        )
        await channel.wait_for(1)
        [container] = containers(docker_client, gw, "team")
        result = await asyncio.to_thread(container.exec_run, ["python3", "-c", ATTACK])
        report = json.loads(result.output.decode().strip().splitlines()[-1])
        codes = {name: reply.get("error", {}).get("code") for name, reply in report.items()}
        assert codes == {
            "to_main": "forbidden",
            "forged_param": "bad_params",
            "forged_top": "bad_request",
            "list_chats": "forbidden",
            "register": "forbidden",
            "unregister_main": "forbidden",
            "tasks_of_main": "forbidden",
            "own_chat": None,
        }
        await channel.wait_for(2)
        assert ("console:team", "hello from team") in channel.sent
        assert not any("pwned" in text for _, text in channel.sent)
        assert gw.registry.by_folder("evil") is None and gw.registry.main is not None
    finally:
        await gw.stop(grace_s=5)
