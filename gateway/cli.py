"""The `clawgate` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from core import config as config_mod
from core import paths
from gateway.admin_cli import dlq_cli, groups_register, groups_set, groups_unregister, status_cli
from gateway.backup_cli import backup_cli
from gateway.dashboard_cli import dashboard_cli
from gateway.senders_cli import groups_allow, groups_block, groups_senders
from gateway.tasks_cli import tasks_cli
from gateway.usage_cli import usage_cli
from gateway.wallet.cli import wallet_cli
from proxy.cli import vault_cli
from proxy.cli_support import VaultCliContext

if TYPE_CHECKING:
    from docker import DockerClient

log = logging.getLogger("gateway")


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
@click.pass_context
def main(ctx: click.Context) -> None:
    """clawgate: chat-bot gateway with per-group sandboxes and a credential vault."""
    ctx.obj = VaultCliContext(registered_folders=_registered_folders)


def _registered_folders(data_dir: Path) -> list[str]:
    """`vault add` scopes the model key to every registered group; proxy/ cannot read the database."""
    from gateway.preflight import registered_folders

    return registered_folders(data_dir)


@main.command()
@click.option("-v", "--verbose", is_flag=True, help="Also print info-level logs to stderr.")
@click.option("--grace", default=30.0, show_default=True, help="Seconds running turns get to finish on stop.")
def run(verbose: bool, grace: float) -> None:
    """Start the gateway: console on a terminal, scripted on a pipe, a daemon otherwise.

    SIGHUP reloads config.toml (what can change live); SIGTERM/SIGINT stop gracefully.
    """
    from core import redaction
    from gateway import console_mode, dead_letters
    from gateway.app import Gateway, StartupError
    from gateway.logs import FILE_ONLY, configure

    kind = console_mode.stdin_kind()
    mode = console_mode.decide(_load_config(), kind)

    def adjust(c: config_mod.Config) -> config_mod.Config:
        return console_mode.effective(c, console_mode.decide(c, kind))

    cfg = adjust(_load_config())
    config_dir, data_dir = paths.config_dir(), paths.data_dir()
    redaction.register_config(cfg)  # before any log line or error message can carry a token
    try:
        log_path = configure(data_dir, verbose)
    except OSError as exc:
        raise click.ClickException(f"cannot start: cannot write logs in {data_dir}: {exc}") from None
    unanswered: list[str] = []

    def refusal(exc: BaseException) -> click.ClickException:
        """A failed start-up as ONE line; what does not fit on it goes to the log file."""
        if isinstance(exc, StartupError):
            text = redaction.scrub(str(exc)).strip()
        else:  # Gateway.start converts everything; this is the last net
            logging.getLogger("clawgate").error("start-up failed", exc_info=exc, extra=FILE_ONLY)
            text = redaction.one_line(exc)
        first, *rest = text.splitlines() or [""]
        if rest:
            logging.getLogger("clawgate").error("cannot start: %s", text, extra=FILE_ONLY)
            first = f"{first.rstrip(' :;')} (more in {log_path})"
        return click.ClickException(f"cannot start: {first}")

    async def serve() -> None:
        gateway = Gateway(cfg, config_dir, data_dir, adjust=adjust)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # Until start() is done a SIGHUP is ignored, not fatal (its default action kills).
        loop.add_signal_handler(signal.SIGHUP, lambda: log.warning("SIGHUP ignored: still starting"))
        try:
            await gateway.start()
        except Exception as exc:
            raise refusal(exc) from None
        for warning in gateway.warnings:
            click.echo(f"clawgate: warning: {warning}", err=True)
        loop.add_signal_handler(signal.SIGHUP, gateway.reload_config)
        log.warning(
            "started clawgate %s: config %s, data %s, channels %s, backend %s, console %s",
            _version(),
            config_dir,
            data_dir,
            ", ".join(c.name for c in gateway.channels) or "none",
            cfg.sandbox.backend + (f"/{cfg.sandbox.runtime}" if cfg.sandbox.backend == "docker" else ""),
            mode,
        )
        click.echo(f"clawgate: ready (logs: {log_path})", err=True)
        letters_before = await dead_letters.last_id(gateway.store)

        async def finish_when_input_ends() -> None:
            await gateway.input_closed.wait()
            await gateway.drain()  # waits for armed retries too (bounded by [retry])
            unanswered.extend(await dead_letters.newer_than(gateway.store, letters_before))
            stop.set()

        eof = asyncio.create_task(finish_when_input_ends())
        await stop.wait()
        eof.cancel()
        click.echo("clawgate: stopping …", err=True)
        started = time.monotonic()
        await gateway.stop(grace)
        log.warning("stopped clawgate after %.1fs of shutdown", time.monotonic() - started)

    asyncio.run(serve())
    if unanswered:
        for line in unanswered:
            click.echo(f"clawgate: unanswered: {line}", err=True)
        sys.exit(1)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("clawgate")
    except PackageNotFoundError:
        return "unknown"


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
@click.option(
    "--runtime",
    type=click.Choice(["builtin", "claude"]),
    default="builtin",
    help="claude: also build the Claude Agent SDK variant (its CLI is under Anthropic's terms).",
)
@click.option(
    "--wheels",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="claude: directory of pre-downloaded wheels (default: pip download into the data dir).",
)
def image_build(
    base: str | None, tag: str | None, backend: str | None, runtime: str, wheels: Path | None
) -> None:
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
    built = tag or cfg.sandbox.image
    try:
        image_id = build_image(client, built, base, lambda line: click.echo(line, err=True))
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"built {built} ({image_id[:19]})")
    if runtime == "claude":
        _build_claude_image(
            client, cfg, built, None if tag is None else config_mod.claude_variant(tag), wheels
        )
    if (backend or cfg.sandbox.backend) == "bwrap":
        from groups.sandbox.bwrap import ROOTFS_DIR

        try:
            where = export_rootfs(
                client,
                built,
                paths.data_dir() / ROOTFS_DIR,
                lambda line: click.echo(line, err=True),
            )
        except (ImageBuildError, DockerException, OSError) as exc:
            raise click.ClickException(f"exporting the root filesystem failed: {exc}") from None
        click.echo(f"exported the root filesystem for the bwrap backend to {where}")


def _build_claude_image(
    client: DockerClient, cfg: config_mod.Config, sandbox_image: str, tag: str | None, wheels: Path | None
) -> str:
    """The `claude` variant on top of the just-built image; wheels fetched on the host if needed."""
    from groups.sandbox.image import (
        ImageBuildError,
        build_claude_image,
        fetch_claude_wheels,
        has_claude_wheels,
        image_python,
    )

    target = tag or cfg.runtime_image("claude")

    def progress(line: str) -> None:
        click.echo(line, err=True)

    click.echo(
        "note: the claude runtime bundles the Claude Code CLI, which is proprietary software under "
        "Anthropic's terms (the claude-agent-sdk package itself is MIT); building it means you accept them.",
        err=True,
    )
    try:
        python = image_python(client, sandbox_image)
        where = wheels or paths.data_dir() / "wheels" / f"claude-py{python}"
        if not has_claude_wheels(where):
            if wheels is not None:
                raise ImageBuildError(f"--wheels {wheels} holds no claude_agent_sdk-*.whl and pip-*.whl")
            fetch_claude_wheels(where, python, progress)
        image_id = build_claude_image(client, sandbox_image, target, where, progress)
    except ImageBuildError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"built {target} ({image_id[:19]})")
    return target


@main.group()
def groups() -> None:
    """Registered groups."""


@groups.command("list")
def groups_list() -> None:
    """List registered groups."""
    from core.paths import DATABASE
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
            runtime = g.runtime or "(default)"
            senders = "admins" if g.is_main else g.senders
            click.echo(
                f"{g.folder:<20} {g.chat_id:<28} {trigger:<14} {runtime:<10} {senders:<9}"
                f" {'main' if g.is_main else ''}".rstrip()
            )

    asyncio.run(show())


@groups.command("mounts")
@click.argument("group")
def groups_mounts(group: str) -> None:
    """Show the extra mounts GROUP (folder or chat id) gets: granted, refused and why."""
    from core.models import Group
    from core.paths import DATABASE
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


@main.group()
def service() -> None:
    """Run clawgate as a systemd service."""


@service.command("install")
@click.option("--user", "user_unit", is_flag=True, help="A user unit (~/.config/systemd/user): no root.")
@click.option("--force", is_flag=True, help="Replace an existing unit that differs.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the unit here instead of systemd's directory (for packaging or a look first).",
)
@click.option("--grace", default=30.0, show_default=True, help="Seconds running turns get to finish on stop.")
def service_install(user_unit: bool, force: bool, unit_dir: Path | None, grace: float) -> None:
    """Write clawgate.service (Restart=on-failure, hardened) and print how to enable it."""
    from gateway import service_unit as su

    cfg = _load_config()
    try:
        spec = su.UnitSpec(
            executable=su.clawgate_executable(),
            config_dir=paths.config_dir(),
            data_dir=paths.data_dir(),
            user_unit=user_unit,
            user=su.current_user(),
            backend=cfg.sandbox.backend,
            grace_s=grace,
        )
        where = su.install(unit_dir or su.default_unit_dir(user_unit), su.render(spec), force)
    except su.ServiceError as exc:
        raise click.ClickException(str(exc)) from None
    except PermissionError as exc:
        hint = "run it with sudo, or use --user" if not user_unit else "check the directory's owner"
        raise click.ClickException(f"cannot write the unit: {exc} ({hint})") from None
    click.echo(f"wrote {where}")
    ctl = "systemctl --user" if user_unit else "sudo systemctl"
    click.echo("enable and start it with:")
    click.echo(f"  {ctl} daemon-reload && {ctl} enable --now clawgate")
    if user_unit:
        click.echo(f"  loginctl enable-linger {spec.user}   # keep it running while you are logged out")
    click.echo(f"logs: journalctl {'--user ' if user_unit else ''}-u clawgate and {spec.data_dir}/logs/")
    click.echo(f"reload config.toml: {ctl} reload clawgate (SIGHUP)")
    if any(k.startswith(("CLAWGATE_TELEGRAM_", "CLAWGATE_SLACK_")) for k in os.environ):
        click.echo(
            f"note: tokens from your environment are not copied into the unit; put them in "
            f"{spec.config_dir / su.ENV_FILE} (chmod 600) or config.toml"
        )


main.add_command(vault_cli)
main.add_command(wallet_cli)
main.add_command(tasks_cli)
main.add_command(dlq_cli)
main.add_command(status_cli)
main.add_command(usage_cli)
main.add_command(dashboard_cli)
main.add_command(backup_cli)
groups.add_command(groups_register)
groups.add_command(groups_unregister)
groups.add_command(groups_set)
groups.add_command(groups_allow)
groups.add_command(groups_block)
groups.add_command(groups_senders)


if __name__ == "__main__":  # pragma: no cover
    with contextlib.suppress(KeyboardInterrupt):
        main()
