"""What the `clawgate vault` commands share: the secret store, reading a value, telling the vault.

Its own module so that proxy/cli.py (the `vault` group) and proxy/cli_secrets.py (some of its
commands) both import it instead of each other.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click

from core.paths import config_dir, data_dir
from proxy.secrets import SecretStore


@dataclass(frozen=True)
class VaultCliContext:
    """What `clawgate` hands the vault commands as click's `ctx.obj` (gateway/cli.py).

    The registered groups live in the gateway's database, which `proxy/` does not read (it
    imports only `core`): the gateway passes its reader in. Without it (the `vault` group run on
    its own) no group but main is known.
    """

    registered_folders: Callable[[Path], list[str]]


def registered_folders() -> list[str]:
    """The registered groups' folders, through the gateway's reader when `clawgate` gave one."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(VaultCliContext) if ctx is not None else None
    return found.registered_folders(data_dir()) if found is not None else []


def secret_store() -> SecretStore:
    return SecretStore(config_dir())


def reload_running_vault() -> None:
    """Tell a running gateway's vault to re-read the secrets; silent when none runs."""
    import json
    import socket

    from proxy.process import CONTROL_SOCKET

    path = data_dir() / "vault" / CONTROL_SOCKET
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(5)
            conn.connect(str(path))
            conn.sendall(b'{"op": "reload_secrets"}\n')
            reply = json.loads(conn.makefile("rb").readline() or b"{}")
    except (OSError, ValueError):
        return
    if reply.get("ok"):
        click.echo("the running vault reloaded its secrets", err=True)


def read_value(from_env: str | None) -> str:
    if from_env is not None:
        value = os.environ.get(from_env)
        if not value:
            raise click.ClickException(f"environment variable {from_env} is not set or empty")
        return value
    stdin = sys.stdin
    if not stdin.isatty():
        value = stdin.read()
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
        return value
    return click.prompt("Secret value", hide_input=True, confirmation_prompt=False, err=True)
