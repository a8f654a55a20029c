"""groups.groupfs against the tricks a hostile agent can plant in its own folder.

Every test builds a real tree on disk (symlinks, FIFOs, hard links, deep chains) and checks
that the host-side operation refuses or removes the planted entry and that nothing outside
the tree changed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from groups import groupfs
from groups.groupfs import UnsafeEntry


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "groups" / "team"
    root.mkdir(parents=True)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret.txt").write_text("host data")
    return host


def snapshot(path: Path) -> dict[str, bytes | str]:
    result: dict[str, bytes | str] = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        result[rel] = (
            f"link:{os.readlink(p)}" if p.is_symlink() else (p.read_bytes() if p.is_file() else "dir")
        )
    return result


# -- a symlink at every component --------------------------------------------------------------


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_write_through_a_symlinked_directory_component_is_refused(
    tree: Path, outside: Path, depth: int
) -> None:
    parts = ["a", "b", "c"]
    real = tree
    for name in parts[:depth]:
        real = real / name
        real.mkdir()
    (real / parts[depth]).symlink_to(outside)  # the planted link, at level `depth`
    before = snapshot(outside)
    rel = "/".join(parts) + "/new.txt"
    with pytest.raises(UnsafeEntry, match="symbolic link"):
        groupfs.write_bytes(tree, rel, b"x", make_parents=True)
    with pytest.raises(UnsafeEntry):
        groupfs.read_bytes(tree, "/".join(parts[: depth + 1]) + "/secret.txt")
    with pytest.raises(UnsafeEntry):
        groupfs.unlink(tree, "/".join(parts[: depth + 1]) + "/secret.txt")
    assert snapshot(outside) == before


def test_symlink_at_the_file_itself_is_replaced_not_followed(tree: Path, outside: Path) -> None:
    (tree / "MEMORY.md").symlink_to(outside / "secret.txt")
    with pytest.raises(UnsafeEntry, match="symbolic link"):
        groupfs.read_bytes(tree, "MEMORY.md")
    groupfs.write_bytes(tree, "MEMORY.md", b"fresh")
    assert not (tree / "MEMORY.md").is_symlink()
    assert (tree / "MEMORY.md").read_bytes() == b"fresh"
    assert (outside / "secret.txt").read_text() == "host data"


def test_exclusive_create_refuses_a_planted_dangling_link(tree: Path, outside: Path) -> None:
    (tree / "inbox").mkdir()
    (tree / "inbox" / "7-report.txt").symlink_to(outside / "created-by-attacker")
    with pytest.raises(FileExistsError):
        groupfs.write_bytes(tree, "inbox/7-report.txt", b"x", exclusive=True)
    assert not (outside / "created-by-attacker").exists()


def test_symlinked_root_is_refused(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "team").symlink_to(outside)
    with pytest.raises(OSError):
        groupfs.write_bytes(tmp_path / "groups" / "team", "x", b"x")
    with pytest.raises(UnsafeEntry):
        groupfs.ensure_root(tmp_path / "groups", "team", mode=0o700)
    with pytest.raises(UnsafeEntry):
        groupfs.open_root_fd(tmp_path / "groups" / "team", path_only=True)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]


# -- special files ---------------------------------------------------------------------------------


def test_fifo_is_refused_without_blocking(tree: Path) -> None:
    os.mkfifo(tree / "history.json")
    done = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        try:
            groupfs.read_bytes(tree, "history.json")
        except BaseException as exc:  # noqa: BLE001 - recorded for the assertion below
            errors.append(exc)
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(10), "reading a FIFO blocked"
    assert isinstance(errors[0], UnsafeEntry) and "FIFO" in str(errors[0])
    groupfs.write_bytes(tree, "history.json", b"{}")  # replaced by a regular file, not opened
    assert (tree / "history.json").read_bytes() == b"{}"


def test_device_is_refused(tree: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device node needs root")
    os.mknod(tree / "dev", 0o600 | 0o020000, os.makedev(1, 3))  # /dev/null's numbers
    with pytest.raises(UnsafeEntry, match="device"):
        groupfs.read_bytes(tree, "dev")


def test_hard_link_to_a_foreign_file_is_refused(tree: Path, tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("another group's data")
    os.link(foreign, tree / "linked.txt")
    with pytest.raises(UnsafeEntry, match="hard links"):
        groupfs.read_bytes(tree, "linked.txt")
    groupfs.write_bytes(tree, "linked.txt", b"mine")  # a new inode replaces the name
    assert foreign.read_text() == "another group's data"
    assert (tree / "linked.txt").read_bytes() == b"mine"


def test_read_is_bounded(tree: Path) -> None:
    (tree / "big").write_bytes(b"x" * 100)
    assert groupfs.read_bytes(tree, "big", max_bytes=100) == b"x" * 100
    with pytest.raises(OSError, match="larger than 99"):
        groupfs.read_bytes(tree, "big", max_bytes=99)


def test_traversal_and_absolute_names_are_refused(tree: Path) -> None:
    for rel in ("../x", "a/../../x", "/etc/passwd"):
        with pytest.raises(ValueError):
            groupfs.write_bytes(tree, rel, b"x")


# -- O_EXCL under a race ------------------------------------------------------------------------------


def test_exclusive_create_race_has_one_winner(tree: Path) -> None:
    barrier = threading.Barrier(8)
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        barrier.wait()
        try:
            groupfs.write_bytes(tree, "once", str(i).encode(), exclusive=True)
            result = "won"
        except FileExistsError:
            result = "exists"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["exists"] * 7 + ["won"]


def test_replace_races_a_link_swapper_without_writing_outside(tree: Path, outside: Path) -> None:
    """A thread keeps swapping `target` between a file and a link to the host; every write
    lands in the tree or fails, never outside."""
    stop = threading.Event()
    victim = outside / "secret.txt"

    def swapper() -> None:
        while not stop.is_set():
            for make in (lambda p: p.symlink_to(victim), lambda p: p.mkdir()):
                p = tree / "target"
                with contextlib.suppress(OSError):
                    make(p)
                with contextlib.suppress(OSError):
                    (p.rmdir() if p.is_dir() and not p.is_symlink() else p.unlink())

    thread = threading.Thread(target=swapper, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                groupfs.write_bytes(tree, "target", b"gateway")
    finally:
        stop.set()
        thread.join()
    assert victim.read_text() == "host data"


# -- removal and the usage walk --------------------------------------------------------------------


def test_remove_tree_removes_a_symlinked_directory_as_a_link(tmp_path: Path, tree: Path) -> None:
    other = tmp_path / "groups" / "other" / ".clawgate"
    other.mkdir(parents=True)
    (other / "history.json").write_text("the other group's history")
    (tree / ".clawgate").symlink_to(other)
    groupfs.remove_tree(tree, ".clawgate")
    assert not (tree / ".clawgate").is_symlink()
    assert (other / "history.json").read_text() == "the other group's history"


def test_remove_tree_never_follows_nested_links(tmp_path: Path, tree: Path, outside: Path) -> None:
    state = tree / ".clawgate"
    (state / "a" / "b").mkdir(parents=True)
    (state / "a" / "b" / "f").write_text("x")
    (state / "a" / "up").symlink_to(outside)
    (state / "a" / "b" / "file-link").symlink_to(outside / "secret.txt")
    os.mkfifo(state / "fifo")
    before = snapshot(outside)
    groupfs.remove_tree(tree, ".clawgate")
    assert not state.exists()
    assert snapshot(outside) == before
    groupfs.remove_tree(tree, ".clawgate")  # already gone: fine


def test_remove_tree_refuses_a_symlinked_parent(tree: Path, outside: Path) -> None:
    (outside / "state").mkdir()
    (tree / "sub").symlink_to(outside)
    with pytest.raises(UnsafeEntry):
        groupfs.remove_tree(tree, "sub/state")
    assert (outside / "state").is_dir()


def test_usage_counts_blocks_without_following_links(tree: Path, tmp_path: Path) -> None:
    big = tmp_path / "big-outside"
    big.write_bytes(b"x" * (4 << 20))
    (tree / "link").symlink_to(big)  # must not count 4 MiB
    (tree / "dir").mkdir()
    (tree / "dir" / "data").write_bytes(os.urandom(1 << 20))
    os.link(tree / "dir" / "data", tree / "dir" / "data2")  # counted once
    with open(tree / "sparse", "wb") as f:  # 1 GiB apparent, a few blocks allocated
        f.truncate(1 << 30)
    used = groupfs.usage(tree)
    assert used.complete
    assert (1 << 20) <= used.bytes < (1 << 20) + (256 << 10)


def test_usage_is_bounded_in_entries_and_depth(tree: Path) -> None:
    for i in range(50):
        (tree / f"f{i}").touch()
    partial = groupfs.usage(tree, max_entries=10)
    assert not partial.complete and "more than 10 files" in partial.reason
    deep = tree / "d"
    for _ in range(groupfs.MAX_DEPTH + 2):
        deep = deep / "d"
    deep.mkdir(parents=True)
    too_deep = groupfs.usage(tree)
    assert not too_deep.complete and "nested deeper" in too_deep.reason
    with pytest.raises(UnsafeEntry, match="nested deeper"):
        groupfs.remove_tree(tree, "d")


def test_async_wrappers_keep_the_loop_free(tree: Path) -> None:
    os.mkfifo(tree / "fifo")

    async def main() -> None:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await groupfs.awrite_bytes(tree, "a/b.txt", b"data", make_parents=True)
        assert await groupfs.aread_bytes(tree, "a/b.txt") == b"data"
        with pytest.raises(UnsafeEntry):
            await groupfs.aread_bytes(tree, "fifo")
        assert (await groupfs.ausage(tree)).complete
        await groupfs.aremove_tree(tree, "a")
        assert await groupfs.aunlink(tree, "fifo")
        task.cancel()
        assert ticks > 0

    asyncio.run(main())
    assert sorted(p.name for p in tree.iterdir()) == []
