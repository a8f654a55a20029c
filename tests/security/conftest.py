"""Tier fixtures: run one attack against every sandbox tier (docker, runsc, bwrap).

An attack test asks for `tier` and runs once per tier, as `test_x[docker]`, `test_x[runsc]`,
`test_x[bwrap]`. A tier that is not usable here skips locally and FAILS when
CLAWGATE_REQUIRE_DOCKER=1 (CI), like the other Docker/bwrap tests.

Fixtures
- `tier` -> `Tier`: `.name` ("docker" | "runsc" | "bwrap"), `.backend` and `.runtime` (the
  `[sandbox]` keys), `.image`, and
    `.config(model, sandbox="", extra="", top="", idle=30)` -> a gateway `Config` for this tier
        (`sandbox` = more `[sandbox]` lines, `extra` = more tables, `top` = top-level keys);
    `.config_toml(...)` -> the same as TOML text (to write a config.toml for a subprocess);
    `.prepare(data_dir)` -> make a data dir usable by this tier (links the bwrap rootfs);
    `.make_backend(data_dir)` -> the `SandboxBackend` the gateway would use (direct sandbox tests).
  Only some tiers: `@pytest.mark.parametrize("tier", ["docker", "runsc"], indirect=True)`.
  The extra tier "claude" (docker/runc with `[agent] runtime = "claude"`, the Claude Agent SDK
  image) is opt-in the same way: `Attacker.shell` then scripts Claude Code's `Bash` tool.
- `hostile_gateway` (async) -> a started `Gateway` on `tier`: fake model on loopback (the
  `model_server` fixture), a fake model key in the real vault, a `CaptureChannel` as
  `gateway.test_channel`, and a registered non-main group HOSTILE (folder "hostile", chat
  "console:hostile", no trigger needed). Stopped afterwards.
- `attacker` -> `Attacker`: `await attacker.shell("cmd")` makes the hostile group's agent run
  `cmd` with its shell tool (the fake model scripts the tool call) inside the real sandbox and
  returns the tool's output, exactly as the agent reported it back to the model.
  `await attacker.shell("cmd", chat=MAIN_CHAT)` attacks from the main group instead.

Under runsc (Debian's runsc 20221219), coreutils `ls` and `stat` fail with "Invalid argument"
(gVisor rejects their statx flag AT_NO_AUTOMOUNT): write attack scripts with `find`, `test`,
`cat` or Python instead. A failing `ls` would make a "cannot see it" check pass for nothing.

Writing your own gateway: `tier.prepare(data_dir)` then `Gateway(tier.config(model_server), …)`;
`add_model_key(config_dir, model_server)` stores the fake model key like `hostile_gateway` does.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from core.config import Config, parse
from core.models import Group
from gateway.app import Gateway
from groups.sandbox.base import SandboxBackend
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.integration.bwrap_support import bwrap_rootfs, link_rootfs
from tests.integration.runsc_support import require_runsc
from tests.waits import drained

__all__ = ["bwrap_rootfs"]  # a session fixture the bwrap tier pulls in by name

TIERS = ("docker", "runsc", "bwrap")
MODEL_KEY = "sk-ant-api03-REALSECRET-" + "s" * 20  # the vault's copy; never inside a sandbox
HOSTILE = Group("hostile", "console:hostile", "hostile", "@Andy", requires_trigger=False)
MAIN_CHAT = "console:main"


@dataclass(frozen=True)
class Tier:
    name: str
    backend: str
    runtime: str
    image: str
    rootfs: Path | None = None  # bwrap only: the session's exported image filesystem
    claude_image: str | None = None  # the claude tier: the agent is the Claude Agent SDK

    def config_toml(
        self, model: FakeModelServer, sandbox: str = "", extra: str = "", top: str = "", idle: float = 30
    ) -> str:
        return f"""
{top}
[model]
base_url = "{model.url}"
name = "fake-model"
[sandbox]
backend = "{self.backend}"
runtime = "{self.runtime}"
image = "{self.image}"
idle_timeout_s = {idle}
max_containers = 3
memory_mb = 256
{sandbox}
[vault]
allow_private_upstreams = ["{model.host_port}"]
[retry]
max_attempts = 2
base_delay_s = 0.05
{self._agent_toml()}
{extra}
"""

    def _agent_toml(self) -> str:
        if self.claude_image is None:
            return ""
        return f'[agent]\nruntime = "claude"\nclaude_image = "{self.claude_image}"\n'

    def config(
        self, model: FakeModelServer, sandbox: str = "", extra: str = "", top: str = "", idle: float = 30
    ) -> Config:
        return parse(self.config_toml(model, sandbox, extra, top, idle), Path(f"{self.name}.toml"))

    def prepare(self, data_dir: Path) -> None:
        if self.rootfs is not None:
            link_rootfs(data_dir, self.rootfs)

    def make_backend(self, data_dir: Path, max_containers: int = 3) -> SandboxBackend:
        if self.backend == "bwrap":
            from groups.sandbox.bwrap import BwrapBackend

            self.prepare(data_dir)
            return BwrapBackend(max_containers, data_dir)
        from groups.sandbox.docker import DockerBackend

        return DockerBackend(max_containers, self.runtime)


@pytest.fixture(params=TIERS)
def tier(request: pytest.FixtureRequest, docker_client: Any, sandbox_image: str) -> Tier:
    name = request.param
    if name == "bwrap":
        return Tier("bwrap", "bwrap", "runc", sandbox_image, request.getfixturevalue("bwrap_rootfs"))
    if name == "claude":
        return Tier(
            "claude", "docker", "runc", sandbox_image, claude_image=request.getfixturevalue("claude_image")
        )
    if name == "runsc":
        require_runsc(docker_client, sandbox_image)
        return Tier("runsc", "docker", "runsc", sandbox_image)
    assert name == "docker", name
    return Tier("docker", "docker", "runc", sandbox_image)


def add_model_key(config_dir: Path, model: FakeModelServer) -> None:
    """The model key for every group: the attacker's group must get answers to attack from."""
    secrets = SecretStore(config_dir)
    secrets.add("anthropic", MODEL_KEY, model.host_port, "x-api-key", "{value}", groups=("*",))


@pytest.fixture
async def hostile_gateway(
    tier: Tier, dirs: tuple[Path, Path], model_server: FakeModelServer
) -> AsyncIterator[Gateway]:
    config_dir, data_dir = dirs
    tier.prepare(data_dir)
    add_model_key(config_dir, model_server)
    async with with_hostile_group(tier.config(model_server), config_dir, data_dir) as gateway:
        yield gateway


@asynccontextmanager
async def with_hostile_group(config: Config, config_dir: Path, data_dir: Path) -> AsyncIterator[Gateway]:
    """A started gateway (a capture channel as its only channel) with the attacker's group registered."""
    channel = CaptureChannel()
    gateway = Gateway(config, config_dir, data_dir)
    await gateway.start([channel])
    await gateway.registry.register(HOSTILE)
    gateway.test_channel = channel  # type: ignore[attr-defined]
    try:
        yield gateway
    finally:
        await gateway.stop(grace_s=5)


def tool_result(body: dict[str, Any], tool_id: str) -> str | None:
    """The result the agent reported for tool call `tool_id` in this model request, if any."""
    for message in body.get("messages") or []:
        content = message.get("content")
        if not isinstance(content, list):
            continue
        for block in content:
            if isinstance(block, dict) and block.get("tool_use_id") == tool_id:
                inner = block.get("content")
                if isinstance(inner, list):
                    return "".join(b.get("text", "") for b in inner if isinstance(b, dict))
                return str(inner)
    return None


class Attacker:
    """Drives a group's agent through the fake model; each call is one real shell tool call."""

    def __init__(self, gateway: Gateway, model: FakeModelServer) -> None:
        self.gateway = gateway
        self.model = model
        self._ids = itertools.count(1)

    async def shell(self, command: str, chat: str = HOSTILE.chat_id, timeout_s: int = 120) -> str:
        """Run `command` with the agent's shell tool in `chat`'s sandbox; its output, `[exit code N]` last."""
        tool_id = f"toolu_attack_{next(self._ids)}"
        if self.gateway.config.agent.runtime == "claude":  # Claude Code's own shell tool
            name, args = "Bash", {"command": command, "timeout": timeout_s * 1000}
        else:
            name, args = "shell", {"command": command, "timeout_s": timeout_s}
        call = {
            "id": f"msg_{tool_id}",
            "type": "message",
            "role": "assistant",
            "model": "fake",
            "content": [
                {
                    "type": "tool_use",
                    "id": tool_id,
                    "name": name,
                    "input": args,
                }
            ],
            "stop_reason": "tool_use",
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        channel: CaptureChannel = self.gateway.test_channel  # type: ignore[attr-defined]
        replies = len(channel.sent)
        self.model.responses.append((200, call))
        await self.gateway.ingest(channel.message(f"@Andy please run {tool_id}", chat_id=chat))
        await channel.wait_for(replies + 1, timeout=timeout_s + 120)
        await drained(self.gateway, timeout_s + 120, f"the turn that ran {tool_id}")
        for record in reversed(self.model.requests):
            result = tool_result(record.body, tool_id)
            if result is not None:
                return result
        sent = channel.sent[replies:]
        raise AssertionError(f"the agent never reported a result for {tool_id}; the chat got {sent!r}")


@pytest.fixture
def attacker(hostile_gateway: Gateway, model_server: FakeModelServer) -> Attacker:
    return Attacker(hostile_gateway, model_server)


async def wait_until(predicate: Any, timeout: float = 30) -> None:
    """Poll `predicate()` until true (for host-side effects that land after a reply)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.05)
