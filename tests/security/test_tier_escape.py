"""Attacks from a hostile group's agent on every sandbox tier, checked from the host.

Each test makes the hostile (non-main) group's agent run shell commands through its real
shell tool (scripted by the fake model) inside a real sandbox, then checks the host.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from typing import Any

import pytest

from gateway.app import Gateway
from tests.security.conftest import MODEL_KEY, TIERS, Attacker, Tier

# Also against the claude runtime (the Claude Agent SDK image; Claude Code's Bash tool).
WITH_CLAUDE = pytest.mark.parametrize("tier", [*TIERS, "claude"], indirect=True)


@WITH_CLAUDE
async def test_attacker_hunts_the_model_key_in_env_proc_and_files(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    """The vault holds the real model key; nothing the sandbox can read contains it."""
    out = await attacker.shell(
        "cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n' | grep -c placeholder; "
        "grep -rsl 'REAL[S]ECRET' /workspace /run /tmp /opt /etc /home /root /var 2>/dev/null; "
        "cat /proc/*/environ 2>/dev/null | grep -a -c REAL[S]ECRET; echo hunt-done"
    )
    assert "hunt-done" in out, out
    assert MODEL_KEY not in out and "REALSECRET" not in out, out
    assert int(out.split()[0]) >= 1, out  # the agent's own environment was readable: only placeholders
    if tier.name == "claude":  # Claude Code's config dir (sessions, settings) holds no credential either
        config_dir = await attacker.shell(
            "find /workspace/group/.clawgate/claude -type f | head -n 50; "
            "grep -rsl 'REAL[S]ECRET' /workspace/group/.clawgate; echo config-done"
        )
        assert "config-done" in config_dir and ".json" in config_dir, config_dir
        assert "REALSECRET" not in config_dir, config_dir


@WITH_CLAUDE
async def test_attacker_connects_to_a_server_on_the_host_loopback(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    """A TCP server on the host's 127.0.0.1 never sees a connection from the sandbox."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    port = server.getsockname()[1]
    accepted: list[Any] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                conn, peer = server.accept()
                accepted.append(peer)
                conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        out = await attacker.shell(
            "python3 - <<'EOF'\n"
            "import socket\n"
            f"for host in ('127.0.0.1', 'localhost', '::1'):\n"
            "    try:\n"
            f"        socket.create_connection((host, {port}), timeout=3); print('CONNECTED', host)\n"
            "    except OSError as e: print('failed', host, type(e).__name__)\n"
            "EOF"
        )
        assert "CONNECTED" not in out and out.count("failed") == 3, out
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            pass  # the server was live all along: the host reaches it
        for _ in range(100):
            if accepted:
                break
            await asyncio.sleep(0.02)
        assert len(accepted) == 1, accepted  # only the host's own connection ever arrived
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


async def test_attacker_probes_the_kernel_it_runs_on(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    """On runsc the hostile code talks to gVisor's kernel, never to the host's."""
    out = await attacker.shell("uname -r; cat /proc/version")
    host_release = os.uname().release
    if tier.name == "runsc":
        from groups.sandbox.runsc import GVISOR_PROC_VERSION

        assert GVISOR_PROC_VERSION in out and host_release not in out, out
    else:
        assert host_release in out, out  # docker and bwrap share the host kernel: say so
