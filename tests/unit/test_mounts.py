"""Mount allowlist validation (`groups.mounts`): one concrete test per rule, then property tests.

The property tests generate host paths inside a real temporary tree (allowed roots, a
prefix-trap sibling, blocked dirs and files, unicode look-alikes, symlink chains pointing
outside the roots, into blocked dirs, at the config/data dirs and a fake Docker socket,
loops and dangling links) and container paths full of `..`, `:`, NUL and absolute paths.
Every case is checked against an oracle written independently of the implementation.
`count_property_cases()` reports how many cases were checked (used by `benchmarks/mount_cases.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import posixpath
import shutil
import socket
import tempfile
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.models import Group, MountRequest
from groups.mounts import (
    DEFAULT_BLOCKED_PATTERNS,
    EXTRA_ROOT,
    PROJECT_MOUNT,
    MountPlan,
    load_allowlist,
    parse_mount_requests,
    plan_mounts,
    skeleton,
    validate_container_path,
)

# ============================================================== the world


# Names in the tree that must never be granted (directly or as a path component).
EVIL_NAMES = [
    ".ssh",
    "．ｓｓｈ",  # fullwidth
    ".ѕѕһ",  # Cyrillic dze, dze, shha
    ".s\u0308sh",  # combining diaeresis
    ".SSH",
    ".ssh-old",
    ".Env",
    ".env.local",
    "prod.env",
    "credentials.json",
    "my_credentials",
    "id_rsa.pub",
    "Private_Key.pem",
    ".аws",  # Cyrillic a
    ".gnu\u200dpg",  # zero-width joiner
    ".kube",
    ".docker",
]
SAFE_NAMES = ["app", "src", "docs", "notes.txt", "café", "cafe\u0301", "日本語", "data-2", "env", "ssh"]
LINKS = {
    # name in projects -> target (relative to the projects dir unless absolute placeholder)
    "link-app": "app",
    "link-out": "../outside",
    "link-ssh": "../.ssh",
    "link-ssh-in": ".ssh",
    "link-config": "{config}",
    "link-data": "{data}",
    "link-db": "{data}/clawgate.db",
    "link-run": "{data}/run",
    "link-root": "{base}",
    "link-home": "..",
    "link-slash": "/",
    "link-sock": "sockdir/docker.sock",
    "loop1": "loop2",
    "loop2": "loop1",
    "dangling": "does-not-exist",
    "c1": "../readonly/c2",  # -> projects2/c3 -> outside
    "good": "../readonly/c-ok",  # -> readonly/ok
    "link-p2": "../projects2",
    "chain-a": "chain-b",
    "chain-b": "chain-c",
    "chain-c": "../readonly/ok",
    "chain-evil-a": "chain-evil-b",
    "chain-evil-b": "{config}",
}
LINK_NAMES = sorted(LINKS)


@dataclass(frozen=True)
class Variant:
    name: str
    roots: tuple[tuple[str, bool], ...]  # (path relative to base, allow_read_write)
    non_main_read_only: bool
    valid: bool = True


VARIANTS = {
    "A": Variant("A", (("home/projects", True), ("home/readonly", False)), True),
    "B": Variant("B", (("", True), ("home/projects", True)), False),  # base contains config + data
    "C": Variant("C", (("home/projects", True), ("home/projects/app", False)), False),
    "invalid": Variant("invalid", (), True, valid=False),
    "missing": Variant("missing", (), True, valid=False),
    "extra-key": Variant("extra-key", (), True, valid=False),
}


class World:
    def __init__(self, base: Path) -> None:
        self.base = Path(os.path.realpath(base))
        b = self.base
        self.config = b / "config"
        self.data = b / "data"
        self.home = b / "home"
        self.projects = self.home / "projects"
        self.socket = self.projects / "sockdir" / "docker.sock"
        for d in (
            self.config,
            self.data / "run" / "g1",
            self.data / "groups" / "g1",
            self.projects / "app" / "src",
            self.projects / "docs",
            self.projects / "sockdir",
            self.home / "readonly" / "ok",
            self.home / "projects2" / "app",
            self.home / "outside",
            self.home / ".ssh",
            self.home / "proj-env",
            self.home / "proj-plain",
            self.home / "proj-envlink",
            self.projects / "lookalike",
        ):
            d.mkdir(parents=True, exist_ok=True)
        for f in ("clawgate.db", "clawgate.db-wal", "clawgate.db-shm"):
            (self.data / f).write_text("db")
        (self.config / "master.key").write_text("key")
        (self.home / ".ssh" / "id_rsa").write_text("secret")
        (self.home / "outside" / "secret.txt").write_text("secret")
        (self.home / "proj-env" / ".env").write_text("TOKEN=secret")
        (self.home / "proj-env" / "README").write_text("hi")
        (self.home / "proj-env" / ".npmrc").write_text("//registry:_authToken=x")
        (self.home / "proj-plain" / "README").write_text("hi")
        (self.home / "proj-envlink" / "real.txt").write_text("TOKEN=secret")
        os.symlink("real.txt", self.home / "proj-envlink" / ".env")
        for name in EVIL_NAMES:
            path = self.projects / name
            if name.endswith((".json", ".pub", ".pem", ".local")) or name == "prod.env" or name == ".Env":
                path.write_text("secret")
            else:
                path.mkdir()
                (path / "inner").mkdir()
        for name in SAFE_NAMES:
            path = self.projects / name
            if "." in name and name != "café" and not name.startswith("cafe"):
                path.write_text("ok")
            else:
                path.mkdir(exist_ok=True)
        os.mkfifo(self.projects / "fifo")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(self.socket))
        sock.close()
        for name, target in LINKS.items():
            os.symlink(self.fill(target), self.projects / name)
        os.symlink("../projects2/c3", self.home / "readonly" / "c2")
        os.symlink("../outside", self.home / "projects2" / "c3")
        os.symlink("ok", self.home / "readonly" / "c-ok")
        for variant in VARIANTS.values():
            path = self.allowlist(variant.name)
            if variant.name == "invalid":
                path.write_text('{"allowed_roots": [')
            elif variant.name == "extra-key":
                path.write_text(json.dumps({"allowed_roots": [], "allow_everything": True}))
            elif variant.valid:
                body = {
                    "allowed_roots": [
                        {"path": str(b / rel) if rel else str(b), "allow_read_write": rw, "description": ""}
                        for rel, rw in variant.roots
                    ],
                    "blocked_patterns": ["*.pem"],
                    "non_main_read_only": variant.non_main_read_only,
                }
                path.write_text(json.dumps(body))
        self.protected = [str(self.config), str(self.data), str(self.socket)]

    def fill(self, text: str) -> str:
        return text.format(config=self.config, data=self.data, base=self.base, home=self.home)

    def allowlist(self, variant: str) -> Path:
        return self.config / f"mount-allowlist-{variant}.json"

    def plan(self, group: Group, variant: str, project: str | None) -> MountPlan:
        return plan_mounts(
            group,
            self.allowlist(variant),
            self.config,
            self.data,
            self.fill(project) if project else None,
            docker_sockets=(str(self.socket),),
        )


@contextlib.contextmanager
def world_at(base: Path) -> Iterator[World]:
    old_home = os.environ.get("HOME")
    world = World(base)
    os.environ["HOME"] = str(world.home)
    try:
        yield world
    finally:
        if old_home is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = old_home


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    base = Path(tempfile.mkdtemp(prefix="cgmounts-"))
    try:
        with world_at(base) as w:
            yield w
    finally:
        shutil.rmtree(base, ignore_errors=True)


def group(*requests: MountRequest, main: bool = False) -> Group:
    return Group("g1", "test:g1", "g1", "@bot", is_main=main, extra_mounts=tuple(requests))


def req(path: str, container: str | None = None, rw: bool = False) -> MountRequest:
    return MountRequest(host_path=path, container_path=container, read_write=rw)


# ============================================================== the oracle

_COUNTERS = {"cases": 0, "granted": 0, "refused": 0}


def count_property_cases() -> int:
    """How many generated cases have been checked against the oracle in this process."""
    return _COUNTERS["cases"]


def _oracle_under(child: str, parent: str) -> bool:
    return os.path.commonpath([child, parent]) == parent


def _oracle_blocked(component: str) -> bool:
    if component in EVIL_NAMES:
        return True
    plain = unicodedata.normalize("NFKC", component).casefold()
    return any(p in plain for p in DEFAULT_BLOCKED_PATTERNS) or plain.endswith(".pem")


def check_case(world: World, g: Group, variant_name: str, project: str | None, evil: set[str]) -> MountPlan:
    """Plan the mounts and assert every rule of invariant 3; returns the plan."""
    variant = VARIANTS[variant_name]
    plan = world.plan(g, variant_name, project)
    _COUNTERS["cases"] += 1
    _COUNTERS["granted"] += len(plan.granted)
    _COUNTERS["refused"] += len(plan.refused)
    if not variant.valid:
        assert plan.granted == [] and plan.allowlist_error
        return plan
    assert plan.allowlist_error is None
    roots = [
        (os.path.realpath(world.base / rel) if rel else str(world.base), rw) for rel, rw in variant.roots
    ]

    project_mounts = [m for m in plan.granted if not m.container_path.startswith(EXTRA_ROOT + "/")]
    extra = [m for m in plan.granted if m.container_path.startswith(EXTRA_ROOT + "/")]
    # Project root: main only, read-only, shadows only /dev/null, never the config/data dirs.
    if project_mounts:
        assert g.is_main and project
        top, *shadows = project_mounts
        assert top.container_path == PROJECT_MOUNT and top.read_only
        real = str(top.host_path)
        assert real == os.path.realpath(real)
        for p in world.protected:
            assert not _oracle_under(real, p) and not _oracle_under(p, real)
        has_env = os.path.lexists(os.path.join(real, ".env"))
        assert (PROJECT_MOUNT + "/.env" in [s.container_path for s in shadows]) == has_env
        for s in shadows:
            assert str(s.host_path) == "/dev/null" and s.read_only
            assert posixpath.dirname(s.container_path) == PROJECT_MOUNT
    elif g.is_main and project in ("~/proj-plain", "~/proj-env", "~/projects/app"):
        raise AssertionError(f"project root {project} should have been granted: {plan.refused}")

    # Every request is accounted for exactly once.
    refused_ids = {id(r) for r, _ in plan.refused}
    kept = [r for r in g.extra_mounts if id(r) not in refused_ids]
    assert len(kept) == len(extra)
    assert len(extra) + sum(1 for r, _ in plan.refused if r.container_path != PROJECT_MOUNT) >= len(
        g.extra_mounts
    )

    seen: list[str] = []
    for request, mount in zip(kept, extra, strict=True):
        real = str(mount.host_path)
        # realpath, exists, regular file or directory
        assert real == os.path.realpath(real) and os.path.isabs(real)
        assert os.path.isdir(real) or os.path.isfile(real)
        # under an allowed root, component-wise
        containing = [rw for root, rw in roots if _oracle_under(real, root)]
        assert containing, (real, roots)
        # no blocked component (independent oracle + generator's own list of evil names)
        for component in real.split("/"):
            assert not _oracle_blocked(component), (real, component)
            assert component not in evil, (real, component)
        # not, not inside, not containing a protected path
        for p in world.protected:
            assert not _oracle_under(real, p), (real, p)
            assert not _oracle_under(p, real), (real, p)
        # container path
        cp = mount.container_path
        rel = cp[len(EXTRA_ROOT) + 1 :]
        assert rel and "\0" not in cp and ":" not in cp and not rel.startswith("/")
        assert ".." not in rel.split("/") and posixpath.normpath(cp) == cp
        for other in seen:
            assert not _oracle_under(cp, other) and not _oracle_under(other, cp)
        seen.append(cp)
        # read-write only when every condition holds
        if not mount.read_only:
            assert request.read_write
            assert all(containing)
            assert g.is_main or not variant.non_main_read_only
    return plan


# ============================================================== strategies

ANCHORS = [
    "~",
    "~/projects",
    "~/readonly",
    "~/projects2",
    "{base}",
    "{base}/home/projects",
    "/",
    "projects",
    "~/../..",
    "{config}",
    "{data}",
    "{data}/groups",
]
SEGMENTS = (
    ["..", ".", "", "nope", "inner", "ok", "app", "src", "c3", "c2", "c-ok", "id_rsa", "secret.txt", "fifo"]
    + ["sockdir", "docker.sock", "groups", "g1", "run", "clawgate.db", "projects", "readonly", "outside"]
    + EVIL_NAMES
    + SAFE_NAMES
    + LINK_NAMES
)
PROJECTS = [None, "~/projects/app", "{base}", "~/proj-env", "~/proj-plain", "~/proj-envlink", "~/.ssh"]
PROJECTS += ["{config}", "~/projects/link-config", "~", "~/nope"]
BAD_CONTAINER = ["..", "a/../b", "/abs", "/workspace/x", "a:b", "a\x00b", "", "a//b", ".", "./a", "a/", "ü"]
GOOD_CONTAINER = ["x", "app", "data/one", "data", "a.b", "A-b_c+d@e"]

container_paths = st.one_of(
    st.none(),
    st.sampled_from(BAD_CONTAINER + GOOD_CONTAINER),
    st.text(alphabet=st.sampled_from(list("ab./:\x00-_ü")), max_size=12),
)


@st.composite
def host_paths(draw: st.DrawFn, segments: list[str] = SEGMENTS) -> str:
    anchor = draw(st.sampled_from(ANCHORS))
    segs = draw(st.lists(st.sampled_from(segments), max_size=5))
    trailing = "/" if draw(st.booleans()) else ""
    return "/".join([anchor, *segs]) + trailing


def requests(paths: st.SearchStrategy[str]) -> st.SearchStrategy[MountRequest]:
    return st.builds(MountRequest, host_path=paths, container_path=container_paths, read_write=st.booleans())


VALID_VARIANTS = ["A", "B", "C"]
_PROPERTY = settings(
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

mixed_cases = st.tuples(
    st.sampled_from(list(VARIANTS)),
    st.booleans(),
    st.lists(requests(host_paths()), max_size=4),
    st.sampled_from(PROJECTS),
)
symlink_cases = st.tuples(
    st.sampled_from(VALID_VARIANTS),
    st.booleans(),
    st.lists(
        requests(
            st.builds(
                lambda segs: "~/projects/" + "/".join(segs),
                st.lists(
                    st.sampled_from(LINK_NAMES + ["..", ".", "inner", "ok", "secret.txt"]),
                    min_size=1,
                    max_size=6,
                ),
            )
        ),
        min_size=1,
        max_size=4,
    ),
    st.sampled_from(PROJECTS),
)
container_cases = st.tuples(
    st.sampled_from(VALID_VARIANTS),
    st.booleans(),
    st.lists(
        st.builds(
            MountRequest,
            host_path=st.sampled_from(
                ["~/projects/app", "~/projects/docs", "~/readonly/ok", "~/projects/app/src"]
            ),
            container_path=container_paths,
            read_write=st.booleans(),
        ),
        min_size=1,
        max_size=5,
    ),
    st.none(),
)

# Look-alikes of the default blocked patterns, generated character by character.
_CYRILLIC = {
    "a": "а",
    "c": "с",
    "d": "ԁ",
    "e": "е",
    "g": "ɡ",
    "h": "һ",
    "i": "і",
    "j": "ј",
    "k": "к",
    "l": "ӏ",
    "o": "о",
    "p": "р",
    "r": "г",
    "s": "ѕ",
    "t": "τ",
    "u": "υ",
    "v": "ν",
    "w": "ԝ",
    "x": "х",
    "y": "у",
}
_MARKS = ["\u0301", "\u0308", "\u0336", "\u200d", "\u200b", "\u00ad"]


@st.composite
def lookalike_names(draw: st.DrawFn) -> str:
    pattern = draw(st.sampled_from(DEFAULT_BLOCKED_PATTERNS))
    out = [draw(st.sampled_from(["", "", "old-", "backup_", "x."]))]
    for ch in pattern:
        how = draw(st.sampled_from(["keep", "upper", "full", "cyr", "mark"]))
        if how == "upper":
            out.append(ch.upper())
        elif how == "full" and 0x21 <= ord(ch) <= 0x7E:
            out.append(chr(ord(ch) + 0xFEE0))
        elif how == "cyr" and ch in _CYRILLIC:
            out.append(_CYRILLIC[ch])
        elif how == "mark":
            out.append(ch + draw(st.sampled_from(_MARKS)))
        else:
            out.append(ch)
    out.append(draw(st.sampled_from(["", "", "-bak", ".json", "2"])))
    return "".join(out)


lookalike_cases = st.tuples(
    st.sampled_from(VALID_VARIANTS),
    st.booleans(),
    lookalike_names(),
    st.sampled_from(["dir", "file", "link-to", "parent"]),
    st.booleans(),
)


def run_lookalike(world: World, case: tuple[str, bool, str, str, bool]) -> None:
    variant, main, name, kind, rw = case
    holder = world.projects / "lookalike"
    path = holder / name
    if not os.path.lexists(path):
        if kind == "file":
            path.write_text("secret")
        elif kind == "link-to":
            os.symlink("../docs", path)  # a harmless target behind a blocked-looking name
        else:
            path.mkdir()
            (path / "inner").mkdir(exist_ok=True)
    target = f"~/projects/lookalike/{name}" + ("/inner" if kind == "parent" and path.is_dir() else "")
    plan = check_case(world, group(req(target, "x", rw), main=main), variant, None, {name})
    assert plan.granted == [], (name, plan)


# ============================================================== concrete rules


def _write(path: Path, body: object) -> Path:
    path.write_text(body if isinstance(body, str) else json.dumps(body))
    return path


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    base = Path(os.path.realpath(tmp_path))
    home = base / "home"
    t = {
        "base": base,
        "home": home,
        "config": home / ".config" / "clawgate",
        "data": base / "data",
        "projects": home / "projects",
        "sock": home / "projects" / "sock" / "docker.sock",
    }
    for d in ("config", "data", "projects"):
        t[d].mkdir(parents=True)
    (t["projects"] / "app").mkdir()
    (t["projects"] / "ro").mkdir()
    (t["projects"] / "sock").mkdir()
    (t["data"] / "clawgate.db").write_text("")
    (t["data"] / "run").mkdir()
    (home / "projects2").mkdir()
    monkeypatch.setenv("HOME", str(home))
    _write(
        t["config"] / "mount-allowlist.json",
        {"allowed_roots": [{"path": "~/projects", "allow_read_write": True, "description": "code"}]},
    )
    return t


def plan_in(
    t: dict[str, Path], g: Group, project: str | None = None, allowlist: str = "mount-allowlist.json"
):  # type: ignore[no-untyped-def]
    return plan_mounts(
        g, t["config"] / allowlist, t["config"], t["data"], project, docker_sockets=(str(t["sock"]),)
    )


def reasons(plan: MountPlan) -> str:
    return " | ".join(reason for _, reason in plan.refused)


def test_example_allowlist_parses() -> None:
    example = Path(__file__).resolve().parents[2] / "mount-allowlist.example.json"
    allowlist = load_allowlist(example)
    assert allowlist.non_main_read_only is True
    assert set(DEFAULT_BLOCKED_PATTERNS) <= set(allowlist.patterns())


@pytest.mark.parametrize(
    "body, fragment",
    [
        (None, "no mount allowlist"),
        ('{"allowed_roots": [', "not valid JSON"),
        ({"allowed_roots": [], "extra": 1}, "extra"),
        ({"allowed_roots": [{"path": "~/p", "allow_read_write": "yes"}]}, "allow_read_write"),
        ({"allowed_roots": [{"path": "relative/p"}]}, "absolute"),
        ({"blocked_patterns": []}, "allowed_roots"),
        ({"allowed_roots": [], "blocked_patterns": [""]}, "pattern"),
        ('{"allowed_roots": [], "non_main_read_only": true, "non_main_read_only": false}', "duplicate"),
        ([1, 2], "valid dictionary"),
    ],
)
def test_missing_or_invalid_allowlist_means_no_mounts(tree, body, fragment) -> None:  # type: ignore[no-untyped-def]
    path = tree["config"] / "mount-allowlist.json"
    if body is None:
        path.unlink()
    else:
        _write(path, body)
    plan = plan_in(tree, group(req("~/projects/app"), main=True), project=str(tree["projects"] / "app"))
    assert plan.granted == []
    assert plan.allowlist_error and fragment in plan.allowlist_error
    assert len(plan.refused) == 2


def test_world_writable_allowlist_is_refused(tree) -> None:  # type: ignore[no-untyped-def]
    (tree["config"] / "mount-allowlist.json").chmod(0o666)
    plan = plan_in(tree, group(req("~/projects/app")))
    assert plan.granted == [] and "world-writable" in (plan.allowlist_error or "")


def test_grant_is_read_only_at_basename_under_extra(tree) -> None:  # type: ignore[no-untyped-def]
    plan = plan_in(tree, group(req("~/projects/app/")))
    assert plan.refused == [] and plan.allowlist_error is None
    [mount] = plan.granted
    assert mount.host_path == tree["projects"] / "app"
    assert mount.container_path == "/workspace/extra/app" and mount.read_only


@pytest.mark.parametrize(
    "main, root_rw, non_main_ro, asked, expect_rw",
    [
        (True, True, True, True, True),
        (True, True, True, False, False),
        (True, False, True, True, False),
        (False, True, True, True, False),
        (False, True, False, True, True),
        (False, False, False, True, False),
    ],
)
def test_read_write_needs_request_root_and_group(tree, main, root_rw, non_main_ro, asked, expect_rw) -> None:  # type: ignore[no-untyped-def]
    _write(
        tree["config"] / "mount-allowlist.json",
        {
            "allowed_roots": [{"path": "~/projects", "allow_read_write": root_rw}],
            "non_main_read_only": non_main_ro,
        },
    )
    [mount] = plan_in(tree, group(req("~/projects/app", rw=asked), main=main)).granted
    assert mount.read_only is (not expect_rw)


def test_most_restrictive_root_wins(tree) -> None:  # type: ignore[no-untyped-def]
    _write(
        tree["config"] / "mount-allowlist.json",
        {
            "allowed_roots": [
                {"path": "~/projects", "allow_read_write": True},
                {"path": "~/projects/ro", "allow_read_write": False},
            ]
        },
    )
    plan = plan_in(tree, group(req("~/projects/ro", rw=True), req("~/projects/app", rw=True), main=True))
    assert [m.read_only for m in plan.granted] == [True, False]
    assert any("read-only" in note for note in plan.notes)


@pytest.mark.parametrize(
    "name",
    [
        ".ssh",
        ".SSH",
        "．ｓｓｈ",
        ".ѕѕһ",
        ".s\u0308sh",
        ".ss\u200bh",
        ".ssh-old",
        ".env",
        ".env.local",
        "prod.env",
        "aws_credentials",
        "id_rsa.pub",
        "ID_ED25519",
        "private_key.pem",
        ".gnupg",
        ".kube",
        ".docker",
        ".secrets",
        ".аws",
        "key.pem",
    ],
)
def test_blocked_component_is_refused(tree, name) -> None:  # type: ignore[no-untyped-def]
    _write(
        tree["config"] / "mount-allowlist.json",
        {"allowed_roots": [{"path": "~/projects"}], "blocked_patterns": ["*.pem"]},
    )
    (tree["projects"] / name).mkdir()
    (tree["projects"] / name / "inner").mkdir()
    plan = plan_in(tree, group(req(f"~/projects/{name}", "x"), req(f"~/projects/{name}/inner", "y")))
    assert plan.granted == [] and "blocked pattern" in reasons(plan)


def test_safe_lookalike_names_are_allowed(tree) -> None:  # type: ignore[no-untyped-def]
    for name in ("ssh", "env", "environment-notes", "café"):
        (tree["projects"] / name).mkdir()
    plan = plan_in(tree, group(req("~/projects/ssh"), req("~/projects/env"), req("~/projects/café", "cafe")))
    assert len(plan.granted) == 3, plan.refused
    assert skeleton("．ＳＳＨ") == ".ssh" and skeleton(".ѕѕһ") == ".ssh"


def test_symlink_is_resolved_before_checks(tree) -> None:  # type: ignore[no-untyped-def]
    home = tree["home"]
    (home / ".ssh").mkdir()
    (home / "outside").mkdir()
    os.symlink(home / ".ssh", tree["projects"] / "innocent")
    os.symlink(home / "outside", tree["projects"] / "escape")
    os.symlink("escape", tree["projects"] / "chain")
    os.symlink(tree["projects"] / "app", tree["projects"] / "fine")
    plan = plan_in(tree, group(req("~/projects/innocent"), req("~/projects/chain"), req("~/projects/fine")))
    assert [m.host_path for m in plan.granted] == [tree["projects"] / "app"]
    assert plan.granted[0].container_path == "/workspace/extra/fine"
    assert "'.ssh'" in reasons(plan) and "not under an allowed root" in reasons(plan)


def test_root_is_compared_by_component_not_prefix(tree) -> None:  # type: ignore[no-untyped-def]
    plan = plan_in(tree, group(req("~/projects2"), req("~/projects/../projects2")))
    assert plan.granted == [] and reasons(plan).count("not under an allowed root") == 2


@pytest.mark.parametrize(
    "path, fragment",
    [
        ("~/nope", "does not exist"),
        ("projects/app", "not absolute"),
        ("~nosuchuser__/x", "unknown user"),
        ("~/projects/ap\0p", "NUL"),
        ("~/projects/loop", "cannot resolve"),
        ("~/projects/dangling", "does not exist"),
        ("~/projects/fifo", "neither a directory nor a regular file"),
    ],
)
def test_unusable_host_paths_are_refused(tree, path, fragment) -> None:  # type: ignore[no-untyped-def]
    os.symlink("loop", tree["projects"] / "loop")
    os.symlink("nothing", tree["projects"] / "dangling")
    os.mkfifo(tree["projects"] / "fifo")
    plan = plan_in(tree, group(req(path, "x")))
    assert plan.granted == [] and fragment in reasons(plan), reasons(plan)


def test_protected_paths_are_refused_even_inside_an_allowed_root(tree) -> None:  # type: ignore[no-untyped-def]
    base, home = tree["base"], tree["home"]
    _write(tree["config"] / "mount-allowlist.json", {"allowed_roots": [{"path": "/"}]})
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree["sock"]))
    sock.close()
    os.symlink(tree["config"], tree["projects"] / "cfg")
    cases = {
        "/": "contains the clawgate config dir",
        str(home): "contains the clawgate config dir",
        str(tree["config"]): "is the clawgate config dir",
        str(tree["config"] / "mount-allowlist.json"): "is inside the clawgate config dir",
        "~/projects/cfg": "is the clawgate config dir",
        str(tree["data"]): "the clawgate data dir",
        str(tree["data"] / "clawgate.db"): "clawgate data dir",
        str(tree["data"] / "run"): "data dir",
        str(base): "contains",
        str(tree["projects"] / "sock"): "contains the Docker socket",
    }
    for path, fragment in cases.items():
        plan = plan_in(tree, group(req(path, "x")))
        assert plan.granted == [], path
        assert fragment in reasons(plan), (path, reasons(plan))


@pytest.mark.parametrize(
    "container, fragment",
    [
        ("..", "'..'"),
        ("a/../b", "'..'"),
        ("/abs", "relative"),
        ("a:b", "':'"),
        ("a\0b", "NUL"),
        ("", "empty"),
        ("a//b", "empty component"),
        ("./a", "'.'"),
        ("ü", "letters"),
        ("a/" * 9 + "a", "8 components"),
    ],
)
def test_bad_container_paths_are_refused(tree, container, fragment) -> None:  # type: ignore[no-untyped-def]
    plan = plan_in(tree, group(req("~/projects/app", container)))
    assert plan.granted == [] and fragment in reasons(plan)


def test_container_paths_are_unique_and_not_nested(tree) -> None:  # type: ignore[no-untyped-def]
    plan = plan_in(
        tree,
        group(
            req("~/projects/app", "x"),
            req("~/projects/ro", "x"),
            req("~/projects/ro", "x/y"),
            req("~/projects/ro", "y/x"),
        ),
    )
    assert [m.container_path for m in plan.granted] == ["/workspace/extra/x", "/workspace/extra/y/x"]
    assert reasons(plan).count("clashes") == 2
    assert validate_container_path("a.b/c-d") == "/workspace/extra/a.b/c-d"


def test_project_root_main_only_read_only_with_env_shadowed(tree) -> None:  # type: ignore[no-untyped-def]
    project = tree["base"] / "proj"
    project.mkdir()
    (project / ".env").write_text("TOKEN=x")
    (project / ".npmrc").write_text("x")
    (project / "README").write_text("x")
    plan = plan_in(tree, group(req("~/projects/app", rw=True), main=True), project=str(project))
    assert [(str(m.host_path), m.container_path, m.read_only) for m in plan.granted] == [
        (str(project), "/workspace/project", True),
        ("/dev/null", "/workspace/project/.env", True),
        ("/dev/null", "/workspace/project/.npmrc", True),
        (str(tree["projects"] / "app"), "/workspace/extra/app", False),
    ]
    assert [m.container_path for m in plan_in(tree, group(), project=str(project)).granted] == []
    (project / ".env").unlink()
    (project / ".npmrc").unlink()
    assert [m.container_path for m in plan_in(tree, group(main=True), project=str(project)).granted] == [
        "/workspace/project"
    ]


def test_project_root_that_contains_protected_paths_or_odd_env_is_refused(tree) -> None:  # type: ignore[no-untyped-def]
    for project, fragment in (
        (str(tree["home"]), "config dir"),
        ("/", "config dir"),
        ("~/nope", "does not exist"),
    ):
        plan = plan_in(tree, group(main=True), project=project)
        assert plan.granted == [] and fragment in reasons(plan), project
    project = tree["base"] / "proj"
    project.mkdir()
    os.symlink("real", project / ".env")
    plan = plan_in(tree, group(main=True), project=str(project))
    assert plan.granted == [] and "cannot be shadowed" in reasons(plan)


def test_parse_mount_requests_is_strict() -> None:
    parsed = parse_mount_requests(["~/a", {"host_path": "~/b", "container_path": "b2", "read_write": True}])
    assert parsed == [req("~/a"), req("~/b", "b2", True)]
    for bad in (
        [{"host_path": "~/a", "evil": 1}],
        [{"host_path": 1}],
        [3],
        "~/a",
        [{"host_path": "~/a", "container_path": "../x"}],
        [{"host_path": "~/a", "read_write": "yes"}],
        ["~/a"] * 33,
    ):
        with pytest.raises((ValueError, TypeError)):
            parse_mount_requests(bad)  # type: ignore[arg-type]


def test_store_round_trips_mount_requests_and_reads_old_strings(tmp_path: Path) -> None:
    import aiosqlite

    from gateway.store import Store

    async def go() -> None:
        store = await Store.open(tmp_path / "db.sqlite")
        await store.register_group(group(req("~/a"), req("~/b", "bb", True)))
        [g] = await store.groups()
        assert g.extra_mounts == (req("~/a"), req("~/b", "bb", True))
        await store.set_group_mounts("g1", [req("~/c")])
        assert (await store.groups())[0].extra_mounts == (req("~/c"),)
        async with aiosqlite.connect(tmp_path / "db.sqlite") as conn:
            await conn.execute("UPDATE groups SET extra_mounts = ?", (json.dumps(["~/old", {"bad": 1}, 7]),))
            await conn.commit()
        assert (await store.groups())[0].extra_mounts == (req("~/old"),)
        await store.close()

    asyncio.run(go())


def test_config_mounts_section() -> None:
    from core.config import ConfigError, parse

    assert parse('[mounts]\nproject_root = "~/src/x"\n', Path("c.toml")).mounts.project_root == "~/src/x"
    assert parse("", Path("c.toml")).mounts.project_root is None
    with pytest.raises(ConfigError, match="project_root"):
        parse('[mounts]\nproject_root = "src/x"\n', Path("c.toml"))


def test_cli_groups_mounts_shows_granted_refused_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from gateway.cli import main
    from gateway.store import Store

    config_dir, data_dir, home = tmp_path / "config", tmp_path / "data", tmp_path / "home"
    for d in (config_dir, data_dir, home / "projects" / "app", home / "projects" / ".ssh"):
        d.mkdir(parents=True)
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(config_dir))
    monkeypatch.setenv("CLAWGATE_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HOME", str(home))

    async def register() -> None:
        store = await Store.open(data_dir / "clawgate.db")
        await store.register_group(group(req("~/projects/app"), req("~/projects/.ssh")))
        await store.close()

    asyncio.run(register())
    runner = CliRunner()
    out = runner.invoke(main, ["groups", "mounts", "g1"])
    assert out.exit_code == 0, out.output
    assert "no mount allowlist" in out.output and "granted: nothing" in out.output
    _write(config_dir / "mount-allowlist.json", {"allowed_roots": [{"path": "~/projects"}]})
    out = runner.invoke(main, ["groups", "mounts", "test:g1"])
    assert out.exit_code == 0, out.output
    assert "-> /workspace/extra/app (ro)" in out.output
    assert "~/projects/.ssh:" in out.output and "blocked pattern '.ssh'" in out.output
    assert runner.invoke(main, ["groups", "mounts", "nope"]).exit_code != 0


# ============================================================== properties


MIXED_EXAMPLES = 800
SYMLINK_EXAMPLES = 500
CONTAINER_EXAMPLES = 400
LOOKALIKE_EXAMPLES = 400


def _property(body):  # type: ignore[no-untyped-def]
    def prop(case):  # type: ignore[no-untyped-def]
        body(case)

    return prop


def run_properties(world: World, scale: float = 1.0) -> int:
    """Run every property for `scale` x the default number of examples; returns cases checked."""
    before = count_property_cases()
    evil = set(EVIL_NAMES)

    def mixed(case):  # type: ignore[no-untyped-def]
        variant, main, reqs, project = case
        check_case(world, group(*reqs, main=main), variant, project, evil)

    for strategy, body, n in (
        (mixed_cases, mixed, MIXED_EXAMPLES),
        (symlink_cases, mixed, SYMLINK_EXAMPLES),
        (container_cases, mixed, CONTAINER_EXAMPLES),
        (lookalike_cases, lambda case: run_lookalike(world, case), LOOKALIKE_EXAMPLES),
    ):
        settings(_PROPERTY, max_examples=max(1, int(n * scale)))(given(strategy)(_property(body)))()
    return count_property_cases() - before


@settings(_PROPERTY, max_examples=MIXED_EXAMPLES)
@given(case=mixed_cases)
def test_property_mixed_requests(world: World, case) -> None:  # type: ignore[no-untyped-def]
    variant, main, reqs, project = case
    check_case(world, group(*reqs, main=main), variant, project, set(EVIL_NAMES))


@settings(_PROPERTY, max_examples=SYMLINK_EXAMPLES)
@given(case=symlink_cases)
def test_property_symlink_chains(world: World, case) -> None:  # type: ignore[no-untyped-def]
    variant, main, reqs, project = case
    check_case(world, group(*reqs, main=main), variant, project, set(EVIL_NAMES))


@settings(_PROPERTY, max_examples=CONTAINER_EXAMPLES)
@given(case=container_cases)
def test_property_container_paths(world: World, case) -> None:  # type: ignore[no-untyped-def]
    variant, main, reqs, _ = case
    check_case(world, group(*reqs, main=main), variant, None, set(EVIL_NAMES))


@settings(_PROPERTY, max_examples=LOOKALIKE_EXAMPLES)
@given(case=lookalike_cases)
def test_property_unicode_lookalikes_never_granted(world: World, case) -> None:  # type: ignore[no-untyped-def]
    run_lookalike(world, case)


@pytest.fixture(scope="module", autouse=True)
def _report_case_count(request: pytest.FixtureRequest) -> Iterator[None]:
    start = count_property_cases()
    yield
    checked = count_property_cases() - start
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None and checked:
        with capture.global_and_fixture_disabled():
            reporter.write_line(
                f"\ntest_mounts: {checked} generated mount cases checked "
                f"({_COUNTERS['granted']} grants, {_COUNTERS['refused']} refusals)"
            )


def test_properties_ran_and_were_not_vacuous(world: World) -> None:
    """Runs last in this file: the property tests above checked their cases and granted something."""
    checked = count_property_cases()
    if checked == 0:  # run on its own (-k): run a small batch here
        checked = run_properties(world, scale=0.05)
        assert checked >= 100
        return
    assert checked >= MIXED_EXAMPLES + SYMLINK_EXAMPLES + CONTAINER_EXAMPLES + LOOKALIKE_EXAMPLES
    assert _COUNTERS["granted"] > 100 and _COUNTERS["refused"] > 1000
