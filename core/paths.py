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
