"""The runtime as a real subprocess (``python -m groups.agent``) against loopback fakes.

Wiring mirrors the container: HTTP(S)_PROXY points at the runtime's own egress relay, the
relay forwards to a unix "vault" socket, and the fake vault pipes bytes to the fake model.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from agent_fakes import (
    FakeIPCServer,
    FakeModelServer,
    FakeVault,
    anthropic_text,
    anthropic_tool,
    free_port,
    openai_text,
    openai_tool,
)

REPO = Path(__file__).resolve().parents[2]
PROMPT = '<messages>\n<message sender="eve">write hello.txt</message>\n</messages>'


def _env(
    sock_dir: Path, group: Path, glob: Path, provider: str, base_url: str, **extra: str
) -> dict[str, str]:
    port = free_port()
    proxy = f"http://127.0.0.1:{port}"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(REPO),
        "PYTHONSAFEPATH": "1",  # as in the image: cwd (agent-writable) is not on sys.path
        "HOME": str(group),
        "CLAWGATE_IPC_SOCKET": str(sock_dir / "ipc.sock"),
        "CLAWGATE_VAULT_SOCKET": str(sock_dir / "vault.sock"),
        "CLAWGATE_PROXY_PORT": str(port),
        "CLAWGATE_MODEL_PROVIDER": provider,
        "CLAWGATE_MODEL": "test-model",
        "CLAWGATE_MODEL_BASE_URL": base_url,
        "CLAWGATE_MODEL_TIMEOUT": "10",
        "ANTHROPIC_API_KEY": "placeholder",
        "OPENAI_API_KEY": "placeholder",
        "CLAWGATE_ASSISTANT_NAME": "Andy",
        "CLAWGATE_GROUP": "friends",
        "CLAWGATE_IS_MAIN": "0",
        "CLAWGATE_GROUP_DIR": str(group),
        "CLAWGATE_GLOBAL_DIR": str(glob),
        "HTTPS_PROXY": proxy,
        "HTTP_PROXY": proxy,
        "https_proxy": proxy,
        "http_proxy": proxy,
        "NO_PROXY": "",
    }
    env.update(extra)
    return env


def _run(env: dict[str, str], cwd: Path, python: str = sys.executable) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [python, "-m", "groups.agent"], env=env, cwd=cwd, capture_output=True, text=True, timeout=20
    )


def _interpreters() -> list[Any]:
    params: list[Any] = [pytest.param(sys.executable, id="py-current")]
    py311 = shutil.which("python3.11")
    if py311:
        params.append(pytest.param(py311, id="py3.11"))
    return params


@pytest.mark.parametrize("python", _interpreters())
def test_anthropic_turn_end_to_end_and_restart(
    sock_dir: Path, group_dirs: tuple[Path, Path], python: str
) -> None:
    group, glob = group_dirs
    model = FakeModelServer(
        [
            anthropic_tool("toolu_1", "write_file", {"path": "hello.txt", "content": "hi"}),
            anthropic_tool("toolu_2", "send_message", {"text": "halfway"}),
            anthropic_text("Done."),
        ]
    )
    vault = FakeVault(str(sock_dir / "vault.sock"), model.port)
    ipc = FakeIPCServer(str(sock_dir / "ipc.sock"), [(7, PROMPT)])
    env = _env(sock_dir, group, glob, "anthropic", model.url)
    try:
        proc = _run(env, group, python)
        assert proc.returncode == 0, proc.stderr
        assert ipc.methods() == [
            "next_messages",
            "received",
            "send_message",
            "turn_done",
            "next_messages",
        ]
        assert ipc.by_method("received") == [{"run_id": 7}]
        # three model calls; this server reports no token counts: the agent's own count goes to
        # its log only (the vault meters spend), never to the gateway
        assert '"calls": 3' in proc.stderr and '"model": "test-model"' in proc.stderr
        assert ipc.by_method("send_message") == [{"text": "halfway"}]
        assert ipc.by_method("turn_done") == [{"run_id": 7, "text": "Done.", "error": None}]
        assert (group / "hello.txt").read_text() == "hi"
        assert vault.connections >= 1
        first = model.requests[0]
        assert first["raw_path"] == f"{model.url}/v1/messages"  # absolute-form: it came via the proxy
        assert first["headers"]["x-api-key"] == "placeholder"
        assert (group / ".clawgate" / "history.json").exists()

        # restart: a new container process must see the previous turn
        (sock_dir / "ipc.sock").unlink()
        model.script = [anthropic_text("Second.")]
        ipc2 = FakeIPCServer(str(sock_dir / "ipc.sock"), [(8, "again")])
        proc = _run(env, group, python)
        assert proc.returncode == 0, proc.stderr
        assert ipc2.by_method("turn_done") == [{"run_id": 8, "text": "Second.", "error": None}]
        msgs = model.requests[-1]["body"]["messages"]
        assert msgs[0] == {"role": "user", "content": PROMPT}
        assert msgs[-1] == {
            "role": "user",
            "content": [{"type": "text", "text": "again", "cache_control": {"type": "ephemeral"}}],
        }
        assert len(msgs) == 7  # 6 from the first turn (2 tool round trips) + the new prompt
    finally:
        model.close()
        vault.close()


def test_openai_turn_end_to_end(sock_dir: Path, group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    model = FakeModelServer(
        [openai_tool("call_1", "shell", {"command": "echo hi > out.txt"}), openai_text("Shell ran.")]
    )
    vault = FakeVault(str(sock_dir / "vault.sock"), model.port)
    ipc = FakeIPCServer(str(sock_dir / "ipc.sock"), [(1, PROMPT)])
    try:
        proc = _run(_env(sock_dir, group, glob, "openai", model.url + "/v1"), group)
        assert proc.returncode == 0, proc.stderr
        assert ipc.by_method("turn_done") == [{"run_id": 1, "text": "Shell ran.", "error": None}]
        assert (group / "out.txt").read_text() == "hi\n"
        assert model.requests[0]["raw_path"] == f"{model.url}/v1/chat/completions"
        assert model.requests[0]["headers"]["authorization"] == "Bearer placeholder"
        tool_msg = model.requests[1]["body"]["messages"][-1]
        assert tool_msg["role"] == "tool" and "[exit code 0]" in tool_msg["content"]
    finally:
        model.close()
        vault.close()


@pytest.mark.parametrize("vault_up", [True, False], ids=["model-down", "vault-missing"])
def test_unreachable_model_reports_short_error_and_keeps_serving(
    sock_dir: Path, group_dirs: tuple[Path, Path], vault_up: bool
) -> None:
    group, glob = group_dirs
    dead_port = free_port()
    vault = FakeVault(str(sock_dir / "vault.sock"), dead_port) if vault_up else None
    ipc = FakeIPCServer(str(sock_dir / "ipc.sock"), [(3, PROMPT), (4, "still there?")])
    try:
        proc = _run(_env(sock_dir, group, glob, "anthropic", f"http://127.0.0.1:{dead_port}"), group)
    finally:
        if vault:
            vault.close()
    assert proc.returncode == 0, proc.stderr
    done = ipc.by_method("turn_done")
    assert [d["run_id"] for d in done] == [3, 4]  # the loop survived the first failure
    for d in done:
        assert d["text"] is None
        assert d["error"].startswith("model unreachable: "), d
        assert len(d["error"]) < 200 and "Traceback" not in d["error"] and "\n" not in d["error"]
    assert "Traceback" not in proc.stderr


def test_bad_config_is_fatal_with_named_key(sock_dir: Path, group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    env = _env(sock_dir, group, glob, "bogus", "http://127.0.0.1:1")
    proc = _run(env, group)
    assert proc.returncode == 2
    assert "CLAWGATE_MODEL_PROVIDER" in proc.stderr


def test_sigterm_while_waiting_exits_zero(sock_dir: Path, group_dirs: tuple[Path, Path]) -> None:
    group, glob = group_dirs
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_dir / "ipc.sock"))
    srv.listen(1)
    env = _env(sock_dir, group, glob, "anthropic", "http://127.0.0.1:1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "groups.agent"],
        env=env,
        cwd=group,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        srv.settimeout(10)
        conn, _ = srv.accept()
        conn.settimeout(10)
        assert b'"method": "next_messages"' in conn.recv(4096)  # now blocked waiting for work
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
        srv.close()
