"""The only code that touches files inside a sandbox-writable tree from the host (invariant 9).

A group folder (and the global folder, for main) is written by an agent we assume hostile. It
can plant a symlink, a FIFO, a hard link or a deep directory chain anywhere in it at any
moment, also between two of our system calls. So nothing here resolves a multi-component path
with a plain call: every operation starts from a directory file descriptor of a trusted root
(whose parents are host-owned) and walks one component at a time with `openat`-style calls and
`O_NOFOLLOW`. A component that is a link, a special file, or on another filesystem is refused
with `UnsafeEntry`; files are opened `O_NONBLOCK` and checked with `fstat` (regular, one link,
our device) before a byte is read; new files are created `O_EXCL` and published with a rename
inside the same directory fd, so a name planted at the target is replaced, never followed.
Tree removal and the usage walk are fd-relative, never follow a symlinked directory, never
cross into another filesystem and are bounded in depth and entries.

Every operation is blocking disk I/O; async callers use the `a*` wrappers, which run it in a
worker thread, so a slow or hostile tree never stalls the event loop.

`tests/unit/test_groupfs_ownership.py` fails if code elsewhere does file operations on group
paths; add what you need here instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC
MAX_DEPTH = 64  # directory levels below a root that a walk descends (each level holds one fd)
DEFAULT_MAX_READ = 1 << 20


class UnsafeEntry(OSError):
    """A path inside a sandbox-writable tree is a link, a special file, a foreign hard link,
    on another filesystem, or nested too deeply: the host refuses to use it."""


@dataclass(frozen=True, slots=True)
class Usage:
    """What a tree occupies on disk: allocated bytes (st_blocks, so sparse files count what
    they really use), entries seen, and whether the walk saw everything within its bounds."""

    bytes: int
    entries: int
    complete: bool
    reason: str = ""


def _check_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise ValueError(f"invalid path component {name!r}")
    return name


def _parts(rel: str | Path) -> list[str]:
    text = str(rel)
    if text.startswith("/"):
        raise ValueError(f"{text!r} must be relative to the tree's root")
    return [_check_name(p) for p in text.split("/") if p not in ("", ".")]


def _describe(dir_fd: int, name: str) -> str:
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        return "vanished"
    if stat.S_ISLNK(st.st_mode):
        return "a symbolic link"
    if stat.S_ISFIFO(st.st_mode):
        return "a FIFO"
    if stat.S_ISSOCK(st.st_mode):
        return "a socket"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        return "a device"
    if stat.S_ISDIR(st.st_mode):
        return "a directory"
    return "not a plain file"


def _open_dir_at(dir_fd: int, name: str, root_dev: int, where: str) -> int:
    """Open one component as a directory, refusing links and other filesystems."""
    try:
        fd = os.open(_check_name(name), _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeEntry(exc.errno, f"{where} is {_describe(dir_fd, name)}, not a directory") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_dev != root_dev:
        os.close(fd)
        raise UnsafeEntry(errno.EXDEV, f"{where} is on another filesystem")
    return fd


def open_root_fd(root: Path, *, path_only: bool = False) -> int:
    """An fd for a tree's root that the caller closes (e.g. to hand a sandbox backend a mount
    source by fd). `path_only` opens it O_PATH, enough for `/proc/self/fd/N` bind sources."""
    flags = _DIR_FLAGS | (os.O_PATH if path_only else 0)
    try:
        return os.open(root, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeEntry(exc.errno, f"{root} is not a directory (a link?)") from None
        raise


@contextlib.contextmanager
def open_root(root: Path) -> Iterator[int]:
    """A directory fd for a tree's root. The root's parents are host-owned (the data dir), so
    only the last component could be swapped, and it is opened with O_NOFOLLOW."""
    fd = open_root_fd(root)
    try:
        yield fd
    finally:
        os.close(fd)


@contextlib.contextmanager
def _walk(root: Path, parts: list[str], *, create: bool = False, mode: int = 0o755) -> Iterator[int]:
    """An fd for the directory `root/parts…`, walked one component at a time (created if asked)."""
    with open_root(root) as root_fd:
        root_dev = os.fstat(root_fd).st_dev
        fds = [root_fd]
        try:
            for depth, name in enumerate(parts):
                where = "/".join(parts[: depth + 1])
                try:
                    fd = _open_dir_at(fds[-1], name, root_dev, where)
                except FileNotFoundError:
                    if not create:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, mode, dir_fd=fds[-1])
                    fd = _open_dir_at(fds[-1], name, root_dev, where)
                fds.append(fd)
            yield fds[-1]
        finally:
            for fd in fds[1:]:
                os.close(fd)


def _checked_file(fd: int, root_dev: int, where: str) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnsafeEntry(errno.EINVAL, f"{where} is not a regular file")
    if st.st_nlink != 1:
        raise UnsafeEntry(errno.EMLINK, f"{where} has {st.st_nlink} hard links")
    if st.st_dev != root_dev:
        raise UnsafeEntry(errno.EXDEV, f"{where} is on another filesystem")
    return st


def _open_file_at(dir_fd: int, name: str, root_dev: int, where: str) -> int:
    """Open an existing regular file for reading without following, blocking on or using a
    FIFO, device or foreign hard link."""
    try:
        st = os.stat(_check_name(name), dir_fd=dir_fd, follow_symlinks=False)
    except OSError:
        raise
    if not stat.S_ISREG(st.st_mode):  # refuse before open(): opening a device can have effects
        raise UnsafeEntry(errno.EINVAL, f"{where} is {_describe(dir_fd, name)}")
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeEntry(exc.errno, f"{where} is a symbolic link") from None
        raise
    try:
        _checked_file(fd, root_dev, where)  # swapped between stat and open: checked again
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_bytes(root: Path, rel: str | Path, max_bytes: int = DEFAULT_MAX_READ) -> bytes:
    """A regular file's content, at most `max_bytes` (more is an error, not a truncation)."""
    *dirs, name = _parts(rel)
    with _walk(root, dirs) as dir_fd:
        root_dev = os.fstat(dir_fd).st_dev
        fd = _open_file_at(dir_fd, name, root_dev, str(rel))
        with os.fdopen(fd, "rb") as f:
            data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise OSError(errno.EFBIG, f"{rel} is larger than {max_bytes} bytes")
    return data


def write_bytes(
    root: Path,
    rel: str | Path,
    data: bytes,
    *,
    mode: int = 0o644,
    exclusive: bool = False,
    make_parents: bool = False,
    dir_mode: int = 0o755,
    create_root: bool = False,
) -> None:
    """Write a whole file. `exclusive`: create it with O_EXCL (FileExistsError if the name is
    taken, by anything, even a dangling link). Otherwise write a fresh temp file and rename it
    over the name: whatever was planted there (a link, a FIFO) is replaced, never written through."""
    *dirs, name = _parts(rel)
    _check_name(name)
    if create_root:  # a host-owned root (e.g. an inbox) made on first use
        ensure_root(root.parent, root.name, mode=dir_mode)
    with _walk(root, dirs, create=make_parents, mode=dir_mode) as dir_fd:
        target = name if exclusive else f".{name}.{secrets.token_hex(6)}.tmp"
        fd = os.open(target, _CREATE_FLAGS, mode, dir_fd=dir_fd)
        try:
            os.fchmod(fd, mode)  # the umask must not decide who can read it
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(target, dir_fd=dir_fd)
            raise
        os.close(fd)
        if not exclusive:
            try:
                os.rename(target, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(target, dir_fd=dir_fd)
                raise


def unlink(root: Path, rel: str | Path, *, missing_ok: bool = True) -> bool:
    """Remove one non-directory entry (a link is removed itself, never its target)."""
    *dirs, name = _parts(rel)
    try:
        with _walk(root, dirs) as dir_fd:
            os.unlink(_check_name(name), dir_fd=dir_fd)
    except FileNotFoundError:
        if missing_ok:
            return False
        raise
    return True


def make_dirs(root: Path, rel: str | Path, mode: int = 0o755) -> None:
    """Create `rel` and its parents below `root`; an existing link on the way is refused."""
    with _walk(root, _parts(rel), create=True, mode=mode):
        pass


def _rmtree_at(parent_fd: int, name: str, root_dev: int, depth: int) -> None:
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=parent_fd)
        return
    if depth >= MAX_DEPTH:
        raise UnsafeEntry(errno.ELOOP, f"nested deeper than {MAX_DEPTH} directories; remove it by hand")
    try:
        fd = _open_dir_at(parent_fd, name, root_dev, name)
    except UnsafeEntry:  # swapped for a link since the stat: remove the link itself
        with contextlib.suppress(FileNotFoundError, IsADirectoryError):
            os.unlink(name, dir_fd=parent_fd)
        return
    except FileNotFoundError:
        return
    try:
        with os.scandir(fd) as entries:
            names = [e.name for e in entries]
        for child in names:
            _rmtree_at(fd, child, root_dev, depth + 1)
    finally:
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        os.rmdir(name, dir_fd=parent_fd)


def remove_tree(root: Path, rel: str | Path) -> None:
    """Delete `rel` (file or directory) and everything below it, fd-relative. A symlink, at any
    level including `rel` itself, is removed as a link; what it points at is never touched."""
    *dirs, name = _parts(rel)
    try:
        with _walk(root, dirs) as dir_fd:
            _rmtree_at(dir_fd, _check_name(name), os.fstat(dir_fd).st_dev, 0)
    except FileNotFoundError:
        return


class _Budget:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.entries = 0
        self.bytes = 0
        self.seen: set[tuple[int, int]] = set()


class _Incomplete(Exception):
    pass


def _usage_at(dir_fd: int, root_dev: int, depth: int, budget: _Budget) -> None:
    """Depth-first, one fd per level: a directory with many subdirectories holds no more fds."""
    with os.scandir(dir_fd) as it:
        names = [e.name for e in it]
    for name in names:
        budget.entries += 1
        if budget.entries > budget.max_entries:
            raise _Incomplete(f"more than {budget.max_entries} files")
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_dev != root_dev:
            continue
        if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in budget.seen:
                continue
            budget.seen.add((st.st_dev, st.st_ino))
        budget.bytes += st.st_blocks * 512
        if not stat.S_ISDIR(st.st_mode):
            continue
        if depth + 1 >= MAX_DEPTH:
            raise _Incomplete(f"nested deeper than {MAX_DEPTH} directories")
        try:
            child = _open_dir_at(dir_fd, name, root_dev, name)
        except (UnsafeEntry, FileNotFoundError):
            continue  # swapped for a link (counted as one) or removed meanwhile
        try:
            _usage_at(child, root_dev, depth + 1, budget)
        finally:
            os.close(child)


def usage(root: Path, *, max_entries: int = 200_000) -> Usage:
    """Disk blocks used below `root`, from lstat only (links are counted as links, never
    followed; a hard-linked inode once; other filesystems not entered). Stops after
    `max_entries` entries or `MAX_DEPTH` levels and says so (`complete=False`)."""
    try:
        root_fd = os.open(root, _DIR_FLAGS)
    except FileNotFoundError:
        return Usage(0, 0, True)
    budget = _Budget(max_entries)
    try:
        root_st = os.fstat(root_fd)
        budget.bytes = root_st.st_blocks * 512
        _usage_at(root_fd, root_st.st_dev, 0, budget)
    except _Incomplete as stop:
        return Usage(budget.bytes, budget.entries, False, str(stop))
    finally:
        os.close(root_fd)
    return Usage(budget.bytes, budget.entries, True)


def ensure_root(parent: Path, name: str, *, mode: int, owner: tuple[int, int] | None = None) -> Path:
    """Create (or fix up) a tree's root directory `parent/name`, where `parent` is host-owned:
    ownership and mode are set through the directory's fd, so a link there is never followed."""
    parent.mkdir(parents=True, exist_ok=True)
    with open_root(parent) as parent_fd:
        with contextlib.suppress(FileExistsError):
            os.mkdir(_check_name(name), mode, dir_fd=parent_fd)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeEntry(exc.errno, f"{parent / name} is {_describe(parent_fd, name)}") from None
            raise
        try:
            if owner is not None:
                os.fchown(fd, *owner)
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
    return parent / name


def _hand_over_at(dir_fd: int, root_dev: int, previous: int, owner: tuple[int, int], depth: int) -> None:
    with os.scandir(dir_fd) as it:
        names = [e.name for e in it]
    for name in names:
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        if st.st_dev != root_dev or st.st_uid != previous:
            continue
        if not stat.S_ISDIR(st.st_mode):
            if st.st_nlink == 1:  # a second link may be a foreign inode: leave it alone
                os.chown(name, *owner, dir_fd=dir_fd, follow_symlinks=False)
            continue
        if depth + 1 >= MAX_DEPTH:
            continue  # deeper than any walk here goes: stays with the old uid, never blocks a start
        try:
            child = _open_dir_at(dir_fd, name, root_dev, name)
        except (UnsafeEntry, FileNotFoundError):
            continue
        try:
            os.fchown(child, *owner)
            _hand_over_at(child, root_dev, previous, owner, depth + 1)
        finally:
            os.close(child)


def hand_over(root: Path, owner: tuple[int, int]) -> None:
    """Give the tree at `root` to `owner`: the root, and every entry below it that the root's
    previous (non-root) owner owned. Used when a group's sandbox uid changes (`groups.uids`),
    while no sandbox of that tree runs. fd-relative and never following a link (a symlink is
    chowned itself, `follow_symlinks=False`); an entry with a second hard link, on another
    filesystem or owned by anyone else stays as it is. The root changes owner last, so an
    interrupted hand-over is redone next time."""
    with open_root(root) as root_fd:
        st = os.fstat(root_fd)
        if (st.st_uid, st.st_gid) == owner:
            return
        if st.st_uid != 0:  # a root-owned tree was never a sandbox's: nothing inside to move
            _hand_over_at(root_fd, st.st_dev, st.st_uid, owner, 0)
        os.fchown(root_fd, *owner)


# -- async wrappers: every disk touch from the event loop goes through a worker thread ---------


async def aread_bytes(root: Path, rel: str | Path, max_bytes: int = DEFAULT_MAX_READ) -> bytes:
    return await asyncio.to_thread(read_bytes, root, rel, max_bytes)


async def awrite_bytes(
    root: Path,
    rel: str | Path,
    data: bytes,
    *,
    mode: int = 0o644,
    exclusive: bool = False,
    make_parents: bool = False,
    create_root: bool = False,
) -> None:
    await asyncio.to_thread(
        lambda: write_bytes(
            root,
            rel,
            data,
            mode=mode,
            exclusive=exclusive,
            make_parents=make_parents,
            create_root=create_root,
        )
    )


async def aunlink(root: Path, rel: str | Path, *, missing_ok: bool = True) -> bool:
    return await asyncio.to_thread(lambda: unlink(root, rel, missing_ok=missing_ok))


async def aremove_tree(root: Path, rel: str | Path) -> None:
    await asyncio.to_thread(remove_tree, root, rel)


async def ausage(root: Path, *, max_entries: int = 200_000) -> Usage:
    return await asyncio.to_thread(lambda: usage(root, max_entries=max_entries))
