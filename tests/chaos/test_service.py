"""`clawgate run` as a service: signals, a stdin that is not a terminal, scripted runs that end honestly.

Each case runs the real `clawgate run` (real Docker, the real vault subprocess, the console
channel on a pipe or no console at all) and acts on it the way systemd, an operator or a
shell script does: SIGHUP after editing config.toml, SIGTERM to stop, stdin on /dev/null,
a script whose message only gets answered on a retry. The checks are on the host: exit
codes, what the gateway printed and logged, which processes and containers remain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
from pathlib import Path

from gateway.app import instance_id
from groups.sandbox.docker import LABEL_INSTANCE
from proxy.secrets import SecretStore
from tests.chaos.support import wait_ready
from tests.chaos.test_instance_and_orphans import alive, gone_within, vault_pid
from tests.docker_containers import labelled
from tests.e2e.test_console import write_config
from tests.e2e.test_crash_recovery import CLAWGATE, ROOT, start
from tests.fakes.model_server import FakeModelServer

# Long enough that a retry cannot fire by luck during the shutdown of a run that did not wait for it.
FAST_RETRY = "\n[retry]\nmax_attempts = {attempts}\nbase_delay_s = 4\nmax_delay_s = 8\n"


def setup(dirs, model_server: FakeModelServer, image: str, extra: str = "") -> tuple[Path, Path]:  # type: ignore[no-untyped-def]
    config_dir, data_dir = dirs
    write_config(config_dir, model_server, image, idle_s=600)
    if extra:
        with (config_dir / "config.toml").open("a") as f:
            f.write(extra)
    SecretStore(config_dir).add("anthropic", "sk-ant-svc", model_server.host_port, "x-api-key", "{value}")
    return config_dir, data_dir


def gateway_log(data_dir: Path) -> str:
    return (data_dir / "logs" / "gateway.log").read_text(errors="replace")


async def wait_for_log(data_dir: Path, needle: str, timeout: float = 30) -> str:
    for _ in range(int(timeout * 10)):
        text = gateway_log(data_dir)
        if needle in text:
            return text
        await asyncio.sleep(0.1)
    raise AssertionError(f"{needle!r} never appeared in gateway.log:\n{gateway_log(data_dir)[-3000:]}")


async def ask(proc: asyncio.subprocess.Process, text: str) -> bytes:
    assert proc.stdin and proc.stdout
    proc.stdin.write(text.encode() + b"\n")
    await proc.stdin.drain()
    return await asyncio.wait_for(proc.stdout.readline(), 90)


def containers(docker_client, data_dir: Path) -> list:  # type: ignore[no-untyped-def]
    labels = [f"{LABEL_INSTANCE}={instance_id(data_dir)}"]
    return labelled(docker_client, labels)


def transient_failures(server: FakeModelServer, count: int) -> None:
    """`count` 503s: the agent's own retries (3 tries a turn) see them, then the turn fails transiently."""
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "try later"}}
    server.responses.extend([(503, error)] * count)


async def stop(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


# -- SIGHUP ---------------------------------------------------------------------------------------


async def test_sighup_applies_a_valid_change_and_names_what_needs_a_restart(
    dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = setup(dirs, model_server, sandbox_image)
    proc = await start(dict(os.environ))
    try:
        await wait_ready(proc)
        assert (await ask(proc, "before")).startswith(b"Andy:")
        text = (
            (config_dir / "config.toml").read_text().replace("idle_timeout_s = 600", "idle_timeout_s = 300")
        )
        (config_dir / "config.toml").write_text(
            "context_messages = 7\n" + text + '[admin]\nusers = ["tg:42"]\n'
        )
        proc.send_signal(signal.SIGHUP)
        log = await wait_for_log(data_dir, "configuration reloaded")
        assert "configuration reloaded: applied admin.users, context_messages" in log
        assert "sandbox.idle_timeout_s changed: needs a restart" in log
        assert "context_messages changed: needs a restart" not in log
        assert proc.returncode is None and alive(proc.pid)
        reply = await ask(proc, "after the reload")
        assert reply.startswith(b"Andy:") and b"after the reload" in reply
    finally:
        await stop(proc)


async def test_sighup_with_an_invalid_config_keeps_running_unchanged(
    dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = setup(dirs, model_server, sandbox_image)
    proc = await start(dict(os.environ))
    try:
        await wait_ready(proc)
        good = (config_dir / "config.toml").read_text()
        (config_dir / "config.toml").write_text('context_messages = "lots"\n' + good)
        proc.send_signal(signal.SIGHUP)
        log = await wait_for_log(data_dir, "reload refused")
        assert "still running with the previous configuration" in log and "context_messages" in log
        assert "configuration reloaded" not in log
        reply = await ask(proc, "still here?")
        assert reply.startswith(b"Andy:") and b"still here?" in reply
        # a later good edit is picked up: the refused one left nothing half-applied
        (config_dir / "config.toml").write_text("context_messages = 3\n" + good)
        proc.send_signal(signal.SIGHUP)
        log = await wait_for_log(data_dir, "configuration reloaded")
        assert "applied context_messages" in log
    finally:
        await stop(proc)


# -- SIGTERM --------------------------------------------------------------------------------------


async def test_sigterm_stops_cleanly_exit_0_containers_and_vault_gone(
    dirs, model_server, sandbox_image, docker_client
) -> None:
    config_dir, data_dir = setup(dirs, model_server, sandbox_image)
    proc = await start(dict(os.environ))
    try:
        await wait_ready(proc)
        assert (await ask(proc, "zebra-quokka")).startswith(b"Andy:")
        assert containers(docker_client, data_dir), "the turn left no warm sandbox to stop"
        vault = vault_pid(data_dir)
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        assert containers(docker_client, data_dir) == []
        assert await gone_within(vault, 10)
        log = gateway_log(data_dir)
        assert f"config {config_dir}, data {data_dir}" in log and "channels console" in log
        assert re.search(r"turn group=main run=\d+ messages=1 duration=[\d.]+s outcome=ok", log), log
        assert "zebra-quokka" not in log  # the per-turn line carries no content
        assert "stopped clawgate" in log
    finally:
        await stop(proc)


# -- no terminal ----------------------------------------------------------------------------------


async def test_run_with_stdin_on_dev_null_is_a_daemon_until_sigterm(
    dirs, model_server, sandbox_image
) -> None:
    config_dir, data_dir = setup(dirs, model_server, sandbox_image)
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        "run",
        stdin=asyncio.subprocess.DEVNULL,  # what systemd gives a service
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=dict(os.environ),
    )
    try:
        await wait_ready(proc)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), 5)
        assert proc.returncode is None, "clawgate run ended although nobody asked it to stop"
        status = await asyncio.create_subprocess_exec(
            CLAWGATE, "status", stdout=asyncio.subprocess.PIPE, cwd=ROOT, env=dict(os.environ)
        )
        out, _ = await status.communicate()
        assert status.returncode == 0 and out.startswith(b"up "), out
        assert "console daemon" in gateway_log(data_dir)
        # a SIGHUP in daemon mode must not see the console it switched off as a config change
        proc.send_signal(signal.SIGHUP)
        log = await wait_for_log(data_dir, "configuration reloaded")
        assert "console.enabled changed" not in log
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 60) == 0
        status = await asyncio.create_subprocess_exec(
            CLAWGATE, "status", stdout=asyncio.subprocess.DEVNULL, cwd=ROOT, env=dict(os.environ)
        )
        assert await status.wait() == 1  # not running any more, and `status` says so by its exit code
    finally:
        await stop(proc)


# -- scripted console -----------------------------------------------------------------------------


async def scripted(stdin: bytes) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLAWGATE,
        "run",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=dict(os.environ),
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), 180)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_scripted_run_waits_for_the_retry_of_a_transient_failure(
    dirs, model_server, sandbox_image
) -> None:
    setup(dirs, model_server, sandbox_image, FAST_RETRY.format(attempts=3))
    # Two whole turns fail (a lane woken during a turn may re-run at once, so one is not enough to
    # be sure a timed retry is pending); the retry the policy schedules after them is answered.
    transient_failures(model_server, 6)
    code, out, err = await scripted(b"are you there?\n")
    assert code == 0, err
    assert "Andy: echo:" in out and "are you there?" in out, (out, err)
    assert "unanswered" not in err


async def test_scripted_run_exits_nonzero_naming_what_stayed_unanswered(
    dirs, model_server, sandbox_image
) -> None:
    setup(dirs, model_server, sandbox_image, FAST_RETRY.format(attempts=2))
    transient_failures(model_server, 100)  # every attempt fails
    code, out, err = await scripted(b"anyone?\n")
    assert code == 1, (out, err)
    assert "clawgate: unanswered: dead letter #1 (run main)" in err, err
    assert "could not answer after 2 attempts" in out  # the chat was told, too
