"""Choosing the sandbox backend named by `[sandbox] backend` in the config."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from groups.sandbox.base import SandboxBackend, SandboxUnavailable

if TYPE_CHECKING:
    from core.config import Config

BACKENDS = ("docker", "bwrap")


def make_backend(config: Config, data_dir: Path) -> SandboxBackend:
    """The configured backend, not yet checked (call `check(image)` before use)."""
    name = config.sandbox.backend
    if name == "docker":
        from groups.sandbox.docker import DockerBackend

        return DockerBackend(config.sandbox.max_containers, config.sandbox.runtime)
    if name == "bwrap":
        from groups.sandbox.bwrap import BwrapBackend

        return BwrapBackend(config.sandbox.max_containers, data_dir)
    # config validation rejects unknown names; never fall back to something weaker
    raise SandboxUnavailable(f"unknown sandbox backend {name!r}: use one of {', '.join(BACKENDS)}")
