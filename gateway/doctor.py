"""`clawgate doctor`: each prerequisite checked on its own, with the fix printed next to it."""

from __future__ import annotations

import os
import sys

import click

from gateway import config as config_mod
from gateway import paths
from groups.sandbox.base import SandboxUnavailable
from groups.sandbox.docker import DockerBackend


def _report(ok: bool, what: str, fix: str = "") -> bool:
    mark = click.style("ok  ", fg="green") if ok else click.style("FAIL", fg="red")
    click.echo(f"[{mark}] {what}" + (f"\n       fix: {fix}" if fix and not ok else ""))
    return ok


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
    backend = DockerBackend(1)
    try:
        await backend.check(cfg.sandbox.image)
        results.append(_report(True, f"Docker engine and image {cfg.sandbox.image}"))
    except SandboxUnavailable as exc:
        results.append(_report(False, "Docker engine and sandbox image", str(exc)))
    finally:
        await backend.close()
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
