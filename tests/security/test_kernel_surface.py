"""Attacks on the shared kernel from a hostile group's agent, on every tier (issue 11, break 6).

The hostile agent runs the probes of `tests.integration.probes` with its real shell tool. On
bwrap the seccomp filter of `groups.sandbox.seccomp` must answer exactly `SECCOMP_DENIED`; on
Docker the engine's default profile, and under gVisor its own kernel, must refuse at least the
calls that hand out kernel state shared with other groups or the host: the keyring, mounts,
bpf and module loading, and on the tiers that share the host kernel new namespaces too.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from pathlib import Path

import pytest

from gateway.app import Gateway
from groups.sandbox.bwrap import BWRAP_ENV
from tests.integration.bwrap_support import descendants
from tests.integration.probes import KEY_PLANT, KEY_STEAL, SECCOMP_DENIED, SYSCALL_PROBE, parse_probe
from tests.security.conftest import HOSTILE, MAIN_CHAT, Attacker, Tier

# Calls every tier must refuse (Docker >= 20.10 default profile; gVisor's own kernel).
ALWAYS_DENIED = ("add_key", "keyctl", "request_key", "mount", "fsopen", "bpf", "kexec_load", "init_module")
# Refused where the agent talks to the host kernel (docker, bwrap). Under gVisor a new user
# namespace is one the Sentry emulates: it grants nothing on the host kernel, so it may succeed.
HOST_KERNEL_DENIED = ("unshare", "clone_newuser", "setns")


def python(program: str, *args: str) -> str:
    """A shell command running `program` with python3 (a quoted heredoc: no shell expansion)."""
    return f"python3 - {' '.join(args)} <<'PROBE_EOF'\n{program}\nPROBE_EOF"


async def test_attacker_makes_the_system_calls_docker_denies(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    out = await attacker.shell(python(SYSCALL_PROBE))
    found = parse_probe(out)
    assert set(found) == set(SECCOMP_DENIED), out
    if tier.name == "bwrap":
        assert found == SECCOMP_DENIED, out
    for name in ALWAYS_DENIED + (HOST_KERNEL_DENIED if tier.name != "runsc" else ()):
        assert found[name] != "ok", (name, out)


async def test_attacker_leaves_a_key_in_the_kernel_keyring_for_another_group(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway
) -> None:
    """The hostile group plants a key and keeps it alive; the main group's sandbox looks for it."""
    secret = "planted-" + secrets.token_hex(8)
    planted = await attacker.shell(
        f"cat > /tmp/plant.py <<'PROBE_EOF'\n{KEY_PLANT}\nPROBE_EOF\n"
        f"python3 /tmp/plant.py {secret} > /tmp/plant.out 2>&1 &\n"
        "for i in $(seq 100); do grep -q planted /tmp/plant.out && break; sleep 0.1; done; cat /tmp/plant.out"
    )
    stolen = await attacker.shell(python(KEY_STEAL), chat=MAIN_CHAT)
    assert "planted" in planted, planted
    assert "STOLEN" not in stolen and secret not in stolen, stolen
    assert "search" in stolen, stolen


@pytest.mark.parametrize("tier", ["bwrap"], indirect=True)
async def test_attacker_reads_the_gateway_environment_through_bwrap(
    tier: Tier, attacker: Attacker, hostile_gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bwrap (and its pid 1 inside the sandbox) must not carry the gateway's environment."""
    token = "bot-token-" + secrets.token_hex(12)
    monkeypatch.setenv("CLAWGATE_TELEGRAM_BOT_TOKEN", token)  # set before the sandbox starts
    out = await attacker.shell("cat /proc/1/environ; tr '\\0' '\\n' < /proc/1/environ; echo probe-done")
    assert "probe-done" in out and token not in out, out
    live = hostile_gateway.pool.live[HOSTILE.folder]
    pid = live.sandbox.pid  # type: ignore[attr-defined]
    environ = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
    keys = {item.split(b"=", 1)[0].decode() for item in environ.split(b"\0") if item}
    assert token.encode() not in environ and keys <= set(BWRAP_ENV), keys
    tree = await asyncio.to_thread(descendants, pid)
    assert tree, "the sandbox has processes below bwrap"
    for child in tree:  # bwrap's pid 1 and everything in the sandbox, as the host sees them
        with contextlib.suppress(OSError):
            assert token.encode() not in await asyncio.to_thread(Path(f"/proc/{child}/environ").read_bytes)
