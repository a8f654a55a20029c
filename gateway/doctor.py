"""`clawgate doctor`: each prerequisite checked on its own, with the fix printed next to it."""

from __future__ import annotations

import asyncio
import os
import sys

import click

from core import config as config_mod
from core import paths
from gateway import preflight
from groups.sandbox.base import SandboxBackend, SandboxUnavailable
from groups.sandbox.docker import DockerBackend


def _report(ok: bool, what: str, fix: str = "") -> bool:
    mark = click.style("ok  ", fg="green") if ok else click.style("FAIL", fg="red")
    click.echo(f"[{mark}] {what}" + (f"\n       fix: {fix}" if fix and not ok else ""))
    return ok


async def _check_backend(backend: SandboxBackend, image: str) -> str | None:
    """None when the backend can run sandboxes of `image` here, else why not (with the fix)."""
    try:
        await backend.check(image)
        return None
    except SandboxUnavailable as exc:
        return str(exc)
    finally:
        await backend.close()


async def backend_report(cfg: config_mod.Config) -> dict[str, bool]:
    """Check every sandbox backend on this host; only the configured one can fail the doctor."""
    from groups.sandbox.bwrap import BwrapBackend

    checks: dict[str, tuple[str, SandboxBackend]] = {
        "docker": ("Docker engine and image", DockerBackend(1, cfg.sandbox.runtime)),
        "bwrap": (
            "bubblewrap, seccomp filter, namespaces and exported root filesystem",
            BwrapBackend(1, paths.data_dir()),
        ),
    }
    usable = {}
    for name, (what, backend) in checks.items():
        problem = await _check_backend(backend, cfg.sandbox.image)
        usable[name] = problem is None
        label = f"sandbox backend {name}: {what} {cfg.sandbox.image}"
        if name == cfg.sandbox.backend:
            _report(problem is None, label + " (configured)", problem or "")
        else:
            state = click.style("usable", fg="green") if problem is None else "not usable"
            click.echo(f"[info] {label}: {state}" + (f"\n       why: {problem}" if problem else ""))
    return usable


def _runsc_problem(image: str) -> str | None:
    import docker
    from docker.errors import DockerException

    from groups.sandbox.runsc import probe

    try:
        client = docker.from_env()
    except DockerException as exc:
        return f"cannot reach the Docker engine: {exc}"
    try:
        return probe(client, image)
    finally:
        client.close()


async def runsc_report(cfg: config_mod.Config) -> bool:
    """gVisor is checked by running it: registered in `docker info` is not enough (see groups.sandbox.runsc).

    Fails the doctor only when `[sandbox] runtime = "runsc"`; otherwise says whether it would work.
    """
    problem = await asyncio.to_thread(_runsc_problem, cfg.sandbox.image)
    label = f"sandbox runtime runsc (gVisor): {cfg.sandbox.image} runs and reaches a host socket"
    if cfg.sandbox.backend == "docker" and cfg.sandbox.runtime == "runsc":
        return _report(problem is None, label + " (configured)", problem or "")
    state = click.style("usable", fg="green") if problem is None else "not usable"
    click.echo(f"[info] {label}: {state}" + (f"\n       why: {problem}" if problem else ""))
    return True


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
    usable = await backend_report(cfg)
    results.append(usable[cfg.sandbox.backend])
    results.append(await runsc_report(cfg))
    key = paths.config_dir() / "master.key"
    if key.exists():
        mode = key.stat().st_mode & 0o777
        results.append(_report(mode == 0o600, f"master key mode {oct(mode)}", f"chmod 600 {key}"))
    folders = preflight.registered_folders(paths.data_dir()) or ["main"]
    results.extend(_preflight(cfg, folders))
    results.extend(
        _findings(
            preflight.socket_path_findings(paths.data_dir(), folders),
            f"socket paths under {paths.data_dir()} fit a unix socket",
        )
    )
    if os.geteuid() == 0:
        results.append(
            _report(
                True,
                f"running as root: each group's sandbox runs as its own uid above {cfg.sandbox.run_as_uid}",
            )
        )
    runtimes = preflight.registered_runtimes(paths.data_dir())
    needed = ", ".join(f"{image} ({runtime})" for runtime, image in preflight.images_needed(cfg, runtimes))
    results.extend(
        _findings(preflight.image_findings(cfg, runtimes), f"images exist and are current: {needed}")
    )
    results.append(_vault_ca())
    results.append(_allowlist())
    results.append(_wallet(cfg))
    results.append(await _database())
    _report(True, f"channels: {preflight.describe_channels(cfg)}")
    results.append(_disk(cfg.sandbox.min_free_mb))
    return all(results)


def _findings(findings: list[preflight.Finding], ok_label: str) -> list[bool]:
    """Doctor is the strict reading of the preflight: a warning at `run` is a FAIL here."""
    if not findings:
        return [_report(True, ok_label)]
    return [_report(False, f"{f.what} ({f.level} at `clawgate run`)", f.fix) for f in findings]


def _preflight(cfg: config_mod.Config, groups: list[str]) -> list[bool]:
    """The same config checks `run` makes (gateway/preflight.py), so the two cannot disagree."""
    from proxy.secrets import SecretStore, VaultError

    host = cfg.model.base_url.split("://", 1)[1].split("/", 1)[0].lower()
    results = _findings(
        preflight.channel_findings(cfg), f"main chat {cfg.main_chat or 'console'} is on an enabled channel"
    )
    results += _findings(
        preflight.private_upstream_findings(cfg), f"model address {cfg.model.base_url} allowed by the vault"
    )
    results += _findings(
        preflight.approval_policy_findings(cfg), f"[[vault.policy]]: {len(cfg.vault.policy)} valid entries"
    )
    results += _findings(
        preflight.budget_findings(cfg, groups),
        f"[budget.groups]: {len(cfg.budget.groups)} registered group(s)",
    )
    try:
        secrets = SecretStore(paths.config_dir()).list()
    except VaultError as exc:
        return [*results, _report(False, "vault secrets file", exc.message)]
    return results + _findings(
        preflight.model_key_findings(cfg, secrets, groups),
        f"model key for {host}: usable by group(s) {', '.join(groups)} (or none needed)",
    )


def _vault_ca() -> bool:
    ca = paths.data_dir() / "vault" / "ca" / "mitmproxy-ca-cert.pem"
    if ca.exists():
        return _report(True, f"vault CA certificate {ca}")
    click.echo(f"[info] vault CA not created yet; the first `clawgate run` creates {ca}")
    return True


def _allowlist() -> bool:
    from groups.mounts import ALLOWLIST_FILE, AllowlistError, load_allowlist

    path = paths.config_dir() / ALLOWLIST_FILE
    if not path.exists():
        click.echo(f"[info] no mount allowlist at {path}: extra mounts are disabled")
        return True
    try:
        load_allowlist(path)
    except AllowlistError as exc:
        return _report(False, f"mount allowlist {path}", f"{exc} (see mount-allowlist.example.json)")
    return _report(True, f"mount allowlist {path}")


async def _database() -> bool:
    from core.paths import DATABASE
    from gateway.store import MIGRATIONS, Store, StoreUnusable

    path = paths.data_dir() / DATABASE
    if not path.exists():  # doctor only looks: it never creates a database as a side effect
        click.echo(f"[info] no database yet; the first `clawgate run` creates {path}")
        return True
    try:
        store = await Store.open(path, create=False, migrate=False)  # the checks `run` makes
        try:
            version = await store.schema_version()
            await store.check_writable()
        finally:
            await store.close()
    except StoreUnusable as exc:
        return _report(False, f"database {path}", str(exc))
    except Exception as exc:  # any failure here is the finding
        return _report(
            False, f"database {path}", f"{exc.__class__.__name__}: {exc}; check permissions and disk"
        )
    return _report(
        version <= len(MIGRATIONS),
        f"database {path} (schema v{version}"
        + (", migrated at the next start)" if version < len(MIGRATIONS) else ")"),
        "written by a newer clawgate: upgrade clawgate",
    )


def _wallet(cfg: config_mod.Config) -> bool:
    """Wallet keys are optional; when present their file must be private and the policy must name them."""
    from gateway.wallet.keyinfo import WalletError
    from gateway.wallet.keystore import KEYS_FILE, KeyStore

    path = paths.config_dir() / KEYS_FILE
    if not path.exists():
        return _report(True, "wallet: no NEAR keys (optional; `clawgate wallet generate`)")
    mode = path.stat().st_mode & 0o777
    if mode != 0o600:
        return _report(False, f"wallet key file mode {oct(mode)}", f"chmod 600 {path}")
    try:
        names = {key.name for key in KeyStore(paths.config_dir()).list()}
    except WalletError as exc:
        return _report(False, "wallet key store", exc.message)
    unknown = sorted(set(cfg.wallet.policy.key_groups) - names)
    if unknown:
        return _report(
            False,
            f"[wallet.policy] key_groups names keys that do not exist: {', '.join(unknown)}",
            "fix the names or `clawgate wallet list`",
        )
    return _report(True, f"wallet: {len(names)} NEAR key(s), RPC {cfg.wallet.effective_rpc_url}")


def _disk(min_free_mb: int) -> bool:
    """The data dir's disk against `[sandbox] min_free_mb`: below it, the gateway refuses turns."""
    import shutil

    target = paths.data_dir()
    target.mkdir(parents=True, exist_ok=True)
    free_mb = shutil.disk_usage(target).free // 2**20
    return _report(
        free_mb >= min_free_mb,
        f"free disk in {target}: {free_mb / 1024:.1f} GiB (floor [sandbox] min_free_mb = {min_free_mb})",
        "free some disk space: below the floor no sandbox runs",
    )
