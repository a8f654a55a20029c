"""`clawgate service install`: a systemd unit that runs the gateway as a daemon.

The unit is generated, not shipped, because it must name this install's absolute `clawgate`
path and its config/data dirs (a system unit does not share the installing user's HOME or
XDG variables). Secrets are never written into it: they stay in the encrypted vault, in
config.toml, or in an optional `EnvironmentFile` the operator keeps private.
"""

from __future__ import annotations

import getpass
import os
import shutil
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

UNIT_NAME = "clawgate.service"
ENV_FILE = "service.env"  # optional, in the config dir: CLAWGATE_TELEGRAM_TOKEN=… and friends


class ServiceError(Exception):
    """Why the unit was not written; the message says what to do."""


@dataclass(frozen=True)
class UnitSpec:
    executable: Path
    config_dir: Path
    data_dir: Path
    user_unit: bool
    user: str
    backend: str
    grace_s: float = 30.0


def clawgate_executable() -> Path:
    """The absolute path of the running `clawgate` (a venv's script is not on systemd's PATH)."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "clawgate" and argv0.exists():
        return argv0.absolute()
    beside = Path(sys.executable).parent / "clawgate"  # the same venv's script
    if beside.exists():
        return beside.absolute()
    found = shutil.which("clawgate")
    if found is None:
        raise ServiceError("cannot find the clawgate executable; install clawgate (pip install .) first")
    return Path(found).absolute()


def default_unit_dir(user_unit: bool) -> Path:
    if not user_unit:
        return Path("/etc/systemd/system")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def bwrap_is_setuid() -> bool:
    found = shutil.which("bwrap")
    return found is not None and bool(os.stat(found).st_mode & stat.S_ISUID)


def _quote(value: str) -> str:
    """systemd's quoting for one word of ExecStart/Environment (spaces and quotes escaped)."""
    if all(c.isalnum() or c in "/._-+:@=," for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(spec: UnitSpec) -> str:
    no_new_privs = not (spec.backend == "bwrap" and bwrap_is_setuid())
    lines = [
        "# Written by `clawgate service install`; regenerate it rather than editing by hand.",
        "[Unit]",
        "Description=clawgate chat-bot gateway",
        "After=network-online.target" + ("" if spec.user_unit else " docker.service"),
        "Wants=network-online.target",
        "",
        "[Service]",
        # stdin is /dev/null: `clawgate run` runs as a daemon (no console), see README.
        "Type=exec",
        f"ExecStart={_quote(str(spec.executable))} run --grace {spec.grace_s:g}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        f"Environment={_quote('CLAWGATE_CONFIG_DIR=' + str(spec.config_dir))}",
        f"Environment={_quote('CLAWGATE_DATA_DIR=' + str(spec.data_dir))}",
        f"EnvironmentFile=-{_quote(str(spec.config_dir / ENV_FILE))}",
        "Restart=on-failure",
        "RestartSec=5",
        # SIGTERM lets running turns finish within --grace, then stops containers and the vault.
        f"TimeoutStopSec={spec.grace_s + 30:g}",
        "KillMode=mixed",
    ]
    if not spec.user_unit:
        lines.append(f"User={spec.user}")
    lines += [
        "UMask=0077",
        "# Hardening that leaves Docker and bubblewrap working:",
        "# - ProtectSystem=full: /usr, /boot and /etc read-only; config and data dirs stay writable.",
        "# - Not ProtectHome: the config and data dirs usually live in the home directory.",
        "# - Not PrivateTmp: Docker bind-mounts host paths, and dockerd sees the real /tmp.",
        "# - Not ProtectKernelTunables/ProtectProc/RestrictNamespaces: bubblewrap creates",
        "#   namespaces and mounts a fresh /proc, which the kernel refuses under /proc overmounts.",
        "ProtectSystem=full",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "RestrictRealtime=yes",
    ]
    if no_new_privs:
        lines.append("# NoNewPrivileges: safe here (no setuid bwrap is needed; Docker runs in dockerd).")
        lines.append("NoNewPrivileges=yes")
    else:
        lines.append("# No NoNewPrivileges: this host's bwrap is setuid-root and would lose its privileges.")
    lines += ["", "[Install]", f"WantedBy={'default.target' if spec.user_unit else 'multi-user.target'}", ""]
    return "\n".join(lines)


def install(unit_dir: Path, content: str, force: bool) -> Path:
    """Write the unit; an existing different one is only replaced with `force`."""
    path = unit_dir / UNIT_NAME
    if path.exists() and path.read_text(encoding="utf-8") != content and not force:
        raise ServiceError(f"{path} exists and differs; compare it, then rerun with --force to replace it")
    unit_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{UNIT_NAME}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.chmod(0o644)
    os.replace(tmp, path)  # never a half-written unit
    return path


def current_user() -> str:
    """Under sudo, the user who asked (root owning the data dir would lock them out)."""
    return os.environ.get("SUDO_USER") or getpass.getuser()
