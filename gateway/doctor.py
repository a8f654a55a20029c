"""`clawgate doctor`: each prerequisite checked on its own, with the fix printed next to it."""

from __future__ import annotations

import os
import sys

import click

from gateway import config as config_mod
from gateway import paths
from groups.sandbox.base import SandboxBackend, SandboxUnavailable
from groups.sandbox.docker import DockerBackend


def _report(ok: bool, what: str, fix: str = "") -> bool:
    mark = click.style("ok  ", fg="green") if ok else click.style("FAIL", fg="red")
    click.echo(f"[{mark}] {what}" + (f"\n       fix: {fix}" if fix and not ok else ""))
    return ok


async def _check_backend(backend: SandboxBackend, image: str) -> str | None:
    """None when the backend can run sandboxes of `image` here, else why not (with the fix)."""
    try:
        await backend.check(image)
        return None
    except SandboxUnavailable as exc:
        return str(exc)
    finally:
        await backend.close()


async def backend_report(cfg: config_mod.Config) -> dict[str, bool]:
    """Check every sandbox backend on this host; only the configured one can fail the doctor."""
    from groups.sandbox.bwrap import BwrapBackend

    checks = {
        "docker": ("Docker engine and image", DockerBackend(1)),
        "bwrap": ("bubblewrap, namespaces and exported root filesystem", BwrapBackend(1, paths.data_dir())),
    }
    usable = {}
    for name, (what, backend) in checks.items():
        problem = await _check_backend(backend, cfg.sandbox.image)
        usable[name] = problem is None
        label = f"sandbox backend {name}: {what} {cfg.sandbox.image}"
        if name == cfg.sandbox.backend:
            _report(problem is None, label + " (configured)", problem or "")
        else:
            state = click.style("usable", fg="green") if problem is None else "not usable"
            click.echo(f"[info] {label}: {state}" + (f"\n       why: {problem}" if problem else ""))
    return usable


async def run_checks() -> bool:
    results = [
        _report(sys.version_info >= (3, 12), f"Python {sys.version.split()[0]}", "install Python 3.12+")
    ]
    try:
        cfg = config_mod.load(paths.config_dir())
        results.append(_report(True, f"config {paths.config_dir() / config_mod.CONFIG_FILE}"))
    except config_mod.ConfigError as exc:
        _report(False, "config", str(exc))
        return False
    usable = await backend_report(cfg)
    results.append(usable[cfg.sandbox.backend])
    key = paths.config_dir() / "master.key"
    if key.exists():
        mode = key.stat().st_mode & 0o777
        results.append(_report(mode == 0o600, f"master key mode {oct(mode)}", f"chmod 600 {key}"))
    from proxy.secrets import SecretStore

    hosts = {s.host for s in SecretStore(paths.config_dir()).list()}
    model_host = cfg.model.base_url.split("://", 1)[1].split("/", 1)[0].lower()
    results.append(
        _report(
            model_host in hosts or model_host.split(":")[0] in hosts,
            f"a vault secret for the model host {model_host}",
            f"clawgate vault add model --host {model_host} --preset {cfg.model.provider}  (value from stdin)",
        )
    )
    if os.geteuid() == 0:
        results.append(_report(True, f"running as root: containers run as uid {cfg.sandbox.run_as_uid}"))
    return all(results)
