"""`clawgate vault …`: manage the credentials the vault injects.

A secret value is read from stdin (when piped), from a named environment variable, or
from a hidden prompt — never from argv, where it would land in shell history and `ps`.
Listing shows metadata only.
"""

from __future__ import annotations

import os
import sys

import click

from gateway.paths import config_dir, data_dir
from proxy.secrets import SecretStore, VaultError

PRESETS: dict[str, tuple[str, str]] = {
    "anthropic": ("x-api-key", "{value}"),
    "openai": ("Authorization", "Bearer {value}"),
}
DEFAULT_HEADER = "Authorization"
DEFAULT_FORMAT = "Bearer {value}"


def _store() -> SecretStore:
    return SecretStore(config_dir())


def _reload_running_vault() -> None:
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


def _read_value(from_env: str | None) -> str:
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


@click.group(name="vault")
def vault_cli() -> None:
    """Manage credentials injected by the egress vault (values never enter containers)."""


@vault_cli.command("add")
@click.argument("name")
@click.option("--host", required=True, help="Upstream host (or host:port) that receives this secret.")
@click.option("--header", default=None, help=f"Header to set (default {DEFAULT_HEADER}).")
@click.option("--format", "fmt", default=None, help=f"Header value template (default '{DEFAULT_FORMAT}').")
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None, help="Header/format preset.")
@click.option("--replace", is_flag=True, help="Overwrite an existing secret with the same name.")
@click.option("--from-env", "from_env", metavar="VAR", default=None, help="Read the value from $VAR.")
def add_cmd(
    name: str,
    host: str,
    header: str | None,
    fmt: str | None,
    preset: str | None,
    replace: bool,
    from_env: str | None,
) -> None:
    """Store secret NAME. The value comes from stdin, --from-env, or a hidden prompt."""
    preset_header, preset_format = PRESETS[preset] if preset else (DEFAULT_HEADER, DEFAULT_FORMAT)
    value = _read_value(from_env)
    try:
        info = _store().add(
            name,
            value,
            host,
            header=header or preset_header,
            fmt=fmt or preset_format,
            replace=replace,
        )
    except VaultError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"stored secret {info.name} for {info.host} (header {info.header})")
    _reload_running_vault()


@vault_cli.command("list")
def list_cmd() -> None:
    """List stored secrets (name, host, header) — never their values."""
    try:
        infos = _store().list()
    except VaultError as e:
        raise click.ClickException(e.message) from None
    if not infos:
        click.echo("no secrets stored")
        return
    rows = [("NAME", "HOST", "HEADER", "CREATED")] + [(i.name, i.host, i.header, i.created_at) for i in infos]
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    for r in rows:
        click.echo("  ".join(r[c].ljust(widths[c]) for c in range(3)) + "  " + r[3])


@vault_cli.command("remove")
@click.argument("name")
def remove_cmd(name: str) -> None:
    """Delete secret NAME."""
    try:
        removed = _store().remove(name)
    except VaultError as e:
        raise click.ClickException(e.message) from None
    if not removed:
        raise click.ClickException(f"no secret named {name!r}")
    click.echo(f"removed secret {name}")
    _reload_running_vault()
