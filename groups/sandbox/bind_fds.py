"""Open a mount source as a file descriptor so the sandbox mounts exactly what was checked.

`groups.mounts` validates a grant by its real path; the sandbox is started a moment later.
Mounting that *path* re-resolves it, so whoever can write a parent directory (a read-write grant
nested in another, a second group sharing the tree, a user on the host) can swap a component
for a symlink in between and have a different tree mounted: a check/use race. Instead the
source is opened now, component by component from `/` with `O_PATH | O_NOFOLLOW` (a symlink
anywhere refuses the mount), its resulting path is compared with the validated one, and the
backend mounts the descriptor (`bwrap --bind-fd`). Whatever happens to the path afterwards,
the sandbox gets the inode that was checked; if the path changed before it was opened, the
sandbox does not start (fail closed).

Docker cannot do this: the engine resolves bind sources by path in its own process (the
API takes paths, not descriptors), so its grants keep the validated-path model.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


class BindSourceChanged(Exception):
    """The path no longer leads, without symlinks, to a directory or file; the message says how."""


def open_bind_source(path: Path) -> int:
    """An `O_PATH` fd (close-on-exec) for the absolute, symlink-free `path`; the caller closes it."""
    if not path.is_absolute() or any(part in (".", "..") for part in path.parts):
        raise BindSourceChanged(f"{path} is not an absolute normalized path")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in path.parts[1:]:
            try:
                # O_PATH|O_NOFOLLOW opens a symlink itself instead of following it: checked below
                child = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except OSError as exc:
                raise BindSourceChanged(f"{path}: cannot open {part!r}: {exc.strerror}") from None
            os.close(fd)
            fd = child
            kind = os.fstat(fd).st_mode
            if stat.S_ISLNK(kind):
                raise BindSourceChanged(f"{path}: {part!r} is now a symlink")
        kind = os.fstat(fd).st_mode
        if not (stat.S_ISDIR(kind) or stat.S_ISREG(kind) or stat.S_ISCHR(kind)):
            raise BindSourceChanged(f"{path} is neither a directory, a file nor a device")
        actual = os.readlink(f"/proc/self/fd/{fd}")
        if actual != str(path):
            raise BindSourceChanged(f"{path} now resolves to {actual}")
    except BaseException:
        os.close(fd)
        raise
    return fd
