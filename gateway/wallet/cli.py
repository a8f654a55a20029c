"""`clawgate wallet …`: manage the NEAR keys the gateway signs with.

A secret key is read from stdin (when piped, or with ``--secret-stdin``) or from a hidden
prompt — never from argv, where it would land in shell history and ``ps``.  Nothing here ever
prints a secret key: listings show metadata, and ``export`` writes only a passphrase-encrypted
backup.  The backup passphrase comes from a confirmed prompt or, for scripts, from
``$CLAWGATE_WALLET_PASSPHRASE``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from core.paths import config_dir
from core.wallet.accounts import is_near_implicit
from core.wallet.amounts import parse_near
from gateway.wallet.backup import MIN_PASSPHRASE_LEN, export_backup, restore_backup
from gateway.wallet.keyinfo import NETWORKS, KeyInfo, KeyPermission, WalletError
from gateway.wallet.keystore import KeyStore

PASSPHRASE_ENV = "CLAWGATE_WALLET_PASSPHRASE"


def _store() -> KeyStore:
    return KeyStore(config_dir())


def _default_network() -> str:
    """The `[wallet] network` of config.toml, so keys are labelled for the chain the gateway uses."""
    from core.config import ConfigError, load

    try:
        return load(config_dir()).wallet.network
    except ConfigError as e:
        raise click.ClickException(f"{e} (or pass --network)") from None


def _permission(function_call: str | None, methods: tuple[str, ...], allowance: str | None) -> KeyPermission:
    if function_call is None:
        if methods or allowance is not None:
            raise click.ClickException("--method and --allowance need --function-call RECEIVER")
        return KeyPermission()
    amount: int | None = None
    if allowance is not None:
        try:
            amount = parse_near(allowance)
        except ValueError as e:
            raise click.ClickException(f"--allowance: {e}") from None
    try:
        return KeyPermission("function_call", function_call, tuple(methods), amount)
    except WalletError as e:
        raise click.ClickException(e.message) from None


def _key_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by `generate` and `import`: which account, chain and permission a key has."""
    options = [
        click.option(
            "--account", "account_id", default=None, help="Account the key belongs to (default: implicit)."
        ),
        click.option(
            "--network",
            type=click.Choice(NETWORKS),
            default=None,
            help="Chain of the account (default: [wallet] network in config.toml, else testnet).",
        ),
        click.option("--label", default="", help="Free-text note shown in listings."),
        click.option(
            "--function-call",
            "function_call",
            metavar="RECEIVER",
            default=None,
            help="Record the key as a function-call key for this contract (default: full access).",
        ),
        click.option("--method", "methods", multiple=True, help="Allowed method (repeatable; default any)."),
        click.option("--allowance", metavar="NEAR", default=None, help="Gas allowance (default: unlimited)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _echo_info(info: KeyInfo) -> None:
    click.echo(f"name:        {info.name}")
    click.echo(f"account:     {info.account_id}")
    click.echo(f"network:     {info.network}")
    click.echo(f"public key:  {info.public_key}")
    click.echo(f"permission:  {info.permission.describe()}")
    click.echo(f"label:       {info.label or '-'}")
    click.echo(f"created:     {info.created_at or '-'}")


def _implicit_hint(info: KeyInfo) -> str:
    implicit = info.implicit_account_id
    if info.account_id == implicit:
        return f"implicit account: send NEAR to {implicit} on {info.network} to create and fund it"
    return f"this key's implicit account would be {implicit} (the key is stored for {info.account_id})"


def _read_secret(secret_stdin: bool) -> str:
    if secret_stdin or not sys.stdin.isatty():
        value = sys.stdin.read().strip()
    else:
        value = click.prompt("Secret key (ed25519:…)", hide_input=True, err=True).strip()
    if not value:
        raise click.ClickException("no secret key given (pipe it to stdin or type it at the prompt)")
    return value


def _passphrase(confirm: bool) -> str:
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value
    if not sys.stdin.isatty():
        raise click.ClickException(
            f"no backup passphrase: set {PASSPHRASE_ENV} or run this command in a terminal to be prompted"
        )
    return click.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm, err=True)


@click.group("wallet")
def wallet_cli() -> None:
    """Manage NEAR wallet keys (stored encrypted; secrets never enter containers or output)."""


@wallet_cli.command("generate")
@click.argument("name")
@_key_options
def generate_cmd(
    name: str,
    account_id: str | None,
    network: str | None,
    label: str,
    function_call: str | None,
    methods: tuple[str, ...],
    allowance: str | None,
) -> None:
    """Create a new ed25519 key NAME (its implicit account unless --account is given)."""
    permission = _permission(function_call, methods, allowance)
    try:
        info = _store().generate(
            name,
            network=network or _default_network(),
            account_id=account_id,
            label=label,
            permission=permission,
        )
    except WalletError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"generated wallet key {info.name}")
    _echo_info(info)
    click.echo(_implicit_hint(info))
    if info.account_id != info.implicit_account_id:
        click.echo(f"add the public key to {info.account_id} (AddKey) before the gateway can sign for it")
    click.echo("back it up with `clawgate wallet export PATH`")


@wallet_cli.command("import")
@click.argument("name")
@_key_options
@click.option("--replace", is_flag=True, help="Overwrite an existing key with the same name.")
@click.option(
    "--secret-stdin", is_flag=True, help="Read the secret key from stdin (automatic when stdin is a pipe)."
)
def import_cmd(
    name: str,
    account_id: str | None,
    network: str | None,
    label: str,
    function_call: str | None,
    methods: tuple[str, ...],
    allowance: str | None,
    replace: bool,
    secret_stdin: bool,
) -> None:
    """Store an existing secret key (ed25519:…) as NAME; read from stdin or a hidden prompt."""
    permission = _permission(function_call, methods, allowance)
    net = network or _default_network()
    secret = _read_secret(secret_stdin)
    try:
        info = _store().import_key(
            name,
            secret,
            network=net,
            account_id=account_id,
            label=label,
            permission=permission,
            replace=replace,
        )
    except WalletError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"imported wallet key {info.name}")
    _echo_info(info)


@wallet_cli.command("list")
def list_cmd() -> None:
    """List stored keys: name, account, network, permission, public key, label."""
    try:
        infos = _store().list()
    except WalletError as e:
        raise click.ClickException(e.message) from None
    if not infos:
        click.echo("no wallet keys (create one with `clawgate wallet generate NAME`)")
        return
    rows = [("NAME", "ACCOUNT", "NETWORK", "PERMISSION", "PUBLIC KEY", "LABEL")]
    rows += [
        (i.name, i.account_id, i.network, i.permission.describe(), str(i.public_key), i.label) for i in infos
    ]
    widths = [max(len(row[c]) for row in rows) for c in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)] + [row[-1]]
        click.echo("  ".join(cells).rstrip())


@wallet_cli.command("info")
@click.argument("name")
def info_cmd(name: str) -> None:
    """Show NAME's metadata (never its secret) and its implicit account."""
    try:
        info = _store().get(name)
    except WalletError as e:
        raise click.ClickException(e.message) from None
    if info is None:
        raise click.ClickException(f"no wallet key named {name!r}")
    _echo_info(info)
    click.echo(f"implicit:    {info.implicit_account_id}")
    kind = "a NEAR-implicit account" if is_near_implicit(info.account_id) else "a named account"
    click.echo(f"account kind: {kind}")
    click.echo(_implicit_hint(info))


@wallet_cli.command("remove")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def remove_cmd(name: str, yes: bool) -> None:
    """Delete key NAME from the store (irreversible without a backup)."""
    try:
        store = _store()
        if store.get(name) is None:
            raise click.ClickException(f"no wallet key named {name!r}")
        if not yes:
            click.confirm(
                f"delete wallet key {name}? Without a backup it cannot be recovered", abort=True, err=True
            )
        removed = store.remove(name)
    except WalletError as e:
        raise click.ClickException(e.message) from None
    if not removed:
        raise click.ClickException(f"no wallet key named {name!r}")
    click.echo(f"removed wallet key {name}")


@wallet_cli.command("export")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", "names", multiple=True, help="Only this key (repeatable; default: all keys).")
@click.option("--force", is_flag=True, help="Overwrite PATH if it exists.")
def export_cmd(path: Path, names: tuple[str, ...], force: bool) -> None:
    """Write a passphrase-encrypted backup (Argon2id + AES-256-GCM) of the keys to PATH."""
    store = _store()
    try:
        if path.exists() and not force:  # before the prompt: do not ask for a passphrase in vain
            raise WalletError(f"{path} already exists (use --force to overwrite it)")
        passphrase = _passphrase(confirm=True)
        if len(passphrase) < MIN_PASSPHRASE_LEN:
            raise WalletError(f"the backup passphrase must be at least {MIN_PASSPHRASE_LEN} characters")
        count = export_backup(store, path, passphrase, list(names) or None, force=force)
    except WalletError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"wrote encrypted backup of {count} key(s) to {path}")
    click.echo("keep the passphrase somewhere else: without it the backup cannot be restored")


@wallet_cli.command("restore")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--replace", is_flag=True, help="Overwrite keys that already exist with the same name.")
def restore_cmd(path: Path, replace: bool) -> None:
    """Restore the keys in the encrypted backup at PATH (all or nothing)."""
    try:
        if not path.exists():
            raise WalletError(f"{path} does not exist")
        passphrase = _passphrase(confirm=False)
        infos = restore_backup(_store(), path, passphrase, replace=replace)
    except WalletError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"restored {len(infos)} key(s): {', '.join(i.name for i in infos)}")
