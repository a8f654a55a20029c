"""The bwrap backend's cgroups: per-sandbox memory, pids and cpu limits, best effort.

bwrap itself sets no resource limits. Where a cgroup hierarchy is writable (as root; v2, or
v1's memory/pids/cpu controllers) each sandbox gets `clawgate/<instance>/<sandbox id>` with
memory (+ swap) = memory_mb, pids = the pids limit and a cpu quota; its processes are put there
before they exec (groups/sandbox/bwrap.py `_preexec`). Where none is writable the sandbox runs
with rlimits only and says so. A cgroup outlives a killed gateway; the next start finds it
(`leftover_cgroups`), kills what is left in it and removes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from groups.sandbox.base import SandboxSpec

log = logging.getLogger("groups.sandbox.bwrap")

CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "clawgate"


@dataclass
class Cgroup:
    dirs: list[Path] = field(default_factory=list)  # one leaf per hierarchy used
    applied: list[str] = field(default_factory=list)

    @property
    def procs_files(self) -> list[str]:
        return [str(d / "cgroup.procs") for d in self.dirs]

    def pids(self) -> set[int]:
        found: set[int] = set()
        for d in self.dirs:
            with contextlib.suppress(OSError, ValueError):
                found |= {int(x) for x in (d / "cgroup.procs").read_text().split()}
        return found

    def kill_all(self) -> None:
        for d in self.dirs:
            if (d / "cgroup.kill").exists():
                with contextlib.suppress(OSError):
                    (d / "cgroup.kill").write_text("1")
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def remove(self, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for d in self.dirs:
            while True:
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        log.warning("cgroup %s still busy; left behind", d)
                        break
                    self.kill_all()
                    time.sleep(0.02)


def _write(path: Path, value: str) -> bool:
    try:
        path.write_text(value)
        return True
    except OSError:
        return False


def cgroup_version() -> int | None:
    if (CGROUP_ROOT / "cgroup.controllers").exists():
        return 2
    if (CGROUP_ROOT / "memory").is_dir() or (CGROUP_ROOT / "pids").is_dir():
        return 1
    return None


def create_cgroup(instance: str, sandbox_id: str, spec: SandboxSpec) -> Cgroup:
    """Make `clawgate/<instance>/<id>` with the spec's limits where the hierarchy is writable."""
    group = Cgroup()
    limits = spec.limits
    memory = str(limits.memory_mb * 1024 * 1024)
    version = cgroup_version()
    if version == 2:
        leaf = CGROUP_ROOT / CGROUP_PARENT / instance / sandbox_id
        try:
            for parent in (CGROUP_ROOT, CGROUP_ROOT / CGROUP_PARENT, CGROUP_ROOT / CGROUP_PARENT / instance):
                if parent != CGROUP_ROOT:
                    parent.mkdir(exist_ok=True)
                for ctrl in ("memory", "pids", "cpu"):
                    _write(parent / "cgroup.subtree_control", f"+{ctrl}")
            leaf.mkdir()
        except OSError as exc:
            log.info("cgroup v2 not writable (%s); rlimits only", exc)
            return group
        group.dirs.append(leaf)
        if _write(leaf / "memory.max", memory):
            _write(leaf / "memory.swap.max", "0")
            group.applied.append("memory")
        if _write(leaf / "pids.max", str(limits.pids)):
            group.applied.append("pids")
        if _write(leaf / "cpu.max", f"{int(limits.cpus * 100_000)} 100000"):
            group.applied.append("cpu")
        return group
    if version == 1:
        for ctrl in ("memory", "pids", "cpu"):
            mount = CGROUP_ROOT / ctrl
            if not mount.is_dir():
                continue
            leaf = mount / CGROUP_PARENT / instance / sandbox_id
            try:
                leaf.mkdir(parents=True)
            except OSError:
                continue
            ok = False
            if ctrl == "memory":
                ok = _write(leaf / "memory.limit_in_bytes", memory)
                if ok and (leaf / "memory.memsw.limit_in_bytes").exists():
                    _write(leaf / "memory.memsw.limit_in_bytes", memory)
            elif ctrl == "pids":
                ok = _write(leaf / "pids.max", str(limits.pids))
            elif ctrl == "cpu":
                ok = _write(leaf / "cpu.cfs_period_us", "100000") and _write(
                    leaf / "cpu.cfs_quota_us", str(int(limits.cpus * 100_000))
                )
            group.dirs.append(leaf)
            if ok:
                group.applied.append(ctrl)
    return group


def leftover_cgroups(instance: str) -> list[Cgroup]:
    """Sandbox cgroups of `instance` that still exist (one `Cgroup` per sandbox id)."""
    by_id: dict[str, Cgroup] = {}
    roots = [CGROUP_ROOT] if cgroup_version() == 2 else [CGROUP_ROOT / c for c in ("memory", "pids", "cpu")]
    for root in roots:
        parent = root / CGROUP_PARENT / instance
        with contextlib.suppress(OSError):
            for leaf in parent.iterdir():
                if leaf.is_dir():
                    by_id.setdefault(leaf.name, Cgroup()).dirs.append(leaf)
    return list(by_id.values())
