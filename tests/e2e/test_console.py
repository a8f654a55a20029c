"""`clawgate run` as a user runs it: the console channel on a pipe, real Docker, real vault.

The model is a scripted Anthropic-compatible server on loopback; the real key lives
only in the vault, so the server seeing it proves injection, and the container not
having it proves isolation.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import pytest

from gateway.app import instance_id
from groups.sandbox.docker import LABEL_GROUP, LABEL_INSTANCE
from tests.docker_containers import labelled
from tests.fakes.model_server import FakeModelServer

ROOT = Path(__file__).resolve().parents[2]
CLAWGATE = str(Path(sys.executable).parent / "clawgate")
REAL_KEY = "sk-ant-api03-CONSOLEREAL-" + "k" * 24


def write_config(config_dir: Path, model: FakeModelServer, image: str, idle_s: float) -> None:
    (config_dir / "config.toml").write_text(
        f"""
assistant_name = "Andy"
[model]
provider = "anthropic"
name = "fake-model"
base_url = "{model.url}"
[sandbox]
image = "{image}"
idle_timeout_s = {idle_s}
[vault]
allow_private_upstreams = ["{model.host_port}"]
"""
    )


async def clawgate(*args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def main_containers(docker_client, data_dir: Path) -> list:  # type: ignore[no-untyped-def]
    labels = [f"{LABEL_INSTANCE}={instance_id(data_dir)}", f"{LABEL_GROUP}=main"]
    return labelled(docker_client, labels)


async def read_reply(stdout: asyncio.StreamReader, timeout: float = 60) -> str:
    line = await asyncio.wait_for(stdout.readline(), timeout)
    assert line, "clawgate exited before replying"
    return line.decode().rstrip("\n")


async def test_console_conversation_end_to_end(dirs, model_server, sandbox_image, docker_client) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, sandbox_image, idle_s=4)
    code, out, err = await clawgate(
        "vault",
        "add",
        "anthropic",
        "--host",
        model_server.host_port,
        "--preset",
        "anthropic",
        stdin=REAL_KEY.encode() + b"\n",
    )
    assert code == 0, err
    code, out, _ = await clawgate("vault", "list")
    assert "anthropic" in out and REAL_KEY not in out

    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=os.environ.copy(),
    )
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write(b"hello\n")
        await proc.stdin.drain()
        reply = await read_reply(proc.stdout)
        assert reply.startswith("Andy: echo: ") and "hello" in reply
        assert model_server.requests[-1].headers["x-api-key"] == REAL_KEY

        [container] = main_containers(docker_client, data_dir)
        inspect = json.dumps(docker_client.api.inspect_container(container.id))
        assert REAL_KEY not in inspect and "placeholder" in inspect
        env_dump = container.exec_run(["sh", "-c", "cat /proc/1/environ /proc/1/cmdline"]).output
        assert b"CONSOLEREAL" not in env_dump and b"placeholder" in env_dump
        files = container.exec_run(
            ["sh", "-c", "grep -rsl 'CONSOLE[R]EAL' /workspace /run /tmp /opt /etc; true"]
        ).output
        assert files.strip() == b""

        proc.stdin.write(b"second message\n")
        await proc.stdin.drain()
        assert "second message" in await read_reply(proc.stdout)
        assert [c.id for c in main_containers(docker_client, data_dir)] == [container.id]

        deadline = time.monotonic() + 30
        while main_containers(docker_client, data_dir) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert main_containers(docker_client, data_dir) == [], "idle container was not stopped"
    finally:
        proc.stdin.close()
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert REAL_KEY not in (data_dir / "logs" / "gateway.log").read_text()


async def test_console_conversation_on_the_claude_runtime(
    dirs, model_server, claude_image, docker_client
) -> None:
    """`clawgate run` with `[agent] runtime = "claude"`: Claude Code answers, through the vault."""
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, claude_image.removesuffix("-claude"), idle_s=60)
    with (config_dir / "config.toml").open("a") as config:
        config.write(f'[agent]\nruntime = "claude"\nclaude_image = "{claude_image}"\n')
    code, _, err = await clawgate(
        "vault",
        "add",
        "anthropic",
        "--host",
        model_server.host_port,
        "--preset",
        "anthropic",
        stdin=REAL_KEY.encode() + b"\n",
    )
    assert code == 0, err
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=os.environ.copy(),
    )
    assert proc.stdin and proc.stdout
    try:
        proc.stdin.write(b"hello claude\n")
        await proc.stdin.drain()
        reply = await read_reply(proc.stdout, timeout=180)
        assert reply.startswith("Andy: echo: ") and "hello claude" in reply, reply
        assert model_server.requests, "the model never heard from Claude Code"
        assert all(r.headers["x-api-key"] == REAL_KEY for r in model_server.requests)
        assert all(
            r.path == "/v1/messages?beta=true" and r.body.get("stream") is True for r in model_server.requests
        )
        [container] = main_containers(docker_client, data_dir)
        assert claude_image in container.image.tags
        env_dump = container.exec_run(["sh", "-c", "cat /proc/*/environ; true"]).output
        assert b"CONSOLEREAL" not in env_dump and b"ANTHROPIC_API_KEY=placeholder" in env_dump
    finally:
        proc.stdin.close()
        code = await asyncio.wait_for(proc.wait(), 60)
    assert code == 0
    assert REAL_KEY not in (data_dir / "logs" / "gateway.log").read_text()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ('[sandbox]\nbackend = "podman"\n', "sandbox.backend"),
        ("[model\nname = 1\n", "not valid TOML"),
        ('[vault]\nallow_private_upstreams = ["nope"]\n', "vault.allow_private_upstreams"),
    ],
)
async def test_bad_config_stops_startup_naming_the_key(dirs, config: str, expected: str) -> None:
    config_dir, _ = dirs
    (config_dir / "config.toml").write_text(config)
    code, out, err = await clawgate("run", stdin=b"hello\n")
    assert code != 0
    assert expected in err
    assert "Traceback" not in err


async def test_vault_add_never_takes_the_value_from_argv(dirs) -> None:
    code, _, err = await clawgate("vault", "add", "x", "--host", "api.example.com", "sk-ant-inargv")
    assert code != 0
    code, out, _ = await clawgate("vault", "list")
    assert "sk-ant-inargv" not in out


async def test_sigterm_stops_intake_finishes_and_exits_zero(
    dirs, model_server, sandbox_image, docker_client
) -> None:
    import signal

    config_dir, data_dir = dirs
    write_config(config_dir, model_server, sandbox_image, idle_s=600)
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(b"hello\n")
    await proc.stdin.drain()
    assert "hello" in await read_reply(proc.stdout)
    assert len(main_containers(docker_client, data_dir)) == 1
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(proc.wait(), 60) == 0
    assert main_containers(docker_client, data_dir) == []  # containers and the vault are gone
    assert not (data_dir / "run" / "main" / "vault.sock").exists()
