"""Configuration mistakes that would otherwise pass silently, found before the gateway serves.

Each of these once looked like a working start-up followed by nothing: a main chat on a
channel that is not enabled stores messages nobody answers; a group outside the model
key's scope sends the placeholder and gets 401 on every turn; a local model address the
vault was not told about is refused at the first call; a stale image runs an old agent.
`clawgate run` (gateway/app.py) and `clawgate doctor` (gateway/doctor.py) both call these
functions, so what `doctor` predicts is what `run` does.

Findings carry a level: an `error` stops `run`, a `warning` is printed and `run` goes on.
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from core.config import AGENT_RUNTIMES, AgentRuntime, Config
from core.paths import socket_path_problem
from proxy.rules import host_matches, model_key_usable
from proxy.secrets import SecretInfo, SecretStore, VaultError

Level = Literal["error", "warning"]

_PREFIXES = {"console": "console", "tg": "telegram", "slack": "slack"}


@dataclass(frozen=True)
class Finding:
    level: Level
    what: str  # names the config key or secret at fault
    fix: str  # what to do about it

    def line(self) -> str:
        return f"{self.what}; fix: {self.fix}"


def registered_folders(data_dir: Path) -> list[str]:
    """Registered groups' folders, read without writing (no database yet: none).

    Read-only on purpose: `doctor` and `vault add` must never create or migrate a database.
    """
    import sqlite3

    from core.paths import DATABASE

    path = data_dir / DATABASE
    if not path.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute("SELECT folder FROM groups ORDER BY is_main DESC, folder").fetchall()
    except sqlite3.Error:
        return []  # unreadable or an old schema: the database check says why
    return [str(folder) for (folder,) in rows]


def socket_paths(data_dir: Path, folders: Iterable[str]) -> list[Path]:
    """Every unix socket the gateway and its vault bind under `data_dir` for these groups."""
    from gateway.control import SOCKET_NAME
    from gateway.sandboxes import GROUP_SOCKETS
    from groups.folders import group_dirs
    from proxy.process import CONTROL_SOCKET

    fixed = [data_dir / "run" / SOCKET_NAME, data_dir / "vault" / CONTROL_SOCKET]
    return fixed + [group_dirs(data_dir, f).run / name for f in folders for name in GROUP_SOCKETS]


def socket_path_findings(data_dir: Path, folders: Iterable[str]) -> list[Finding]:
    """A data dir so deep that a socket path exceeds sun_path stops `run` with one line.

    Without this the vault died at start with a traceback ("AF_UNIX path too long"), or a
    group's sandbox failed at its first message.
    """
    for path in socket_paths(data_dir, folders):
        problem = socket_path_problem(path)
        if problem is not None:
            return [
                Finding(
                    "error",
                    f"data dir {data_dir} is too deep for its sockets: {problem}",
                    "set CLAWGATE_DATA_DIR (or XDG_DATA_HOME) to a shorter directory",
                )
            ]
    return []


def configured_channels(cfg: Config) -> list[str]:
    """The channels `run` connects, in the order it connects them."""
    enabled = {
        "console": cfg.console.enabled,
        "slack": cfg.slack.enabled,
        "telegram": cfg.telegram.enabled,
    }
    return [name for name, on in enabled.items() if on]


def describe_channels(cfg: Config) -> str:
    """One line for `doctor` and the start log: what `run` will connect, and which chat is main."""
    modes = {"console": "the terminal", "slack": cfg.slack.mode, "telegram": cfg.telegram.mode}
    names = [f"{name} ({modes[name]})" for name in configured_channels(cfg)]
    main = cfg.main_chat or (cfg.console.main_chat if cfg.console.enabled else "none")
    return f"{', '.join(names) or 'none enabled'}; main chat {main}"


def channel_findings(cfg: Config, served: Callable[[str], bool] | None = None) -> list[Finding]:
    """`main_chat` must name a chat on a channel that is connected, or nobody ever answers.

    `served(chat_id)` says whether a connected channel owns the chat; without it the
    channels are the ones the config enables (what `run` and `doctor` see).
    """
    if cfg.main_chat is None:
        return []
    prefix = cfg.main_chat.split(":", 1)[0]
    channel = _PREFIXES[prefix]
    enabled = served(cfg.main_chat) if served is not None else channel in configured_channels(cfg)
    if not enabled:
        return [
            Finding(
                "error",
                f"main_chat = {cfg.main_chat!r} is on the {channel} channel, which is not enabled",
                f"set [{channel}] enabled = true (with its credentials), or point main_chat at an "
                f"enabled channel ({', '.join(configured_channels(cfg)) or 'none enabled'})",
            )
        ]
    if served is None and channel == "console" and cfg.main_chat != cfg.console.main_chat:
        return [
            Finding(
                "error",
                f"main_chat = {cfg.main_chat!r} but the console types into {cfg.console.main_chat!r}",
                f'set main_chat = "{cfg.console.main_chat}" or [console] main_chat = "{cfg.main_chat}"',
            )
        ]
    return []


def _model_address(cfg: Config) -> tuple[str, int]:
    parts = urlsplit(cfg.model.base_url)
    return (parts.hostname or "").lower(), parts.port or (443 if parts.scheme == "https" else 80)


def _is_local(host: str) -> bool:
    """Addresses the vault refuses unless allowed (proxy/addon.py ip_is_disallowed), by name or literal."""
    from proxy.addon import ip_is_disallowed

    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ip_is_disallowed(ipaddress.ip_address(host))
    except ValueError:
        return False  # a name: only its resolution (at request time) can tell


def private_upstream_findings(cfg: Config) -> list[Finding]:
    """A local model server the vault was not told about is refused at the first model call."""
    from proxy.addon import format_hostport, parse_hostport

    host, port = _model_address(cfg)
    if not _is_local(host):
        return []
    allowed = {parse_hostport(a) for a in cfg.vault.allow_private_upstreams}
    canonical = parse_hostport(format_hostport(host, port))
    if canonical in allowed:
        return []
    entry = format_hostport(*canonical)
    return [
        Finding(
            "error",
            f"[model] base_url {cfg.model.base_url} is a local address missing from "
            "[vault] allow_private_upstreams (the vault would refuse every model call)",
            f'add it: [vault] allow_private_upstreams = ["{entry}"]',
        )
    ]


def approval_policy_findings(cfg: Config) -> list[Finding]:
    """`[[vault.policy]]` hosts and paths in the vault rules' syntax: checked here, not first by the
    vault (core/config.py cannot import proxy/rules.py, so the vault would refuse to start)."""
    from proxy.holds import policy_entries
    from proxy.rules import RuleError

    try:
        policy_entries(cfg.vault.policy)
    except RuleError as exc:
        return [Finding("error", str(exc), "use host patterns like api.example.com and paths like /a/*")]
    v = cfg.vault
    if v.hold_timeout_s < v.approval.timeout_s:
        return [
            Finding(
                "warning",
                f"[vault.approval] timeout_s = {v.approval.timeout_s:g} is not shorter than [vault] "
                f"idle_timeout_s = {v.idle_timeout_s:g}: requests are held only {v.hold_timeout_s:g}s",
                "lower timeout_s or raise idle_timeout_s",
            )
        ]
    return []


def model_key_findings(
    cfg: Config, secrets: Iterable[SecretInfo], groups: Iterable[str], main: str | None = "main"
) -> list[Finding]:
    """Each group that runs turns needs a model key in scope, else its calls carry the placeholder.

    No secret for the model host at all is a warning only for a public host (a local model
    server often needs no key); a secret that exists but leaves a group out is the mistake
    issue 12 found: an error when the group is the main one, a warning for any other.
    """
    secrets = list(secrets)
    host, port = _model_address(cfg)
    model_secrets = [s for s in secrets if any(host_matches(r.host, host, port) for r in s.effective_rules)]
    hostport = f"{host}:{port}" if port not in (80, 443) else host
    if not model_secrets:
        if _is_local(host):
            return []
        return [
            Finding(
                "warning",
                f"no vault secret for the model host {hostport}: model calls go out without a key",
                f"clawgate vault add model --host {hostport} --preset {cfg.model.provider}"
                "  (value from stdin)",
            )
        ]
    names = ",".join(s.name for s in model_secrets)
    findings = []
    for group in groups:
        if model_key_usable(model_secrets, group, cfg.model.base_url):
            continue
        first = model_secrets[0]
        scope = ",".join((*first.groups, group))
        findings.append(
            Finding(
                "error" if group == main else "warning",
                f"group {group!r} is not in the scope of the model key {names} for {hostport}: "
                "its model calls would be sent without it (401)",
                f"clawgate vault scope {first.name} --groups {scope}  (or --groups '*' for every group)",
            )
        )
    return findings


def budget_findings(cfg: Config, groups: Iterable[str]) -> list[Finding]:
    """A `[budget.groups.<folder>]` that names no registered group limits nothing: most likely a
    misspelling, which would leave the intended group without its budget. Accepted (a budget may
    be written before its group is registered), but said."""
    registered = set(groups)
    return [
        Finding(
            "warning",
            f"[budget.groups.{folder}] names no registered group, so it limits nothing",
            f"check its spelling (registered: {', '.join(sorted(registered))}; `clawgate groups list`)",
        )
        for folder in sorted(cfg.budget.groups)
        if folder not in registered
    ]


def config_findings(cfg: Config, config_dir: Path, groups: Iterable[str]) -> list[Finding]:
    """Everything checkable from the config files and the registered groups' folder names."""
    findings = channel_findings(cfg) + private_upstream_findings(cfg)
    try:
        secrets = SecretStore(config_dir).list()
    except VaultError as exc:
        return [*findings, Finding("error", "the vault's secrets file", exc.message)]
    return findings + model_key_findings(cfg, secrets, groups)


def registered_runtimes(data_dir: Path) -> set[str]:
    """The agent runtimes registered groups chose for themselves (read-only; none without a column)."""
    import sqlite3

    from core.paths import DATABASE

    path = data_dir / DATABASE
    if not path.exists():
        return set()
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as db:
            rows = db.execute("SELECT DISTINCT runtime FROM groups WHERE runtime IS NOT NULL").fetchall()
    except sqlite3.Error:
        return set()
    return {str(runtime) for (runtime,) in rows}


def images_needed(cfg: Config, group_runtimes: Iterable[str] = ()) -> list[tuple[AgentRuntime, str]]:
    """`(runtime, image)` for every runtime in use: the default and the groups' own choices."""
    runtimes = {"builtin", cfg.agent.runtime, *group_runtimes}
    return [(r, cfg.runtime_image(r)) for r in AGENT_RUNTIMES if r in runtimes]


def image_findings(cfg: Config, group_runtimes: Iterable[str] = ()) -> list[Finding]:
    """A missing image stops a group's sandbox; a stale one runs an older agent than this checkout.

    Docker unreachable is reported elsewhere.
    """
    import docker
    from docker.errors import DockerException

    from groups.sandbox.image import image_is_current

    try:
        client = docker.from_env()
    except DockerException:
        return []
    findings = []
    try:
        for runtime, image in images_needed(cfg, group_runtimes):
            build = "clawgate image build" + (" --runtime claude" if runtime == "claude" else "")
            try:
                client.images.get(image)
            except DockerException:
                findings.append(
                    Finding(
                        "error",
                        f"image {image} of the {runtime} runtime does not exist",
                        f"build it: {build}",
                    )
                )
                continue
            if not image_is_current(client, image):
                findings.append(
                    Finding(
                        "warning",
                        f"image {image} does not contain this checkout's agent runtime (stale or foreign)",
                        f"rebuild it: {build}",
                    )
                )
    finally:
        client.close()
    return findings
