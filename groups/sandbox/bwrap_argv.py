"""The bwrap command line for a sandbox: the whole isolation policy, as a pure function.

Kept apart from the backend (groups/sandbox/bwrap.py), which finds the root filesystem,
opens the descriptors, spawns and reaps bwrap, because this is the part a reviewer must be
able to read in one place and a test can check without starting anything: `bwrap_argv` is
pure, so tests read the policy directly (tests/unit/test_config.py, the hardening tests).

The sandbox gets the same policy as a Docker container (see `docker.py`): its own pid,
network (loopback only), ipc, uts and cgroup namespaces; the image's root filesystem
mounted read-only; a fresh `/proc` and `/dev`; a size-capped tmpfs `/tmp`; the same
workspace mounts (`sandbox_binds`) and the read-only `/run/clawgate` socket dir; no
capabilities; the seccomp filter (`--seccomp FD`); a non-root uid; exactly the spec's
environment (`--clearenv`, `--setenv`); and it dies with the gateway (`--die-with-parent`).

Identity. As a normal user, bwrap unshares a user namespace and maps the sandbox uid
onto the gateway's own uid (`--unshare-user --uid --gid`, `--disable-userns`). As root,
a bwrap-made user namespace would map the sandbox uid onto host uid 0, and bwrap run as
the dedicated uid cannot reach the data dir (mode 0700), so instead bwrap runs as root
*without* a user namespace, keeps only CAP_SETUID/SETGID/SETPCAP, and `setpriv` from the
read-only image switches to the dedicated uid, clears groups and empties the bounding
set before the agent starts: the agent never runs as root or with a capability, the
same model as Docker. Each group has its own uid (`groups.uids`), so nothing keyed by uid
(the user keyring, RLIMIT_NPROC) is shared between groups.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from groups.folders import INBOX_IN_SANDBOX
from groups.sandbox.base import SandboxSpec, SandboxUnavailable

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AGENT_COMMAND = ("python3", "-m", "agent")


def privileged_launch() -> bool:
    """True when bwrap runs as root and `setpriv` drops to the sandbox uid (see module doc)."""
    return os.geteuid() == 0


@dataclass(frozen=True, slots=True)
class Bind:
    """One bind mount into the sandbox. `validated`: a grant checked by `groups.mounts`, whose
    real path must not be resolved again (see `bind_fds`); otherwise a gateway-made dir."""

    source: Path
    dest: str
    read_only: bool
    validated: bool = False


def sandbox_binds(spec: SandboxSpec) -> list[Bind]:
    """Every bind mount of `spec` besides the root filesystem, in mount order."""
    return [
        Bind(spec.group_dir, "/workspace/group", read_only=False),
        Bind(spec.global_dir, "/workspace/global", read_only=not spec.is_main),
        *([Bind(spec.inbox_dir, INBOX_IN_SANDBOX, read_only=True)] if spec.inbox_dir is not None else []),
        *(Bind(m.host_path, m.container_path, m.read_only, validated=True) for m in spec.extra_mounts),
        Bind(spec.run_dir, "/run/clawgate", read_only=True),
    ]


def bwrap_argv(
    spec: SandboxSpec,
    rootfs: Path,
    command: list[str] | None = None,
    *,
    env_path: str = DEFAULT_PATH,
    privileged: bool | None = None,
    seccomp_fd: int | None = None,
    bind_fds: list[int] | None = None,
) -> list[str]:
    """The complete bwrap command line for `spec`; pure, so tests read the policy directly.

    `bind_fds` (one per `sandbox_binds(spec)`, opened by `bind_fds.open_bind_source`) mounts
    every source by descriptor instead of by path; `seccomp_fd` is the filter of
    `groups.sandbox.seccomp`. `BwrapBackend.start` always passes both.
    """
    if spec.uid == 0 or spec.gid == 0:
        raise SandboxUnavailable("refusing to run a sandbox as root (uid/gid 0); set sandbox.run_as_uid")
    privileged = privileged_launch() if privileged is None else privileged
    argv = ["bwrap"]
    if privileged:
        argv += ["--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all", "--unshare-user", "--disable-userns"]
        argv += ["--uid", str(spec.uid), "--gid", str(spec.gid)]
    argv += ["--die-with-parent", "--new-session", "--hostname", "clawgate"]
    argv += ["--ro-bind", str(rootfs), "/", "--proc", "/proc", "--dev", "/dev"]
    argv += ["--perms", "1777", "--size", str(spec.limits.tmpfs_mb * 1024 * 1024), "--tmpfs", "/tmp"]
    # /workspace is a fresh tmpfs holding only the mount points, made read-only afterwards.
    argv += ["--perms", "0755", "--tmpfs", "/workspace"]
    binds = sandbox_binds(spec)
    if bind_fds is not None and len(bind_fds) != len(binds):
        raise ValueError(f"{len(binds)} bind mounts but {len(bind_fds)} descriptors")
    argv += _mount_point_parents([bind.dest for bind in binds])
    for index, bind in enumerate(binds):
        if bind_fds is None:
            argv += ["--ro-bind" if bind.read_only else "--bind", str(bind.source), bind.dest]
        else:
            argv += ["--ro-bind-fd" if bind.read_only else "--bind-fd", str(bind_fds[index]), bind.dest]
    argv += ["--remount-ro", "/workspace"]
    argv += ["--cap-drop", "ALL"]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if privileged:
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    env = {
        **spec.env,
        "PATH": env_path,
        "PYTHONPATH": "/opt/clawgate",
        "PYTHONSAFEPATH": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "HOME": spec.env.get("HOME", "/workspace/group"),
    }
    argv.append("--clearenv")
    for key, value in env.items():
        argv += ["--setenv", key, value]
    if privileged:
        # root without CAP_DAC_OVERRIDE cannot enter the 0700 group dir: chdir after the uid switch
        argv += ["--chdir", "/", "--"]
        argv += ["setpriv", "--reuid", str(spec.uid), "--regid", str(spec.gid), "--clear-groups"]
        argv += ["--bounding-set", "-all", "--inh-caps", "-all", "--"]
        argv += ["env", "-C", "/workspace/group", "PWD=/workspace/group"]  # bwrap set PWD=/
    else:
        argv += ["--chdir", "/workspace/group", "--"]
    argv += list(command or AGENT_COMMAND)
    return argv


def _mount_point_parents(dests: list[str]) -> list[str]:
    """`--dir`s (mode 0755) for the directories above the mount points in /workspace.

    bwrap would create them itself with mode 0700 and owned by root, which the sandbox uid
    could not enter (e.g. /workspace/extra). Directories inside another mount are left alone:
    they would be created in a host directory.
    """
    made: list[str] = []
    for dest in dests:
        parent = PurePosixPath(dest).parent
        chain = []
        while parent != PurePosixPath("/workspace") and PurePosixPath("/workspace") in parent.parents:
            chain.append(str(parent))
            parent = parent.parent
        for path in reversed(chain):
            inside = any(path == d or path.startswith(d + "/") for d in dests)
            if not inside and path not in made:
                made.append(path)
    return [arg for path in made for arg in ("--perms", "0755", "--dir", path)]
