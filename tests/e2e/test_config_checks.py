"""Configuration mistakes that used to pass silently stop or warn at `clawgate run`.

The real `clawgate run` (console on a pipe, real Docker, the real vault) and the real
`clawgate doctor` over real config files. Before issue 12 each of these started "ready"
and then failed quietly: a main chat on a disabled channel stored messages nobody
answered, a second group outside the model key's scope got 401 on every call, a local
model server missing from `allow_private_upstreams` was refused at the first call, and a
stale image ran an older agent.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from core.paths import DATABASE
from gateway.cli import main
from gateway.control import SOCKET_NAME
from groups.sandbox.image import AGENT_LABEL
from proxy.secrets import SecretStore
from tests.chaos.support import drain_stderr
from tests.e2e.test_console import clawgate, read_reply, write_config
from tests.e2e.test_crash_recovery import start


async def test_main_chat_on_a_channel_that_is_not_enabled_stops_run(dirs, model_server) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, "unused-image", idle_s=60)
    text = (config_dir / "config.toml").read_text()
    (config_dir / "config.toml").write_text('main_chat = "tg:-100123"\n' + text)
    code, _, err = await clawgate("run", stdin=b"hello\n")
    assert code != 0
    assert "main_chat = 'tg:-100123'" in err and "[telegram] enabled = true" in err
    assert "Traceback" not in err
    assert not (data_dir / DATABASE).exists()  # refused before anything was created


async def test_console_main_chat_that_the_console_does_not_type_into_stops_run(dirs, model_server) -> None:
    config_dir, _ = dirs
    write_config(config_dir, model_server, "unused-image", idle_s=60)
    text = (config_dir / "config.toml").read_text()
    (config_dir / "config.toml").write_text('main_chat = "console:owner"\n' + text)
    code, _, err = await clawgate("run", stdin=b"hello\n")
    assert code != 0 and "console:main" in err and "main_chat" in err


async def test_local_model_missing_from_allow_private_upstreams_stops_run(dirs, model_server) -> None:
    config_dir, _ = dirs
    write_config(config_dir, model_server, "unused-image", idle_s=60)
    text = (config_dir / "config.toml").read_text()
    (config_dir / "config.toml").write_text(text.replace(f'"{model_server.host_port}"', ""))
    code, _, err = await clawgate("run", stdin=b"hello\n")
    assert code != 0
    assert f'allow_private_upstreams = ["{model_server.host_port}"]' in err and "Traceback" not in err


async def test_main_outside_the_model_key_scope_stops_run(dirs, model_server, sandbox_image) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, sandbox_image, idle_s=60)
    SecretStore(config_dir).add(
        "anthropic", "sk-ant-scope", model_server.host_port, "x-api-key", "{value}", groups=["team"]
    )
    code, _, err = await clawgate("run", stdin=b"hello\n")
    assert code != 0
    assert "group 'main' is not in the scope of the model key anthropic" in err
    assert "clawgate vault scope anthropic --groups team,main" in err
    assert "sk-ant-scope" not in err


@pytest.fixture
def stale_image(docker_client, sandbox_image) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The sandbox image with an older agent fingerprint: what a checkout update leaves behind."""
    tag = f"{sandbox_image}-stale"
    dockerfile = f"FROM {sandbox_image}\nLABEL {AGENT_LABEL}=an-older-agent\n"
    docker_client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    yield tag
    docker_client.images.remove(tag, noprune=True)


async def test_second_group_outside_the_model_key_and_a_stale_image_warn_and_main_is_told_once(
    dirs, model_server, stale_image
) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, stale_image, idle_s=60)
    SecretStore(config_dir).add("anthropic", "sk-ant-warn", model_server.host_port, "x-api-key", "{value}")
    code, _, err = await clawgate("groups", "register", "tg:-1001", "team")
    assert code == 0, err
    proc = await start(dict(os.environ))
    assert proc.stdin and proc.stdout and proc.stderr
    try:
        lines = []
        while not lines or b"ready" not in lines[-1]:
            lines.append(await asyncio.wait_for(proc.stderr.readline(), 90))
            assert lines[-1], b"".join(lines)
        said = b"".join(lines).decode()
        assert "warning: group 'team' is not in the scope of the model key anthropic" in said
        assert "clawgate vault scope anthropic --groups main,team" in said
        assert f"warning: image {stale_image} does not contain this checkout's agent runtime" in said
        assert "clawgate image build" in said
        drain_stderr(proc)

        # What the vault sends when team's request leaves without the key
        # (tests/vault/test_vault_unscoped_notice_e2e.py), twice: the main chat hears it once.
        op = {"op": "unscoped", "group": "team", "secret": "anthropic", "host": "127.0.0.1", "refused": False}
        for _ in range(2):
            reader, writer = await asyncio.open_unix_connection(str(data_dir / "run" / SOCKET_NAME))
            writer.write(json.dumps(op).encode() + b"\n")
            await writer.drain()
            assert json.loads(await asyncio.wait_for(reader.readline(), 10)) == {"ok": True}
            writer.close()
        notice = await read_reply(proc.stdout)
        assert "group team sent a request to 127.0.0.1" in notice
        assert "clawgate vault scope anthropic --groups main,team" in notice
        proc.stdin.write(b"hello\n")  # the next line on stdout is the answer, not a second notice
        await proc.stdin.drain()
        assert (await read_reply(proc.stdout)).startswith("Andy: echo: ")
    finally:
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), 60)


def test_doctor_reports_the_configured_channels_and_the_same_findings_as_run(dirs, model_server) -> None:
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, "unused-image", idle_s=60)
    text = (config_dir / "config.toml").read_text()
    (config_dir / "config.toml").write_text(
        'main_chat = "tg:-100123"\n'
        + text
        + '[telegram]\nenabled = true\ntoken = "123:abc"\n[console]\nenabled = false\n'
    )
    SecretStore(config_dir).add(
        "anthropic", "sk-ant-doc", model_server.host_port, "x-api-key", "{value}", groups=["team"]
    )
    result = CliRunner().invoke(main, ["doctor"])
    out = result.output
    assert "channels: telegram (polling); main chat tg:-100123" in out
    assert "channels: console" not in out
    assert "group 'main' is not in the scope of the model key anthropic" in out, out
    assert "(error at `clawgate run`)" in out
    assert result.exit_code == 1
    assert not (data_dir / DATABASE).exists()


def test_doctor_says_whether_the_image_each_runtime_needs_exists(dirs, model_server, sandbox_image) -> None:
    """The default runtime's image and the claude one a group chose are both checked, with the fix."""
    import sqlite3

    from core.models import Group
    from gateway.store import Store

    config_dir, data_dir = dirs
    write_config(config_dir, model_server, sandbox_image, idle_s=60)
    with (config_dir / "config.toml").open("a") as config:
        config.write('[agent]\nclaude_image = "clawgate-sandbox:no-such-claude-image"\n')

    result = CliRunner().invoke(main, ["doctor"])
    assert f"images exist and are current: {sandbox_image} (builtin)" in result.output, result.output
    assert "no-such-claude-image" not in result.output  # nobody runs claude yet

    async def register() -> None:
        store = await Store.open(data_dir / DATABASE)
        try:
            await store.register_group(Group("team", "tg:-1", "team", "@Andy", runtime="claude"))
        finally:
            await store.close()

    data_dir.mkdir(parents=True, exist_ok=True)
    asyncio.run(register())
    with sqlite3.connect(data_dir / DATABASE) as db:
        assert db.execute("SELECT runtime FROM groups WHERE folder = 'team'").fetchone() == ("claude",)
    result = CliRunner().invoke(main, ["doctor"])
    assert "image clawgate-sandbox:no-such-claude-image of the claude runtime does not exist" in result.output
    assert "clawgate image build --runtime claude" in result.output
    assert result.exit_code == 1
