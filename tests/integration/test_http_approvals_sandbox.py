"""A held request from inside a real Docker sandbox (issue 15, invariant 14).

The agent's side as it really is: curl in the group's container, HTTPS through vault.sock
and the vault's CA, to a loopback HTTPS upstream that answers 401 without the real token.
A secret rule with `approve = true` on `/deploy/*` holds the POST until the owner presses
Approve in the main chat (the capture channel's buttons go through the same
`Approvals.on_button` as Telegram's); Deny answers the container 403 with a JSON reason.
A request the rule does not name passes meanwhile. curl speaks HTTP/2 to the vault by default
and sends a bodyless GET or DELETE without content-length, the stream ended with its headers:
held like any other (proxy/stream_watch.py), not refused with 413.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import docker
import pytest

from channels.console import OWNER_ID
from core.config import parse
from gateway.app import Gateway
from proxy.rules import make_rule
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.integration.test_gateway_docker import REAL_KEY, containers
from tests.integration.test_vault_tls import TOKEN, exec_in, https_server  # noqa: F401 - a fixture

MAIN = "console:main"


@pytest.fixture
async def held_gateway(  # type: ignore[no-untyped-def]
    dirs,
    model_server: FakeModelServer,
    sandbox_image: str,
    docker_client,
    https_server,  # noqa: F811
) -> AsyncIterator[Gateway]:
    server, ca = https_server
    config_dir, data_dir = dirs
    hp = f"127.0.0.1:{server.port}"
    store = SecretStore(config_dir)
    store.add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    store.add(
        "deployer",
        TOKEN,
        rules=[
            make_rule(hp, "/deploy/*", ["POST"], "set_header", "Authorization", approve=True),
            make_rule(hp, "/admin/*", ["GET", "DELETE"], "set_header", "Authorization", approve=True),
            make_rule(hp, "/*", [], "set_header", "Authorization"),
        ],
    )
    config = parse(
        f"""
[model]
base_url = "{model_server.url}"
name = "fake-model"
[sandbox]
image = "{sandbox_image}"
idle_timeout_s = 120
memory_mb = 256
[vault]
allow_private_upstreams = ["{model_server.host_port}", "{hp}"]
upstream_ca = "{ca}"
[vault.approval]
timeout_s = 60
""",
        Path("test.toml"),
    )
    channel = CaptureChannel()
    gw = Gateway(config, config_dir, data_dir)
    await gw.start([channel])
    gw.test_channel = channel  # type: ignore[attr-defined]
    await gw.ingest(channel.message("start the container"))
    await channel.wait_for(1)
    yield gw
    await gw.stop(grace_s=5)


def curl(url: str) -> list[str]:
    return [
        "curl", "-sS", "--max-time", "90", "-w", "\n%{http_code}", "-X", "POST",
        "-H", "Authorization: Bearer placeholder", "-H", "Content-Type: application/json",
        "--data", '{"ref": "v2"}', url,
    ]  # fmt: skip


async def test_curl_in_the_sandbox_waits_for_approve_and_deny_gets_403(
    held_gateway: Gateway,
    https_server,  # noqa: F811
    docker_client: docker.DockerClient,
) -> None:
    server, _ = https_server
    channel: CaptureChannel = held_gateway.test_channel  # type: ignore[attr-defined]
    base = f"https://127.0.0.1:{server.port}"
    [container] = containers(docker_client, held_gateway, "main")

    held = asyncio.create_task(exec_in(container, curl(f"{base}/deploy/prod")))
    await channel.wait_until(lambda: bool(channel.prompts), 60)
    chat, prompt = channel.prompts[0]
    assert chat == MAIN and "/deploy/prod" in prompt.title and prompt.requester_group == "main"
    assert '"ref": "v2"' in prompt.details and TOKEN not in prompt.details

    # Held: a request the rule does not name goes through meanwhile; the held one has not.
    code, out = await exec_in(container, curl(f"{base}/status"))
    assert code == 0 and out.endswith("\n200"), out
    assert not [r for r in server.requests if r["path"] == "/deploy/prod"]

    assert (await channel.press(prompt.id, "approve", OWNER_ID, MAIN)).startswith("Approved")
    code, out = await asyncio.wait_for(held, 60)
    assert code == 0 and out == "hello over tls\n\n200", out
    [sent] = [r for r in server.requests if r["path"] == "/deploy/prod"]
    assert sent["authorization"] == f"Bearer {TOKEN}" and sent["method"] == "POST"

    denied = asyncio.create_task(exec_in(container, curl(f"{base}/deploy/staging")))
    await channel.wait_until(lambda: len(channel.prompts) > 1, 60)
    _, prompt = channel.prompts[1]
    assert (await channel.press(prompt.id, "deny", OWNER_ID, MAIN)).startswith("Denied")
    code, out = await asyncio.wait_for(denied, 60)
    body, _, status = out.rpartition("\n")
    assert status == "403" and json.loads(body)["error"] == "approval_required", out
    assert "the owner denied it" in json.loads(body)["message"]
    assert not [r for r in server.requests if r["path"] == "/deploy/staging"]


def curl_bodyless(method: str, url: str) -> list[str]:
    return [
        "curl", "-sS", "--max-time", "90", "-w", "\n%{http_code} %{http_version}", "-X", method,
        "-H", "Authorization: Bearer placeholder", url,
    ]  # fmt: skip


async def test_curl_over_http2_holds_a_bodyless_get_and_delete(
    held_gateway: Gateway,
    https_server,  # noqa: F811
    docker_client: docker.DockerClient,
) -> None:
    server, _ = https_server
    channel: CaptureChannel = held_gateway.test_channel  # type: ignore[attr-defined]
    base = f"https://127.0.0.1:{server.port}"
    [container] = containers(docker_client, held_gateway, "main")

    held = asyncio.create_task(exec_in(container, curl_bodyless("GET", f"{base}/admin/report")))
    await channel.wait_until(lambda: bool(channel.prompts), 60)
    _, prompt = channel.prompts[0]
    assert "/admin/report" in prompt.title
    assert not [r for r in server.requests if r["path"] == "/admin/report"]
    assert (await channel.press(prompt.id, "approve", OWNER_ID, MAIN)).startswith("Approved")
    code, out = await asyncio.wait_for(held, 60)
    assert code == 0 and out == "hello over tls\n\n200 2", out  # HTTP/2 all the way to the vault
    [sent] = [r for r in server.requests if r["path"] == "/admin/report"]
    assert sent["authorization"] == f"Bearer {TOKEN}" and sent["method"] == "GET"

    denied = asyncio.create_task(exec_in(container, curl_bodyless("DELETE", f"{base}/admin/report")))
    await channel.wait_until(lambda: len(channel.prompts) > 1, 60)
    _, prompt = channel.prompts[1]
    assert (await channel.press(prompt.id, "deny", OWNER_ID, MAIN)).startswith("Denied")
    code, out = await asyncio.wait_for(denied, 60)
    body, _, status = out.rpartition("\n")
    assert status == "403 2" and json.loads(body)["error"] == "approval_required", out
    assert [r["method"] for r in server.requests if r["path"] == "/admin/report"] == ["GET"]
