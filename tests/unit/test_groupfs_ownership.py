"""Invariant 9, enforced on the source: only `groups/groupfs.py` touches group paths.

A *group path* is a value that flows (within one function, through assignments, `/`,
`str()`, `Path()`, f-strings, `for` targets and `with` targets) from one of these sources:

* `GroupDirs.group`, `.global_` or `.inbox` of a `group_dirs(...)` result, or of a variable or
  parameter annotated `GroupDirs` (other fields, e.g. `.run`, are host-owned);
* a name, attribute or parameter called `group_dir`, `global_dir`, `inbox_dir`, `group_root`
  or `inbox_root` (optionally with a leading underscore) — the `SandboxSpec` fields and the
  conventional names;
* the result of calling something named `group_folder` or `group_inbox` (channel callbacks).

And group paths are built only by `groups.folders.group_dirs`: `<…data_dir…> / "groups"`
(or `"global"`, `"inbox"`) anywhere else is a violation too.

A group path may be given to `groups.groupfs`, turned into a string, logged, or handed to
the small allowlist below (sandbox specs and mount descriptions, which only carry it to the
backend). Any other call that takes it as an argument, and any method called on it other
than pure path arithmetic, is a violation: that is where a plain `open`, `write_text`,
`unlink`, `mkdir`, `shutil.rmtree`, `os.walk`, `download_to_drive`, … would follow a link
the agent planted.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("core", "gateway", "channels", "groups", "proxy")
EXEMPT = ("groups/agent/", "groups/groupfs.py")  # the agent runs INSIDE the sandbox; groupfs is the owner

SOURCE_NAME = re.compile(r"^_?(group_dir|global_dir|inbox_dir|group_root|inbox_root)$")
SOURCE_CALL = re.compile(r"^_?(group_folder|group_inbox)$")
DIRS_FIELDS = {"group", "global_", "inbox"}
TREE_NAMES = {"groups", "global", "inbox"}  # the data dir's sandbox-visible trees
PROPAGATORS = {"str", "Path", "PurePath", "fspath", "join", "PurePosixPath"}  # value stays a group path
PURE_METHODS = {
    "joinpath",
    "with_name",
    "with_suffix",
    "with_stem",
    "relative_to",
    "as_posix",
    "is_relative_to",
}
ALLOWED_CALLEES = {
    # not file operations: they only carry the path to the sandbox backend or into text
    "Mount",
    "Bind",  # bwrap's mount list; the backend opens each source O_PATH|O_NOFOLLOW (sandbox/bind_fds.py)
    "SandboxSpec",
    "GroupDirs",
    "ExtraMount",
    "repr",
    "len",
    "format",
    # logging
    "debug",
    "info",
    "warning",
    "error",
    "exception",
    "critical",
}


@dataclass
class Violation:
    file: str
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what}"


@dataclass
class _Scope:
    paths: set[str] = field(default_factory=set)  # names holding a group path
    dirs: set[str] = field(default_factory=set)  # names holding a GroupDirs
    functions: set[str] = field(default_factory=set)  # local defs (a callback is not a path)


def _callee(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def _root_module(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


class Checker(ast.NodeVisitor):
    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.violations: list[Violation] = []
        self.scopes: list[_Scope] = [_Scope()]
        self.groupfs_names: set[str] = {"groupfs"}

    # -- taint -------------------------------------------------------------------------------

    @property
    def scope(self) -> _Scope:
        return self.scopes[-1]

    def is_dirs(self, node: ast.expr) -> bool:
        if isinstance(node, ast.Name):
            return node.id in self.scope.dirs
        if isinstance(node, ast.Call):
            return _callee(node.func) == "group_dirs"
        return False

    def is_path(self, node: ast.expr | None) -> bool:
        if node is None:
            return False
        if isinstance(node, ast.Name):
            if node.id in self.scope.functions:
                return False
            return node.id in self.scope.paths or bool(SOURCE_NAME.match(node.id))
        if isinstance(node, ast.Attribute):
            if SOURCE_NAME.match(node.attr):
                return True
            if node.attr in DIRS_FIELDS and self.is_dirs(node.value):
                return True
            return node.attr == "parent" and self.is_path(node.value)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
            return self.is_path(node.left) or self.is_path(node.right)
        if isinstance(node, ast.JoinedStr):
            return any(isinstance(v, ast.FormattedValue) and self.is_path(v.value) for v in node.values)
        if isinstance(node, ast.IfExp):
            return self.is_path(node.body) or self.is_path(node.orelse)
        if isinstance(node, ast.Await):
            return self.is_path(node.value)
        if isinstance(node, ast.Call):
            name = _callee(node.func)
            if SOURCE_CALL.match(name):
                return True
            if name in PROPAGATORS and any(self.is_path(a) for a in node.args):
                return True
            if isinstance(node.func, ast.Attribute) and name in PURE_METHODS:
                return self.is_path(node.func.value)
        return False

    def bind(self, target: ast.expr, value: ast.expr | None, annotation: ast.expr | None = None) -> None:
        names = [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
        as_dirs = (value is not None and self.is_dirs(value)) or (
            annotation is not None and "GroupDirs" in ast.unparse(annotation)
        )
        as_path = value is not None and self.is_path(value)
        for name in names:
            self.scope.dirs.discard(name)
            self.scope.paths.discard(name)
            if as_dirs:
                self.scope.dirs.add(name)
            elif as_path:
                self.scope.paths.add(name)

    # -- scopes and bindings -----------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "groups.groupfs":
                self.groupfs_names.add(alias.asname or "groups")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if node.module == "groups" and alias.name == "groupfs":
                self.groupfs_names.add(alias.asname or "groupfs")
            elif node.module == "groups.groupfs":
                self.groupfs_names.add(alias.asname or alias.name)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.functions.add(node.name)
        outer = self.scope
        inner = _Scope(functions=set(outer.functions))
        self.scopes.append(inner)
        args = node.args
        for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
            if arg.annotation is not None and "GroupDirs" in ast.unparse(arg.annotation):
                inner.dirs.add(arg.arg)
        for default in [*args.defaults, *args.kw_defaults]:
            if default is not None:
                self.visit(default)
        for statement in node.body:
            self.visit(statement)
        self.scopes.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.body)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        for target in node.targets:
            self.bind(target, node.value)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
        self.bind(node.target, node.value, node.annotation)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        if self.is_path(node.value) and isinstance(node.target, ast.Name):
            self.scope.paths.add(node.target.id)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.bind(node.target, node.value)

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        literal = isinstance(node.iter, (ast.Tuple, ast.List, ast.Set))
        if literal and any(self.is_path(e) for e in node.iter.elts):  # type: ignore[union-attr]
            self.scope.paths.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
        else:
            self.bind(node.target, node.iter)
        for statement in [*node.body, *node.orelse]:
            self.visit(statement)

    visit_AsyncFor = visit_For

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.bind(item.optional_vars, item.context_expr)
        for statement in node.body:
            self.visit(statement)

    visit_AsyncWith = visit_With

    # -- sinks -------------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = _callee(func)
        owner_is_groupfs = isinstance(func, ast.Attribute) and _root_module(func) in self.groupfs_names
        direct_groupfs = isinstance(func, ast.Name) and func.id in self.groupfs_names
        if isinstance(func, ast.Attribute) and self.is_path(func.value) and name not in PURE_METHODS:
            self.report(node, f"`.{name}()` on a group path")
        if not (owner_is_groupfs or direct_groupfs):
            arguments = [*node.args, *(k.value for k in node.keywords)]
            allowed = name in ALLOWED_CALLEES or name in PROPAGATORS or name in PURE_METHODS
            allowed = allowed or SOURCE_CALL.match(name) is not None
            if not allowed and any(self.is_path(a) for a in arguments):
                self.report(node, f"a group path passed to `{ast.unparse(func)}()`")
        self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> None:
        # Group paths are built in one place (groups/folders.py); building one by hand from the
        # data dir would slip past the sources above.
        right = node.right
        if (
            isinstance(node.op, ast.Div)
            and isinstance(right, ast.Constant)
            and right.value in TREE_NAMES
            and "data_dir" in ast.unparse(node.left)
            and self.filename != "groups/folders.py"
        ):
            self.report(
                node, f"a group tree built by hand ({ast.unparse(node)}); use groups.folders.group_dirs"
            )
        self.generic_visit(node)

    def report(self, node: ast.AST, what: str) -> None:
        self.violations.append(Violation(self.filename, getattr(node, "lineno", 0), what))


def check_source(source: str, filename: str = "<snippet>") -> list[Violation]:
    checker = Checker(filename)
    checker.visit(ast.parse(source, filename))
    return checker.violations


def scanned_files() -> list[Path]:
    files = []
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(EXEMPT):
                files.append(path)
    return files


# -- the rule on the code base ------------------------------------------------------------------


def test_no_host_code_outside_groupfs_touches_group_paths() -> None:
    violations = [
        v
        for path in scanned_files()
        for v in check_source(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    ]
    assert violations == [], "file operations on group paths outside groups/groupfs.py:\n" + "\n".join(
        map(str, violations)
    )


def test_the_rule_sees_the_group_paths_in_the_code_base() -> None:
    """Not vacuous: the sources it tracks do occur where group paths are handled."""
    seen: dict[str, int] = {}
    for path in scanned_files():
        checker = Checker(path.name)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        hits = 0
        for node in ast.walk(tree):
            if isinstance(node, (ast.Attribute, ast.Name, ast.Call)) and checker.is_path(node):
                hits += 1
        seen[path.relative_to(ROOT).as_posix()] = hits
    for rel in (
        "groups/sandbox/docker.py",
        "groups/sandbox/bwrap_argv.py",  # sandbox_binds: the spec's dirs become bwrap's mounts
        "gateway/commands.py",
        "gateway/channel_setup.py",  # attachment inboxes, written for the channels
    ):
        assert seen[rel] > 0, rel


# -- the rule itself: it must catch what the attack exploited and what a newcomer might add -----


@pytest.mark.parametrize(
    "snippet",
    [
        # what channels/telegram.py did (break 1)
        """
async def save(self, chat_id, name):
    folder = self._group_folder(chat_id)
    inbox = folder / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    target = inbox / name
    await remote.download_to_drive(target)
""",
        # what gateway/commands.py /reset did (break 1)
        """
def reset(data_dir, folder):
    history = group_dirs(data_dir, folder).group / ".clawgate" / "history.json"
    history.unlink()
""",
        # the brief's canonical newcomer
        """
def remember(data_dir, folder):
    group_dir = group_dirs(data_dir, folder).group
    (group_dir / "x").write_text("hello")
""",
        """
def f(dirs: GroupDirs):
    for path in (dirs.group, dirs.global_):
        path.chmod(0o700)
""",
        """
import shutil
def wipe(spec):
    shutil.rmtree(spec.group_dir / "cache")
""",
        """
import os
def walk(spec):
    for entry in os.walk(str(spec.global_dir)):
        pass
""",
        """
def peek(spec):
    with open(f"{spec.group_dir}/MEMORY.md") as fh:
        return fh.read()
""",
        """
def g(data_dir, folder):
    dirs = group_dirs(data_dir, folder)
    target = Path(dirs.inbox).joinpath("a")
    return target.exists()
""",
        """
def h(inbox_dir):
    return list(inbox_dir.iterdir())
""",
        """
def by_hand(self, folder):
    return self.data_dir / "groups" / folder
""",
    ],
)
def test_rule_flags_direct_file_operations_on_group_paths(snippet: str) -> None:
    assert check_source(snippet), snippet


@pytest.mark.parametrize(
    "snippet",
    [
        """
from groups import groupfs
async def reset(data_dir, folder):
    await groupfs.aremove_tree(group_dirs(data_dir, folder).group, ".clawgate")
""",
        """
def spec(dirs: GroupDirs):
    (dirs.run / "ca.pem").chmod(0o644)  # the run dir is host-owned
    return SandboxSpec(group_dir=dirs.group, inbox_dir=dirs.inbox)
""",
        """
def mounts(spec):
    log.info("mounting %s", spec.group_dir)
    return [Mount("/workspace/group", str(spec.group_dir), type="bind"), "--bind", str(spec.global_dir)]
""",
        """
def channel(registry):
    def group_inbox(chat_id):
        return None
    return Channel(group_inbox=group_inbox)
""",
    ],
)
def test_rule_allows_groupfs_and_carrying_paths_to_the_backend(snippet: str) -> None:
    assert check_source(snippet) == [], snippet
