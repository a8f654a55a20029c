"""The gateway end to end in-process: real Docker containers, real mitmproxy vault, real SQLite.

Only the model is fake (a scripted server on loopback speaking the Anthropic API).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from core.config import parse
from gateway.app import Gateway, StartupError
from groups.sandbox.docker import LABEL_GROUP, LABEL_INSTANCE
from proxy.secrets import SecretStore
from tests.docker_containers import labelled
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.waits import drained

REAL_KEY = "sk-ant-api03-REALSECRET-" + "x" * 20


def config_for(  # type: ignore[no-untyped-def]
    model: FakeModelServer,
    image: str,
    extra: str = "",
    idle: float = 30,
    backend: str = "docker",
    top: str = "",
    runtime: str = "runc",
):
    return parse(
        f"""
{top}
[model]
base_url = "{model.url}"
name = "fake-model"
[sandbox]
backend = "{backend}"
runtime = "{runtime}"
image = "{image}"
idle_timeout_s = {idle}
max_containers = 3
memory_mb = 256
[vault]
allow_private_upstreams = ["{model.host_port}"]
[retry]
max_attempts = 2
base_delay_s = 0.05
{extra}
""",
        Path("test.toml"),
    )


def containers(client: docker.DockerClient, gateway: Gateway, folder: str | None = None) -> list:
    labels = [f"{LABEL_INSTANCE}={gateway.instance}"]
    if folder:
        labels.append(f"{LABEL_GROUP}={folder}")
    return labelled(client, labels)


@pytest.fixture
async def gateway(dirs, model_server, sandbox_image, docker_client):  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    SecretStore(config_dir).add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image), config_dir, data_dir)
    await gw.start([channel])
    gw.test_channel = channel  # type: ignore[attr-defined]
    yield gw
    await gw.stop(grace_s=5)
    assert containers(docker_client, gw) == []


async def test_message_reaches_agent_and_reply_returns_with_vault_injected_key(
    gateway, model_server, docker_client
) -> None:
    channel: CaptureChannel = gateway.test_channel
    await gateway.ingest(channel.message("hello there"))
    [(chat, reply)] = await channel.wait_for(1)
    assert chat == "console:main"
    assert reply.startswith("echo: ") and "hello there" in reply
    request = model_server.requests[0]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == REAL_KEY  # injected on the way out
    assert "<messages>" in json.dumps(request.body)  # chat text arrives wrapped as data

    [container] = containers(docker_client, gateway, "main")
    first_id = container.id
    inspect = json.dumps(docker_client.api.inspect_container(first_id))
    assert REAL_KEY not in inspect
    assert "ANTHROPIC_API_KEY=placeholder" in inspect
    # Nothing inside the container holds the key: environment, argv, files it can read.
    probe = container.exec_run(
        [
            "sh",
            "-c",
            "cat /proc/*/environ /proc/*/cmdline 2>/dev/null; "
            "grep -rsl 'REAL[S]ECRET' /workspace /run /tmp /opt /etc /home /root 2>/dev/null; true",
        ],
    )
    assert b"REALSECRET" not in probe.output
    assert b"placeholder" in probe.output, probe.output[-2000:]

    await gateway.ingest(channel.message("second message"))
    await channel.wait_for(2)
    assert [c.id for c in containers(docker_client, gateway, "main")] == [first_id]  # warm reuse
    await drained(gateway)
    statuses = {m.status for m in await gateway.store.messages_for_chat("console:main")}
    assert statuses == {"done"}


async def test_container_has_no_network_and_vault_refuses_unlisted_loopback(
    gateway, model_server, docker_client
) -> None:
    channel: CaptureChannel = gateway.test_channel
    await gateway.ingest(channel.message("wake up"))
    await channel.wait_for(1)
    [container] = containers(docker_client, gateway, "main")
    with FakeModelServer() as forbidden:
        script = f"""
import json, os, socket, urllib.request, urllib.error
out = {{"interfaces": sorted(os.listdir("/sys/class/net"))}}
def attempt(family, addr):
    s = socket.socket(family, socket.SOCK_STREAM); s.settimeout(2)
    try:
        s.connect(addr); return "connected"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()
out["host_model_direct"] = attempt(socket.AF_INET, ("127.0.0.1", {model_server.port}))
out["ipv6_loopback"] = attempt(socket.AF_INET6, ("::1", {model_server.port}))
try:
    urllib.request.urlopen("http://{forbidden.host_port}/v1/messages", timeout=10)
    out["forbidden_via_vault"] = 200
except urllib.error.HTTPError as e:
    out["forbidden_via_vault"] = e.code
    out["forbidden_body"] = e.read().decode()[:1000]
try:
    out["allowed_via_vault"] = urllib.request.urlopen("{model_server.url}/health", timeout=10).status
except Exception as e:
    out["allowed_via_vault"] = repr(e)
print(json.dumps(out))
"""
        result = container.exec_run(["python3", "-c", script])
        report = json.loads(result.output.decode().strip().splitlines()[-1])
        assert report["interfaces"] == ["lo"]
        assert report["host_model_direct"] in {"ConnectionRefusedError", "OSError"}
        assert report["ipv6_loopback"] in {"ConnectionRefusedError", "OSError"}
        assert report["forbidden_via_vault"] == 403
        assert "allow_private_upstreams" in report["forbidden_body"]
        assert forbidden.requests == []  # the refused upstream never saw a byte
        assert report["allowed_via_vault"] == 200  # the same path works for the allowed upstream


async def test_idle_container_is_stopped(dirs, model_server, sandbox_image, docker_client) -> None:
    config_dir, data_dir = dirs
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image, idle=1.5), config_dir, data_dir)
    await gw.start([channel])
    try:
        await gw.ingest(channel.message("hi"))
        await channel.wait_for(1)
        assert len(containers(docker_client, gw, "main")) == 1
        for _ in range(300):
            if not containers(docker_client, gw, "main"):
                break
            await asyncio.sleep(0.1)
        assert containers(docker_client, gw, "main") == []
        assert gw.queue.holders == []
        await gw.ingest(channel.message("again"))  # a new cold container answers
        await channel.wait_for(2)
    finally:
        await gw.stop(grace_s=5)


async def test_model_server_down_gives_a_short_error_and_keeps_the_message(
    dirs, sandbox_image, docker_client
) -> None:
    config_dir, data_dir = dirs
    with FakeModelServer() as model:
        cfg = config_for(model, sandbox_image)
    # The server is closed now: connections to its port are refused.
    channel = CaptureChannel()
    gw = Gateway(cfg, config_dir, data_dir)
    await gw.start([channel])
    try:
        await gw.ingest(channel.message("are you there?"))
        [(_, reply)] = await channel.wait_for(1, timeout=90)
        assert reply.startswith("⚠️")
        assert "Traceback" not in reply
        stored = await gw.store.messages_for_chat("console:main")
        assert [m.text for m in stored] == ["are you there?"]
    finally:
        await gw.stop(grace_s=5)


async def test_docker_down_at_start_is_a_clear_startup_error(
    dirs, model_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_dir, data_dir = dirs
    monkeypatch.setenv("DOCKER_HOST", f"unix://{data_dir.parent}/no-docker.sock")
    gw = Gateway(config_for(model_server, "clawgate-sandbox:latest"), config_dir, data_dir)
    with pytest.raises(StartupError, match="Docker engine"):
        await gw.start([CaptureChannel()])


async def test_docker_down_while_running_dead_letters_then_retry_answers(
    gateway, docker_client, monkeypatch: pytest.MonkeyPatch
) -> None:
    channel: CaptureChannel = gateway.test_channel
    # The engine "disappears" under a running gateway: its next connection attempts fail for real.
    monkeypatch.setenv("DOCKER_HOST", f"unix://{gateway.data_dir}/no-docker.sock")
    gateway.backend._client = None
    await gateway.ingest(channel.message("hello?"))
    [(_, notice)] = await channel.wait_for(1)
    assert "could not answer after 2 attempts" in notice and "Docker" in notice
    [message] = await gateway.store.messages_for_chat("console:main")
    assert message.status == "dead"  # kept, not lost: a dead letter the owner can retry
    [(letter, kind, _, reason)] = await gateway.store.dead_letters()
    assert kind == "run" and "Docker" in reason
    # Docker comes back; the owner retries the dead letter from the main chat.
    monkeypatch.delenv("DOCKER_HOST")
    gateway.backend._client = None
    await gateway.ingest(channel.message(f"/retry {letter}"))
    sent = await channel.wait_for(3)
    assert sent[1][1] == f"dead letter #{letter} queued again"
    assert sent[2][1].startswith("echo: ") and "hello?" in sent[2][1]
    assert await gateway.store.dead_letters() == []


def test_missing_image_is_reported_with_the_fix(dirs, model_server, docker_client) -> None:
    config_dir, data_dir = dirs
    (config_dir / "config.toml").write_text('[sandbox]\nimage = "clawgate-does-not-exist:1"\n')
    done = subprocess.run(
        [".venv/bin/clawgate", "run"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode != 0
    assert "clawgate image build" in done.stderr


async def test_vault_down_means_no_sandbox_and_the_message_waits(gateway, docker_client) -> None:
    channel: CaptureChannel = gateway.test_channel
    await gateway.vault.stop()  # fail closed: no vault, no agent
    await gateway.ingest(channel.message("anyone?"))
    [(_, notice)] = await channel.wait_for(1)
    assert "vault" in notice
    assert containers(docker_client, gateway, "main") == []
    [message] = await gateway.store.messages_for_chat("console:main")
    assert message.status == "dead"  # kept as a dead letter, never run without the vault


async def test_vault_add_while_running_takes_effect_without_restart(
    dirs, model_server, sandbox_image, docker_client
) -> None:
    config_dir, data_dir = dirs
    channel = CaptureChannel()
    gw = Gateway(config_for(model_server, sandbox_image), config_dir, data_dir)
    await gw.start([channel])
    try:
        await gw.ingest(channel.message("before"))
        await channel.wait_for(1)
        assert model_server.requests[-1].headers.get("x-api-key") == "placeholder"
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "clawgate"),
            "vault",
            "add",
            "anthropic",
            "--host",
            model_server.host_port,
            "--preset",
            "anthropic",
            stdin=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await proc.communicate(REAL_KEY.encode())
        assert proc.returncode == 0 and b"reloaded" in err
        await gw.ingest(channel.message("after"))
        await channel.wait_for(2)
        assert model_server.requests[-1].headers["x-api-key"] == REAL_KEY
    finally:
        await gw.stop(grace_s=5)


async def test_main_chat_can_live_in_another_channel_and_move(dirs, model_server, sandbox_image) -> None:
    config_dir, data_dir = dirs
    tg = CaptureChannel(prefix="tg:")
    gw = Gateway(config_for(model_server, sandbox_image, top='main_chat = "tg:-5"'), config_dir, data_dir)
    await gw.start([tg])
    try:
        assert gw.registry.main is not None and gw.registry.main.chat_id == "tg:-5"
        await gw.ingest(tg.message("/chatid", chat_id="tg:-5", sender="tg:1"))
        assert (await tg.wait_for(1))[0] == ("tg:-5", "This chat's id: tg:-5")
        await gw.registry.follow_migration("tg:-5", "tg:-1005")  # the group became a supergroup
        assert gw.registry.main.chat_id == "tg:-1005" and gw.registry.for_chat("tg:-5") is None
    finally:
        await gw.stop(grace_s=5)
    assert [(g.folder, g.chat_id) for g in await _groups(data_dir)] == [("main", "tg:-1005")]


async def _groups(data_dir: Path) -> list:
    from gateway.store import Store

    store = await Store.open(data_dir / "clawgate.db")
    try:
        return await store.groups()
    finally:
        await store.close()
