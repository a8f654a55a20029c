"""`clawgate vault …`: manage the credentials the vault injects.

A secret value is read from stdin (when piped), from a named environment variable, or
from a hidden prompt — never from argv, where it would land in shell history and `ps`.
Listing shows metadata only.
"""

from __future__ import annotations

import click

from core.paths import config_dir, data_dir
from proxy.cli_secrets import rotate_cmd, scope_cmd, show_cmd, test_cmd
from proxy.cli_support import read_value, registered_folders, reload_running_vault, secret_store
from proxy.rules import ACTIONS
from proxy.rules import PRESETS as RULE_PRESETS
from proxy.secret_ops import NewSecret, add_secret, build_rule, remove_secret
from proxy.secrets import VaultError


def _model_base_url() -> str | None:
    """The configured model's base URL (the model key's default groups), None if unreadable."""
    from core.config import ConfigError, load

    try:
        return load(config_dir()).model.base_url
    except ConfigError:
        return None


@click.group(name="vault")
def vault_cli() -> None:
    """Manage credentials injected by the egress vault (values never enter containers)."""


@vault_cli.command("add")
@click.argument("name")
@click.option("--host", default=None, help="Host pattern: api.example.com, *.example.com, host:port.")
@click.option("--path", default="/*", show_default=True, help="Path pattern: /a/b, /a/*, /repos/*/pulls.")
@click.option("--method", "methods", multiple=True, help="Only for this HTTP method (repeatable).")
@click.option(
    "--action",
    type=click.Choice(ACTIONS),
    default=None,
    help="How to inject (default set_header; presets choose for you).",
)
@click.option("--header", default=None, help="Header for header actions (default Authorization).")
@click.option(
    "--format", "fmt", default=None, help="Template with {value}, e.g. 'token {value}', /bot{value}."
)
@click.option("--query-param", default=None, help="Query parameter for --action set_query.")
@click.option("--preset", type=click.Choice(sorted(RULE_PRESETS)), default=None, help="Known API preset.")
@click.option(
    "--groups",
    default=None,
    help="Comma list of groups that may use it; '*' = all. Default: for the model host's key every "
    "registered group (and main), otherwise main only.",
)
@click.option("--replace", is_flag=True, help="Overwrite an existing secret with the same name.")
@click.option("--from-env", "from_env", metavar="VAR", default=None, help="Read the value from $VAR.")
@click.option(
    "--approve",
    is_flag=True,
    help="Hold every request this rule applies to until an admin approves it in the main chat.",
)
def add_cmd(
    name: str,
    host: str | None,
    path: str,
    methods: tuple[str, ...],
    action: str | None,
    header: str | None,
    fmt: str | None,
    query_param: str | None,
    preset: str | None,
    groups: str | None,
    replace: bool,
    from_env: str | None,
    approve: bool,
) -> None:
    """Store secret NAME. The value comes from stdin, --from-env, or a hidden prompt."""
    spec = NewSecret(
        name, host, path, methods, action, header, fmt, query_param, preset, groups, replace, approve
    )
    try:
        build_rule(spec)  # a bad option is refused before the value is asked for
    except VaultError as e:
        raise click.ClickException(e.message) from None
    value = read_value(from_env)
    try:
        added = add_secret(secret_store(), spec, value, _model_base_url(), registered_folders())
    except VaultError as e:
        raise click.ClickException(e.message) from None
    if added.groups_note:
        click.echo(added.groups_note, err=True)
    click.echo(added.summary)
    reload_running_vault()


@vault_cli.command("list")
def list_cmd() -> None:
    """List stored secrets (name, host, header) — never their values."""
    try:
        infos = secret_store().list()
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
        remove_secret(secret_store(), name)
    except VaultError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"removed secret {name}")
    reload_running_vault()


@vault_cli.command("log")
@click.option("--group", default=None, help="Only this group's requests.")
@click.option("--since", default=None, help="e.g. 10m, 2h, 1d, or an ISO time.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Newest N entries.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw JSON lines.")
def log_cmd(group: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Show the vault's audit log: one line per request (never a credential or query value)."""
    import json

    from proxy.audit import format_table, parse_since, query

    try:
        cutoff = parse_since(since) if since else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    entries = query(data_dir() / "vault", group=group, since=cutoff, limit=limit)
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    if not entries:
        click.echo("no requests logged")
        return
    click.echo(format_table(entries))


for _command in (show_cmd, scope_cmd, rotate_cmd, test_cmd):  # defined in proxy/cli_secrets.py
    vault_cli.add_command(_command)
