"""`clawgate dashboard url`: print a one-time login link for the owner's dashboard.

Whoever can run this has a shell on the gateway's machine and its data dir, i.e. is the owner of
the install; the link acts as the console owner (always an admin) or, with `--as`, as one of
`[admin] users` (gateway/dashboard_backend.py explains the mapping). Only the token's hash is
stored (dashboard/auth.py); the link itself is printed once and nowhere else.
"""

from __future__ import annotations

import click

from channels.console import OWNER_ID


@click.group("dashboard")
def dashboard_cli() -> None:
    """The owner's web dashboard ([dashboard] in config.toml)."""


@dashboard_cli.command("url")
@click.option(
    "--as",
    "user",
    default=OWNER_ID,
    show_default=True,
    help="the admin the session acts as: the console owner or one of [admin] users",
)
def dashboard_url(user: str) -> None:
    """Print a login link that works once, within 10 minutes."""
    from core import config as config_mod
    from core import paths
    from dashboard.auth import LOGIN_TTL_S, mint_login
    from dashboard.server import base_url

    try:
        config = config_mod.load(paths.config_dir())
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if user != OWNER_ID and user not in config.admin.users:
        raise click.BadParameter(
            f"{user!r} is not an admin; use {OWNER_ID} or one of [admin] users "
            f"({', '.join(config.admin.users) or 'none set'})",
            param_hint="--as",
        )
    if not config.dashboard.enabled:
        click.echo("note: [dashboard] enabled = false; set it to true and restart `clawgate run`", err=True)
    try:
        token = mint_login(paths.data_dir(), user)
    except OSError as exc:
        raise click.ClickException(f"cannot store the login token: {exc}") from None
    click.echo(f"{base_url(config.dashboard)}/login?t={token}")
    click.echo(f"(works once, for {int(LOGIN_TTL_S // 60)} minutes; acting as {user})", err=True)
