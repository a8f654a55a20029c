"""Per-group sandbox uids (`groups.uids`) and the hand-over of a folder to its group's uid."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from groups import folders
from groups.uids import UIDS_FILE, UidError, group_identity, group_offset

BASE = 10_000


def test_each_group_gets_its_own_stable_number_never_reused(tmp_path: Path) -> None:
    assert [group_offset(tmp_path, f) for f in ("main", "alpha", "beta")] == [1, 2, 3]
    assert group_offset(tmp_path, "alpha") == 2  # stable, also across restarts (it is on disk)
    stored = json.loads((tmp_path / UIDS_FILE).read_text())["groups"]
    assert stored == {"main": 1, "alpha": 2, "beta": 3}
    assert (tmp_path / UIDS_FILE).stat().st_mode & 0o777 == 0o600
    del stored["alpha"]  # a removed group's number is not handed out again
    (tmp_path / UIDS_FILE).write_text(json.dumps({"version": 1, "groups": stored}))
    assert group_offset(tmp_path, "gamma") == 4


@pytest.mark.parametrize(
    "content",
    ["not json", '{"groups": {"a": 0}}', '{"groups": {"a": 1, "b": 1}}', '{"groups": {"a": "1"}}', "[]"],
)
def test_a_damaged_map_is_refused_not_reinterpreted(tmp_path: Path, content: str) -> None:
    (tmp_path / UIDS_FILE).write_text(content)
    with pytest.raises(UidError, match=UIDS_FILE):
        group_offset(tmp_path, "alpha")


def test_identity_is_the_gateways_own_when_not_root(tmp_path: Path) -> None:
    if os.getuid() == 0:
        assert group_identity(tmp_path, "alpha", BASE) != group_identity(tmp_path, "beta", BASE)
        assert group_identity(tmp_path, "alpha", BASE) == (BASE + 1, BASE + 1)
    else:
        assert group_identity(tmp_path, "alpha", BASE) == (os.getuid(), os.getgid())
        assert not (tmp_path / UIDS_FILE).exists()


@pytest.mark.skipif(os.getuid() != 0, reason="changing file owners needs root")
def test_hand_over_moves_what_the_old_shared_uid_owned_and_follows_no_link(tmp_path: Path) -> None:
    dirs = folders.group_dirs(tmp_path / "data", "alpha")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "host-file").write_text("host")
    os.chown(outside / "host-file", BASE, BASE)  # owned by the old uid, but outside the tree
    folders.prepare(dirs, (BASE, BASE), is_main=True)  # the layout older versions left: all uid BASE
    (dirs.group / "sub").mkdir()
    for path in (dirs.group / "sub" / "notes.md", dirs.group / "linked"):
        path.write_text("x")
    os.link(dirs.group / "linked", dirs.group / "sub" / "second-link")
    (dirs.group / "escape").symlink_to(outside / "host-file")
    (dirs.group / "host-made").write_text("written by the gateway as root")
    for path in (dirs.group / "sub", dirs.group / "sub" / "notes.md", dirs.group / "linked"):
        os.chown(path, BASE, BASE)
    os.chown(dirs.group / "escape", BASE, BASE, follow_symlinks=False)

    folders.prepare(dirs, (BASE + 7, BASE + 7))

    def owner(path: Path) -> int:
        return path.lstat().st_uid

    assert (
        owner(dirs.group) == owner(dirs.group / "sub") == owner(dirs.group / "sub" / "notes.md") == BASE + 7
    )
    assert owner(dirs.group / "escape") == BASE + 7  # the link itself …
    assert owner(outside / "host-file") == BASE  # … never what it points to
    assert owner(dirs.group / "linked") == BASE  # two links: possibly a foreign inode, left alone
    assert owner(dirs.group / "host-made") == 0
    assert owner(dirs.global_) == BASE  # the global dir belongs to main's uid only
    folders.prepare(folders.group_dirs(tmp_path / "data", "main"), (BASE + 1, BASE + 1), is_main=True)
    assert owner(dirs.global_) == BASE + 1
