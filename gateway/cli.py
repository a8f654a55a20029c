"""The `clawgate` command line."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

import click

from gateway import config as config_mod
from gateway import paths
from gateway.admin_cli import dlq_cli, groups_register, groups_unregister, status_cli
from gateway.backup_cli import backup_cli
from gateway.tasks_cli import tasks_cli
from gateway.wallet.cli import wallet_cli
from proxy.cli import vault_cli


def _load_config() -> config_mod.Config:
    try:
        return config_mod.load(paths.config_dir())
    except config_mod.ConfigError as exc:
        raise click.ClickException(str(exc)) from None


class _Cli(click.Group):
    """Turns an unusable database into the store's one-line explanation, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        from gateway.store import StoreUnusable

        try:
            return super().invoke(ctx)
        except StoreUnusable as exc:
            raise click.ClickException(str(exc)) from None


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clawgate", prog_name="clawgate")
def main() -> None:
    """clawgate: chat-bot gateway with per-group sandboxes and a credential vault."""


@main.command()
@click.option("-v", "--verbose", is_flag=True, help="Also print info-level logs to stderr.")
@click.option("--grace", default=30.0, show_default=True, help="Seconds running turns get to finish on stop.")
def run(verbose: bool, grace: float) -> None:
    """Start the gateway (the console channel is the main chat)."""
    from gateway.app import Gateway, StartupError
    from gateway.logs import configure

    cfg = _load_config()
    config_dir, data_dir = paths.config_dir(), paths.data_dir()
    log_path = configure(data_dir, verbose)

    async def serve() -> None:
        gateway = Gateway(cfg, config_dir, data_dir)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await gateway.start()
        except StartupError as exc:
            raise click.ClickException(f"cannot start: {exc}") from None
        for warning in gateway.warnings:
            click.echo(f"clawgate: warning: {warning}", err=True)
        click.echo(f"clawgate: ready (logs: {log_path})", err=True)

        async def finish_when_input_ends() -> None:
            await gateway.input_closed.wait()
            await gateway.drain()
            stop.set()

        eof = asyncio.create_task(finish_when_input_ends())
        await stop.wait()
        eof.cancel()
        click.echo("clawgate: stopping …", err=True)
        await gateway.stop(grace)

    asyncio.run(serve())


@main.command()
def doctor() -> None:
    """Check the configuration, Docker, the sandbox image and the vault's prerequisites."""
    from gateway.doctor import run_checks

    ok = asyncio.run(run_checks())
    sys.exit(0 if ok else 1)


@main.group()
def image() -> None:
    """The sandbox image."""


@image.command("build")
@click.option(
    "--base", "base", default=None, help="Base image (default: python:3.12-slim, else a local one)."
)
@click.option("--tag", default=None, help="Image tag (default: sandbox.image from config).")
@click.option(
    "--backend",
    type=click.Choice(["docker", "bwrap"]),
    default=None,
    help="bwrap: also export the image's filesystem for the bubblewrap backend "
    "(default: sandbox.backend from config).",
)
def image_build(base: str | None, tag: str | None, backend: str | None) -> None:
    """Build the sandbox image, building a local Debian base first when nothing can be pulled."""
    import docker
    from docker.errors import DockerException

    from groups.sandbox.image import ImageBuildError, build_image, export_rootfs

    cfg = _load_config()
    try:
        client = docker.from_env()
        client.ping()
    except DockerException as exc:
        raise click.ClickException(f"cannot reach Docker: {exc}. Start dockerd and retry.") from None
    try:
        image_id = build_image(
            client, tag or cfg.sandbox.image, base, lambda line: click.echo(line, err=True)
        )
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"built {tag or cfg.sandbox.image} ({image_id[:19]})")
    if (backend or cfg.sandbox.backend) == "bwrap":
        from groups.sandbox.bwrap import ROOTFS_DIR

        try:
            where = export_rootfs(
                client,
                tag or cfg.sandbox.image,
                paths.data_dir() / ROOTFS_DIR,
                lambda line: click.echo(line, err=True),
            )
        except (ImageBuildError, DockerException, OSError) as exc:
            raise click.ClickException(f"exporting the root filesystem failed: {exc}") from None
        click.echo(f"exported the root filesystem for the bwrap backend to {where}")


@main.group()
def groups() -> None:
    """Registered groups."""


@groups.command("list")
def groups_list() -> None:
    """List registered groups."""
    from gateway.app import DATABASE
    from gateway.store import Store

    async def show() -> None:
        store = await Store.open(paths.data_dir() / DATABASE)
        try:
            rows = await store.groups()
        finally:
            await store.close()
        if not rows:
            click.echo("no groups registered yet (the main group is created on first `clawgate run`)")
        for g in rows:
            trigger = "(no trigger)" if not g.requires_trigger else g.trigger
            click.echo(f"{g.folder:<20} {g.chat_id:<28} {trigger:<14} {'main' if g.is_main else ''}")

    asyncio.run(show())


@groups.command("mounts")
@click.argument("group")
def groups_mounts(group: str) -> None:
    """Show the extra mounts GROUP (folder or chat id) gets: granted, refused and why."""
    from gateway.app import DATABASE
    from gateway.models import Group
    from gateway.store import Store
    from groups.mounts import ALLOWLIST_FILE, describe_plan, plan_mounts

    cfg = _load_config()
    config_dir, data_dir = paths.config_dir(), paths.data_dir()

    async def find() -> Group | None:
        store = await Store.open(data_dir / DATABASE)
        try:
            rows = await store.groups()
        finally:
            await store.close()
        return next((g for g in rows if group in (g.folder, g.chat_id)), None)

    found = asyncio.run(find())
    if found is None:
        raise click.ClickException(f"no registered group {group!r} (see `clawgate groups list`)")
    allowlist = config_dir / ALLOWLIST_FILE
    plan = plan_mounts(found, allowlist, config_dir, data_dir, cfg.mounts.project_root)
    click.echo(f"group {found.folder}{' (main)' if found.is_main else ''}; allowlist {allowlist}")
    for line in describe_plan(plan):
        click.echo(line)


main.add_command(vault_cli)
main.add_command(wallet_cli)
main.add_command(tasks_cli)
main.add_command(dlq_cli)
main.add_command(status_cli)
main.add_command(backup_cli)
groups.add_command(groups_register)
groups.add_command(groups_unregister)


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        main()
