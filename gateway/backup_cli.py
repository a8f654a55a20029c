"""`clawgate backup create|restore` (see gateway.instance_backup for the format and guarantees).

The passphrase comes from a hidden, confirmed prompt when stdin is a terminal, else from the
first line of stdin — never from argv, where it would land in shell history and ``ps``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from core import paths
from gateway.instance_lock import holder_pid


def _passphrase(confirm: bool) -> str:
    if sys.stdin.isatty():
        return str(click.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm, err=True))
    line = sys.stdin.readline()
    if not line:
        raise click.ClickException("no passphrase: give it on stdin, or run in a terminal to be prompted")
    return line.rstrip("\r\n")


@click.group("backup")
def backup_cli() -> None:
    """Back up and restore the database and the config dir (one passphrase-protected archive)."""


@backup_cli.command("create")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Overwrite FILE if it exists.")
def backup_create(file: Path, force: bool) -> None:
    """Write an archive of the database (consistent even while the gateway runs) and config to FILE."""
    from gateway.instance_backup import BackupError, create_backup
    from gateway.passphrase_crypto import MIN_PASSPHRASE_LEN

    if (file.exists() or file.is_symlink()) and not force:  # before the prompt: do not ask in vain
        raise click.ClickException(f"{file} already exists (use --force to overwrite it)")
    passphrase = _passphrase(confirm=True)
    if len(passphrase) < MIN_PASSPHRASE_LEN:
        raise click.ClickException(f"the backup passphrase must be at least {MIN_PASSPHRASE_LEN} characters")
    try:
        made = create_backup(file, passphrase, paths.config_dir(), paths.data_dir(), force=force)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {made.path} (database schema v{made.schema_version}, {made.files} files)")
    click.echo("keep the passphrase somewhere else: without it the backup cannot be restored")


@backup_cli.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--force", is_flag=True, help="Replace an existing database/config dir (kept aside, not deleted)."
)
def backup_restore(file: Path, force: bool) -> None:
    """Restore FILE into the config and data dirs: everything is verified before anything changes."""
    from gateway.instance_backup import BackupError, read_header, restore_backup, target_problems

    config_dir, data_dir = paths.config_dir(), paths.data_dir()
    pid = holder_pid(data_dir)  # refuse before the prompt; restore_backup takes the lock itself
    if pid is not None:
        raise click.ClickException(
            f"refusing to restore: a clawgate gateway (pid {pid}) is running with data dir"
            f" {data_dir}; stop it first"
        )
    problems = target_problems(config_dir, data_dir)
    if problems and not force:
        raise click.ClickException(
            f"{'; '.join(problems)} (use --force to replace them; the current ones are kept aside)"
        )
    try:
        header = read_header(file)
        click.echo(
            f"backup of {header.get('created_at')} by clawgate {header.get('clawgate')}"
            f" (database schema v{header.get('schema_version')})",
            err=True,
        )
        done = restore_backup(file, _passphrase(confirm=False), config_dir, data_dir, force=force)
    except BackupError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"restored the database (schema v{done.schema_version}) and {done.files - 1} config file(s)")
    for path in done.kept_aside:
        click.echo(f"the previous {path.name} is kept at {path}")
