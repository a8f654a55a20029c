"""Extra mounts: which host paths a group's sandbox may see, decided against the allowlist.

The allowlist lives in the config dir (`mount-allowlist.json`, format documented by
`mount-allowlist.example.json`), which is never mounted into any container, so an agent
cannot widen its own view. It is read again every time a sandbox starts. A missing,
unreadable or invalid allowlist means no extra mounts at all (the reason is reported,
nothing crashes, nothing falls back to allowing).

Checks for each requested mount, all of which must pass:

1. `~` is expanded; the path must then be absolute and contain no NUL.
2. The real path is resolved (every symlink followed, `os.path.realpath(strict=True)`)
   before anything else is judged; missing paths and symlink loops are refused, and so is
   anything that is not a regular file or a directory (sockets, FIFOs, devices).
3. Blocked names. Both the requested path and the real path are split into components;
   a component matches a pattern when the pattern's *skeleton* is a substring of the
   component's skeleton (glob patterns containing `*?[` are matched with `fnmatch`
   against the whole component skeleton instead). So `.ssh`, `.SSH`, `.ssh-old`,
   `prod.env`, `.env.local`, `aws_credentials`, `id_rsa.pub` all match. The skeleton is:
   NFKC, casefold, NFKD, drop combining marks and invisible format characters, map
   common Cyrillic/Greek look-alike letters to Latin, NFKC + casefold again — so
   fullwidth `．ｓｓｈ`, Cyrillic `.ѕѕһ` and `.s̈sh` all read as `.ssh`.
   Patterns starting with `/` or `~` in `blocked_patterns` are blocked *paths* instead.
4. Protected paths: the clawgate config dir, the allowlist itself, the whole data dir
   (database and its -wal/-shm, sockets, vault, other groups' folders — the gateway mounts
   a group's own folders itself) and the Docker/containerd sockets. A request whose real
   path is, is inside, or *contains* one of them is refused (so `/` or `~` is refused when
   the config dir lives below it).
5. The real path must sit under the real path of an allowed root, compared component by
   component (`/a/projects2` is not under `/a/projects`). Missing roots are ignored.
6. Container path: defaults to the requested path's last component; must be relative,
   1-8 components of `[A-Za-z0-9._+@-]` (no `.`/`..`, no empty component, so no leading
   `/`, no `:`, no NUL), at most 255 characters; it lands at `/workspace/extra/<path>`.
   Two grants may not share a container path or nest inside one another.
7. Read-only unless the request asks for read-write AND every allowed root containing the
   real path allows it (the most restrictive root wins) AND the group is main or
   `non_main_read_only` is false.

For the main group only, `[mounts] project_root` is granted read-only at
`/workspace/project` (never read-write), its top-level `.env` (and any other top-level
regular file whose name matches a blocked pattern) shadowed by `/dev/null`.

Not covered (documented limits): the *contents* of a granted directory are not scanned
(a `.env` deep inside a granted tree is visible; symlinks inside it resolve inside the
container, so they cannot reach host files), and hard links to blocked files cannot be
recognised by name.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.models import Group, MountRequest
from core.paths import DATABASE
from groups.mount_allowlist import (
    ALLOWLIST_FILE,
    MAX_HOST_PATH,
    AllowedRoot,
    Allowlist,
    AllowlistError,
    load_allowlist,
)
from groups.mount_names import (
    DEFAULT_BLOCKED_PATTERNS,
    blocked_in_path,
    blocked_match,
    is_path_pattern,
    skeleton,
)
from groups.sandbox.base import ExtraMount

log = logging.getLogger(__name__)

EXTRA_ROOT = "/workspace/extra"
PROJECT_MOUNT = "/workspace/project"
DEV_NULL = Path("/dev/null")
MAX_REQUESTS = 32

DOCKER_SOCKETS: tuple[str, ...] = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
)

__all__ = [
    "ALLOWLIST_FILE",
    "DEFAULT_BLOCKED_PATTERNS",
    "Allowlist",
    "AllowlistError",
    "AllowedRoot",
    "MountPlan",
    "MountRequest",
    "blocked_match",
    "describe_plan",
    "load_allowlist",
    "log_plan",
    "parse_mount_requests",
    "plan_mounts",
    "skeleton",
    "validate_container_path",
]

# --------------------------------------------------------------------------- requests


def parse_mount_requests(items: Iterable[object]) -> list[MountRequest]:
    """Requests from JSON (IPC, registration): path strings or objects; raises ValueError/TypeError."""
    if isinstance(items, (str, bytes, dict)):
        raise TypeError("mounts must be a list")
    requests = [MountRequest.from_json(item) for item in items]
    if len(requests) > MAX_REQUESTS:
        raise ValueError(f"at most {MAX_REQUESTS} extra mounts per group")
    for request in requests:
        if len(request.host_path) > MAX_HOST_PATH or "\0" in request.host_path:
            raise ValueError("host_path is too long or contains NUL")
        if request.container_path is not None:
            validate_container_path(request.container_path)
    return requests


_CONTAINER_COMPONENT = re.compile(r"^[A-Za-z0-9._+@-]{1,100}$")


def validate_container_path(container_path: str) -> str:
    """`/workspace/extra/<container_path>` if the relative path is acceptable; ValueError says why not."""
    if not container_path:
        raise ValueError("container path is empty")
    if "\0" in container_path:
        raise ValueError("container path contains NUL")
    if ":" in container_path:
        raise ValueError("container path contains ':'")
    if container_path.startswith("/"):
        raise ValueError("container path must be relative (it is placed under /workspace/extra/)")
    if len(container_path) > 255:
        raise ValueError("container path is longer than 255 characters")
    parts = container_path.split("/")
    if len(parts) > 8:
        raise ValueError("container path has more than 8 components")
    for part in parts:
        if part in (".", ".."):
            raise ValueError(f"container path may not contain a {part!r} component")
        if not part:
            raise ValueError("container path has an empty component ('//' or a trailing '/')")
        if not _CONTAINER_COMPONENT.match(part):
            raise ValueError(
                f"container path component {part!r} may use only letters, digits and . _ + @ - "
                "(set container_path explicitly)"
            )
    return f"{EXTRA_ROOT}/{container_path}"


# --------------------------------------------------------------------------- planning


@dataclass
class MountPlan:
    """What a group's sandbox gets: `granted` in mount order, `refused` with reasons."""

    granted: list[ExtraMount] = field(default_factory=list)
    refused: list[tuple[MountRequest, str]] = field(default_factory=list)
    allowlist_error: str | None = None
    notes: list[str] = field(default_factory=list)  # downgrades to read-only, missing roots, …


@dataclass(frozen=True, slots=True)
class _Protected:
    path: str
    what: str


def _under(child: str, parent: str) -> bool:
    """Component-wise: `child` is `parent` or below it (both absolute, normalized)."""
    if child == parent:
        return True
    return child.startswith(parent.rstrip("/") + "/")


def _protected_paths(
    config_dir: Path,
    data_dir: Path,
    allowlist_path: Path,
    docker_sockets: Sequence[str],
    allowlist: Allowlist | None,
) -> list[_Protected]:
    def real(path: str | Path) -> str:
        return os.path.realpath(os.path.expanduser(str(path)))

    found = [
        _Protected(real(config_dir), "the clawgate config dir"),
        _Protected(real(allowlist_path), "the mount allowlist"),
        _Protected(real(data_dir), "the clawgate data dir (database, sockets, vault, group folders)"),
        _Protected(real(data_dir / "run"), "the sandbox sockets dir"),
    ]
    for suffix in ("", "-wal", "-shm"):
        found.append(_Protected(real(data_dir / (DATABASE + suffix)), "the clawgate database"))
    sockets = list(docker_sockets)
    docker_host = os.environ.get("DOCKER_HOST", "")
    if docker_host.startswith("unix://"):
        sockets.append(docker_host.removeprefix("unix://"))
    if os.environ.get("XDG_RUNTIME_DIR"):
        sockets.append(os.path.join(os.environ["XDG_RUNTIME_DIR"], "docker.sock"))
    for socket_path in sockets:
        found.append(_Protected(os.path.normpath(socket_path), "the Docker socket"))
        found.append(_Protected(real(socket_path), "the Docker socket"))
    if allowlist is not None:
        for pattern in allowlist.blocked_patterns:
            if is_path_pattern(pattern):
                found.append(_Protected(real(pattern), f"a blocked path ({pattern})"))
    return found


def _protected_reason(real: str, protected: Sequence[_Protected]) -> str | None:
    for item in protected:
        if _under(real, item.path):
            relation = "is" if real == item.path else "is inside"
            return f"{real} {relation} {item.what} ({item.path})"
        if _under(item.path, real):
            return f"{real} contains {item.what} ({item.path})"
    return None


def _resolve(host_path: str) -> tuple[str, str]:
    """(expanded requested path, real path); ValueError with the reason when unusable."""
    if not host_path or len(host_path) > MAX_HOST_PATH:
        raise ValueError("host path is empty or too long")
    if "\0" in host_path:
        raise ValueError("host path contains NUL")
    expanded = os.path.expanduser(host_path)
    if expanded.startswith("~"):
        raise ValueError(f"cannot expand {host_path!r} (unknown user)")
    if not os.path.isabs(expanded):
        raise ValueError(f"{host_path!r} is not absolute (use /… or ~/…)")
    try:
        real = os.path.realpath(expanded, strict=True)
        info = os.stat(real)
    except FileNotFoundError:
        raise ValueError(f"{host_path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"cannot resolve {host_path}: {exc.strerror or exc}") from None
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"cannot resolve {host_path}: {exc}") from None
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        raise ValueError(f"{real} is neither a directory nor a regular file")
    return expanded, real


def _check_blocked(expanded: str, real: str, patterns: Sequence[str]) -> None:
    for label, path in (("requested path", expanded), ("real path", real)):
        hit = blocked_in_path(path, patterns)
        if hit is not None:
            component, pattern = hit
            raise ValueError(
                f"{label} {path} has component {component!r} matching blocked pattern {pattern!r}"
            )


@dataclass(frozen=True, slots=True)
class _Root:
    path: str
    real: str
    allow_read_write: bool


def _roots(allowlist: Allowlist, notes: list[str]) -> list[_Root]:
    roots = []
    for root in allowlist.allowed_roots:
        expanded = os.path.expanduser(root.path)
        try:
            real = os.path.realpath(expanded, strict=True)
        except (OSError, RuntimeError, ValueError):
            notes.append(f"allowed root {root.path} does not exist; ignored")
            continue
        if not os.path.isabs(expanded) or not os.path.isdir(real):
            notes.append(f"allowed root {root.path} is not a directory; ignored")
            continue
        roots.append(_Root(root.path, real, root.allow_read_write))
    return roots


def _check_request(
    request: MountRequest,
    group: Group,
    allowlist: Allowlist,
    roots: Sequence[_Root],
    patterns: Sequence[str],
    protected: Sequence[_Protected],
    taken: list[str],
    notes: list[str],
) -> ExtraMount:
    """The grant for one request, or ValueError with the reason it is refused."""
    expanded, real = _resolve(request.host_path)
    _check_blocked(expanded, real, patterns)
    reason = _protected_reason(real, protected)
    if reason is not None:
        raise ValueError(reason)
    containing = [root for root in roots if _under(real, root.real)]
    if not containing:
        listed = ", ".join(root.path for root in roots) or "none usable"
        raise ValueError(f"{real} is not under an allowed root ({listed})")
    name = request.container_path
    if name is None:
        name = os.path.basename(os.path.normpath(expanded))
        if name in ("", ".", "..", "/"):
            name = os.path.basename(real)
    target = validate_container_path(name)
    for other in taken:
        if _under(target, other) or _under(other, target):
            raise ValueError(f"container path {target} clashes with another mount at {other}")
    read_only = True
    if request.read_write:
        if not all(root.allow_read_write for root in containing):
            notes.append(f"{request.host_path}: read-only (its allowed root does not allow read-write)")
        elif not group.is_main and allowlist.non_main_read_only:
            notes.append(f"{request.host_path}: read-only (non_main_read_only is true for non-main groups)")
        else:
            read_only = False
    taken.append(target)
    return ExtraMount(host_path=Path(real), container_path=target, read_only=read_only)


def _plan_project(
    project_root: str,
    plan: MountPlan,
    patterns: Sequence[str],
    protected: Sequence[_Protected],
) -> None:
    request = MountRequest(host_path=project_root, container_path=PROJECT_MOUNT)
    try:
        expanded, real = _resolve(project_root)
        if not os.path.isdir(real):
            raise ValueError(f"project root {real} is not a directory")
        _check_blocked(expanded, real, patterns)
        reason = _protected_reason(real, protected)
        if reason is not None:
            raise ValueError(reason)
        shadows: list[str] = []
        env = os.path.join(real, ".env")
        if os.path.lexists(env):
            if not stat.S_ISREG(os.lstat(env).st_mode):
                raise ValueError(
                    f"{env} is not a regular file, so it cannot be shadowed; refusing the project"
                )
            shadows.append(".env")
        with os.scandir(real) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            if entry.name == ".env" or blocked_match(entry.name, patterns) is None:
                continue
            if entry.is_file(follow_symlinks=False) and _CONTAINER_COMPONENT.match(entry.name):
                shadows.append(entry.name)
            else:
                plan.notes.append(f"project root: {entry.path} matches a blocked pattern but is not shadowed")
    except (OSError, ValueError) as exc:
        plan.refused.append((request, f"project root: {exc}"))
        return
    plan.granted.append(ExtraMount(host_path=Path(real), container_path=PROJECT_MOUNT, read_only=True))
    for name in shadows:
        plan.granted.append(ExtraMount(host_path=DEV_NULL, container_path=f"{PROJECT_MOUNT}/{name}"))


def plan_mounts(
    group: Group,
    allowlist_path: Path,
    config_dir: Path,
    data_dir: Path,
    project_root: str | None,
    *,
    docker_sockets: Sequence[str] = DOCKER_SOCKETS,
) -> MountPlan:
    """Decide the group's extra mounts. Never raises: every problem becomes a refusal or `allowlist_error`."""
    plan = MountPlan()
    requests = list(group.extra_mounts)
    if group.is_main and project_root:
        requests_project: str | None = project_root
    else:
        requests_project = None
    try:
        allowlist = load_allowlist(Path(allowlist_path))
    except AllowlistError as exc:
        allowlist = None
        plan.allowlist_error = str(exc)
    except Exception as exc:  # the allowlist never crashes a sandbox start
        allowlist = None
        plan.allowlist_error = f"cannot load the mount allowlist {allowlist_path}: {exc!r}"
    if allowlist is None:
        reason = "no extra mounts without a valid allowlist (see the allowlist error)"
        if requests_project is not None:
            plan.refused.append((MountRequest(project_root or "", PROJECT_MOUNT), reason))
        plan.refused.extend((request, reason) for request in requests)
        return plan

    patterns = allowlist.patterns()
    protected = _protected_paths(
        Path(config_dir), Path(data_dir), Path(allowlist_path), docker_sockets, allowlist
    )
    if requests_project is not None:
        _plan_project(requests_project, plan, patterns, protected)
    roots = _roots(allowlist, plan.notes)
    taken: list[str] = []
    for index, request in enumerate(requests):
        if index >= MAX_REQUESTS:
            plan.refused.append((request, f"more than {MAX_REQUESTS} extra mounts requested"))
            continue
        try:
            request = MountRequest.from_json(request)
            grant = _check_request(request, group, allowlist, roots, patterns, protected, taken, plan.notes)
        except (TypeError, ValueError) as exc:
            plan.refused.append((request, str(exc)))
        except Exception as exc:  # an unexpected error refuses, never grants
            plan.refused.append((request, f"internal error while checking: {exc!r}"))
        else:
            plan.granted.append(grant)
    return plan


def describe_plan(plan: MountPlan) -> list[str]:
    """Human-readable lines (used by `clawgate groups mounts`)."""
    lines: list[str] = []
    if plan.allowlist_error:
        lines.append(f"allowlist: {plan.allowlist_error}")
    if plan.granted:
        lines.append("granted:")
        for mount in plan.granted:
            mode = "ro" if mount.read_only else "rw"
            lines.append(f"  {mount.host_path} -> {mount.container_path} ({mode})")
    else:
        lines.append("granted: nothing")
    if plan.refused:
        lines.append("refused:")
        for request, reason in plan.refused:
            lines.append(f"  {request.host_path}: {reason}")
    for note in plan.notes:
        lines.append(f"note: {note}")
    return lines


_reported_allowlist_errors: set[str] = set()


def log_plan(plan: MountPlan, folder: str, logger: logging.Logger = log) -> None:
    if plan.allowlist_error and plan.allowlist_error not in _reported_allowlist_errors:
        # Once per distinct problem, not once per sandbox start.
        _reported_allowlist_errors.add(plan.allowlist_error)
        logger.warning("%s", plan.allowlist_error)
    for request, reason in plan.refused:
        logger.warning("group %s: mount %s refused: %s", folder, request.host_path, reason)
    for note in plan.notes:
        logger.info("group %s: mount note: %s", folder, note)
    for mount in plan.granted:
        mode = "ro" if mount.read_only else "rw"
        logger.info("group %s: mount %s -> %s (%s)", folder, mount.host_path, mount.container_path, mode)
