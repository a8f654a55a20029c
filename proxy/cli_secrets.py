"""`clawgate vault show|scope|rotate|test` (proxy/cli.py adds them to the `vault` group)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from pathlib import Path

import click

from core.paths import config_dir
from proxy.cli_support import read_value, reload_running_vault, secret_store
from proxy.rules import PLACEHOLDER, Rule
from proxy.secret_ops import rotate_secret, scope_secret
from proxy.secrets import SecretInfo, VaultError


def _get(name: str) -> SecretInfo:
    try:
        info = secret_store().get(name)
    except VaultError as e:
        raise click.ClickException(e.message) from None
    if info is None:
        raise click.ClickException(f"no secret named {name!r}")
    return info


@click.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Show NAME's metadata: rules, groups, last use. Never the value."""
    info = _get(name)
    click.echo(f"name:       {info.name}")
    click.echo(f"created:    {info.created_at or '-'}")
    click.echo(f"last used:  {info.last_used or 'never'}")
    click.echo(f"groups:     {', '.join(info.groups)}")
    click.echo("rules:")
    for rule in info.effective_rules:
        click.echo(f"  - {rule.describe()}")


@click.command("scope")
@click.argument("name")
@click.option("--groups", required=True, help="Comma list of groups that may use it; '*' = all.")
def scope_cmd(name: str, groups: str) -> None:
    """Set which groups may use NAME (its value and rules stay)."""
    try:
        info = scope_secret(secret_store(), name, groups)
    except VaultError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"secret {name}: groups {', '.join(info.groups)}")
    reload_running_vault()


@click.command("rotate")
@click.argument("name")
@click.option("--from-env", "from_env", metavar="VAR", default=None, help="Read the new value from $VAR.")
def rotate_cmd(name: str, from_env: str | None) -> None:
    """Give NAME a new value (stdin, --from-env or prompt), keeping its rules and groups."""
    _get(name)  # an unknown name is refused before the value is asked for
    value = read_value(from_env)
    try:
        rotate_secret(secret_store(), name, value)
    except VaultError as e:
        raise click.ClickException(e.message) from None
    click.echo(f"rotated secret {name}")
    reload_running_vault()


def _test_target(rule: Rule, path: str | None) -> str:
    if path:
        return path
    if rule.action == "path_template":
        before, _, after = rule.format.partition("{value}")
        return before + PLACEHOLDER + (after or "/")
    if rule.path.endswith("/*"):
        base = rule.path[:-2]
        return (base or "") + "/"
    return "/".join("x" if s == "*" else s for s in rule.path.split("/"))


async def _probe(
    info: SecretInfo, rule: Rule, path: str, scheme: str, allow_private: list[str], group: str
) -> tuple[str, str]:
    from core.config import ConfigError, load
    from proxy.process import VaultProcess, VaultUnavailable

    cfg_dir = config_dir()
    try:
        cfg = load(cfg_dir)
    except ConfigError as e:
        raise click.ClickException(str(e)) from None
    upstream_ca = getattr(cfg.vault, "upstream_ca", None)
    ca_path = Path(upstream_ca).expanduser() if upstream_ca else None  # noqa: ASYNC240 - no I/O
    host = rule.host.replace("*.", "test.", 1)
    with tempfile.TemporaryDirectory(prefix="clawgate-vault-test-") as tmp:
        vp = VaultProcess(
            cfg_dir,
            Path(tmp) / "state",
            allow_private=list(cfg.vault.allow_private_upstreams) + allow_private,
            upstream_ca=ca_path,
        )
        sock = Path(tmp) / "vault.sock"
        try:
            await vp.start(timeout=30)
            await vp.open_group(group, sock)
            method = rule.methods[0] if rule.methods else "GET"
            extra = f"{rule.header}: {PLACEHOLDER}\r\n" if rule.action == "replace_header" else ""
            req = (
                f"{method} {scheme}://{host}{path} HTTP/1.1\r\nHost: {host}\r\n{extra}"
                "Content-Length: 0\r\nConnection: close\r\n\r\n"
            )
            reader, writer = await asyncio.open_unix_connection(str(sock))
            writer.write(req.encode())
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 30)
            writer.close()
        except (VaultUnavailable, OSError, TimeoutError) as e:
            raise click.ClickException(f"vault test failed: {e}") from None
        finally:
            with contextlib.suppress(Exception):
                await vp.stop()
    return f"{scheme}://{host}{path}", status.decode("latin-1").strip()


@click.command("test")
@click.argument("name")
@click.option("--path", default=None, help="Request path (default: derived from the rule).")
@click.option("--scheme", type=click.Choice(["https", "http"]), default="https", show_default=True)
@click.option("--group", default="main", show_default=True, help="Send as this group.")
@click.option(
    "--allow-private", multiple=True, metavar="HOST:PORT", help="Allow a loopback/private upstream."
)
def test_cmd(name: str, path: str | None, scheme: str, group: str, allow_private: tuple[str, ...]) -> None:
    """Send a request through a temporary vault to NAME's host and print the status."""
    info = _get(name)
    rule = info.effective_rules[0]
    target = _test_target(rule, path)
    url, status = asyncio.run(_probe(info, rule, target, scheme, list(allow_private), group))
    if not status:
        raise click.ClickException(f"no response from {url}")
    click.echo(f"{url}: {status.removeprefix('HTTP/1.1 ')}")
    code = status.split(" ")[1] if status.count(" ") else ""
    if code.startswith(("4", "5")):
        raise SystemExit(1)
