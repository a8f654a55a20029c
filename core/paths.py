"""Where clawgate keeps its files.

Config (secrets, master key, allowlist) and data (database, group folders, sockets)
live in separate XDG directories so that nothing in the config dir can ever end up
inside a container mount by accident.
"""

from __future__ import annotations

import os
from pathlib import Path

DATABASE = "clawgate.db"  # the gateway's SQLite database, in the data dir


def config_dir() -> Path:
    """`$CLAWGATE_CONFIG_DIR`, else `$XDG_CONFIG_HOME/clawgate`, else `~/.config/clawgate`."""
    explicit = os.environ.get("CLAWGATE_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return (Path(base).expanduser() / "clawgate").resolve()


def data_dir() -> Path:
    """`$CLAWGATE_DATA_DIR`, else `$XDG_DATA_HOME/clawgate`, else `~/.local/share/clawgate`."""
    explicit = os.environ.get("CLAWGATE_DATA_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(base).expanduser() / "clawgate").resolve()


def ensure_private_dir(path: Path) -> Path:
    """Create a directory readable only by the owner (0700); secrets and sockets live below."""
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


# Linux keeps a unix socket's path in sockaddr_un.sun_path: 108 bytes, the last one the closing
# NUL. A longer path cannot be bound or connected to at all; Python then raises a bare OSError
# ("AF_UNIX path too long") deep inside whichever process binds it. Checked up front instead
# (gateway.preflight, proxy.process, proxy.relay), naming the path and the fix.
SUN_PATH_MAX = 107


def socket_path_problem(path: Path) -> str | None:
    """Why `path` cannot be a unix socket (too long for sun_path), or None when it can."""
    size = len(os.fsencode(path))
    if size <= SUN_PATH_MAX:
        return None
    return (
        f"the unix socket path {path} is {size} bytes, over Linux's limit of {SUN_PATH_MAX}"
        " (sockaddr_un.sun_path)"
    )
