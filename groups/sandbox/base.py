"""What every sandbox backend is given and what it hands back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


class SandboxUnavailable(Exception):
    """The backend cannot run sandboxes right now (engine down, image missing); message says the fix."""


@dataclass(frozen=True, slots=True)
class Limits:
    memory_mb: int
    cpus: float
    pids: int
    tmpfs_mb: int
    file_mb: int | None = None  # RLIMIT_FSIZE: no single file grows past the group's disk quota


@dataclass(frozen=True, slots=True)
class ExtraMount:
    """A host path granted by the mount allowlist (see `groups.mounts`), already validated."""

    host_path: Path
    container_path: str  # absolute, under /workspace/extra/ (or /workspace/project for main)
    read_only: bool = True


@dataclass(frozen=True, slots=True)
class SandboxSpec:
    """Everything a backend needs to start one group's container; contains no secrets by construction."""

    folder: str
    is_main: bool
    image: str
    group_dir: Path
    global_dir: Path
    run_dir: Path
    uid: int
    gid: int
    limits: Limits
    env: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    extra_mounts: tuple[ExtraMount, ...] = ()
    inbox_dir: Path | None = None  # host-owned attachments dir, mounted read-only at /workspace/inbox


class RunningSandbox(Protocol):
    folder: str
    id: str
    exited: asyncio.Future[int]  # resolves with the exit code when the sandbox stops for any reason

    async def wait_exit(self) -> int: ...

    async def stop(self) -> None: ...

    async def logs_tail(self, max_bytes: int = 4096) -> str: ...

    async def memory_bytes(self) -> int | None:
        """Memory in use now, best effort: None when it cannot be read (the dashboard shows "—")."""
        ...


class SandboxBackend(Protocol):
    async def check(self, image: str) -> None: ...

    async def start(self, spec: SandboxSpec) -> RunningSandbox: ...

    async def remove_orphans(self, instance: str) -> int: ...

    async def close(self) -> None: ...
