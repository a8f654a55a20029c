"""The seccomp filter of the bubblewrap backend, built with libseccomp and handed to `bwrap --seccomp FD`.

Docker applies its default seccomp profile to every container; bwrap applies nothing unless it
is given a filter. This module builds one that denies, with EPERM, at least what Docker's default
profile (moby `profiles/seccomp/default.json`, for a container without added capabilities)
denies in the families below. Why each family is denied:

- Kernel keyring (`add_key`, `keyctl`, `request_key`): keyrings are not namespaced by mount or
  pid namespaces; the per-uid user keyring is shared by every process of that uid, so one group
  could leave a key for, or read a key of, another. Docker blocks all three.
- Namespaces (`unshare`, `setns`, `clone` with any CLONE_NEW* flag, `clone3`): as root, bwrap
  starts the sandbox without a user namespace, so an unprivileged user namespace (`unshare -r`)
  would hand the agent a full capability set over fresh namespaces: mounts, netfilter, and the
  large kernel attack surface that only root could reach. `clone3` passes its flags in memory a
  filter cannot read, so it fails with ENOSYS and libc falls back to `clone`, whose flags are
  checked (exactly Docker's handling).
- Mounts (`mount`, `umount`/`umount2`, `pivot_root`, `chroot`, and the new mount API
  `open_tree`, `move_mount`, `fsopen`, `fsconfig`, `fsmount`, `fspick`, `mount_setattr`): the
  filesystem view is the policy; `open_tree` clones a mount without any capability.
- Tracing and other processes' memory (`ptrace`, `process_vm_readv`/`writev`, `process_madvise`,
  `kcmp`, `pidfd_getfd`): a compromised agent process must not take over or read another one
  (e.g. the agent runtime holding a turn). Docker allows `ptrace` on kernels >= 4.8; we do not.
- Kernel programmability and observability (`bpf`, `perf_event_open`, `userfaultfd`,
  `lookup_dcookie`, `syslog`): large attack surfaces and side channels (`userfaultfd` is the
  classic way to win kernel races).
- io_uring (`io_uring_setup`/`enter`/`register`): a second syscall interface that bypasses
  seccomp filtering of the operations it performs and a steady source of kernel exploits; Docker
  removed it from the default profile in 2023.
- Whole-system state (`kexec_load`, `kexec_file_load`, `init_module`, `finit_module`,
  `delete_module`, `create_module`, `query_module`, `get_kernel_syms`, `reboot`, `swapon`,
  `swapoff`, `acct`, `quotactl`, `quotactl_fd`, `settimeofday`, `clock_settime`, `clock_adjtime`,
  `stime`, `sethostname`, `setdomainname`, `iopl`, `ioperm`, `vhangup`, `nfsservctl`, `_sysctl`,
  `sysfs`, `ustat`, `uselib`, `vm86`, `vm86old`): the sandbox has no capability for them anyway;
  denying them removes the code paths too (defence in depth, as Docker does).
- Memory policy of other processes (`mbind`, `set_mempolicy`, `get_mempolicy`, `move_pages`,
  `migrate_pages`): need CAP_SYS_NICE in Docker's profile.
- File handles (`name_to_handle_at`, `open_by_handle_at`): `open_by_handle_at` was the
  "shocker" container escape; the pair is denied together as Docker does.
- `personality` other than PER_LINUX: ADDR_NO_RANDOMIZE / READ_IMPLIES_EXEC weaken exploit
  mitigations (Docker allows only a handful of values; like Flatpak we allow just 0).
- `socket(AF_VSOCK, ...)`: talks to the hypervisor, outside every namespace (Docker denies it).

Architecture: only the native ABI may make system calls. Any other one (i386 `int 0x80` or
x32 on x86_64, arm32 on aarch64) kills the process, so a syscall cannot dodge the rules under
another number.

The filter is a deny list with default ALLOW (Docker's is an allow list with default EPERM):
the agent runs arbitrary tools (git, compilers, node) whose syscall set we cannot enumerate,
and everything not listed here is already confined by the namespaces, the dropped capabilities
and no_new_privs. System calls newer than the installed libseccomp (and so unknown to it) are
skipped rather than refused; the families above are all known to libseccomp >= 2.5.
"""

from __future__ import annotations

import errno
import functools
import os
import platform
from types import ModuleType

from groups.sandbox.base import SandboxUnavailable

EPERM_FAMILIES: dict[str, tuple[str, ...]] = {
    "keyring": ("add_key", "keyctl", "request_key"),
    "namespaces": ("unshare", "setns"),
    "mounts": (
        "mount",
        "umount",
        "umount2",
        "pivot_root",
        "chroot",
        "open_tree",
        "move_mount",
        "fsopen",
        "fsconfig",
        "fsmount",
        "fspick",
        "mount_setattr",
    ),
    "tracing": ("ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd"),
    "kernel programmability": ("bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "syslog"),
    "io_uring": ("io_uring_setup", "io_uring_enter", "io_uring_register"),
    "system state": (
        "kexec_load",
        "kexec_file_load",
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "query_module",
        "get_kernel_syms",
        "reboot",
        "swapon",
        "swapoff",
        "acct",
        "quotactl",
        "quotactl_fd",
        "settimeofday",
        "clock_settime",
        "clock_adjtime",
        "stime",
        "sethostname",
        "setdomainname",
        "iopl",
        "ioperm",
        "vhangup",
        "nfsservctl",
        "_sysctl",
        "sysfs",
        "ustat",
        "uselib",
        "vm86",
        "vm86old",
    ),
    "memory policy": ("mbind", "set_mempolicy", "get_mempolicy", "move_pages", "migrate_pages"),
    "file handles": ("name_to_handle_at", "open_by_handle_at"),
}

# Must resolve, or the filter is not built at all (fail closed): the calls the issue names.
REQUIRED = frozenset(
    {"add_key", "keyctl", "request_key", "unshare", "setns", "clone", "clone3", "mount", "ptrace", "bpf"}
    | {"perf_event_open", "io_uring_setup", "io_uring_enter", "io_uring_register", "open_tree"}
)

CLONE_NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
)
AF_VSOCK = 40
PER_LINUX = 0


def _lib() -> ModuleType:
    """pyseccomp, or SandboxUnavailable saying how to get libseccomp (it loads the C library on import)."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError, OSError) as exc:
        raise SandboxUnavailable(
            f"cannot load libseccomp ({exc}); the bwrap backend needs it for its seccomp filter: "
            "`apt-get install libseccomp2` (Debian/Ubuntu) or `dnf install libseccomp`"
        ) from None
    module: ModuleType = pyseccomp  # untyped (ctypes bindings): used as a plain module
    return module


def _known(sc: ModuleType, name: str) -> bool:
    """libseccomp knows the call (a negative number is a pseudo-call for another arch: fine to add)."""
    return int(sc.resolve_syscall(sc.Arch.NATIVE, name)) != -1


@functools.cache
def filter_bpf() -> bytes:
    """The compiled BPF program (cached: it depends only on the host's arch and libseccomp)."""
    sc = _lib()
    deny = sc.ERRNO(errno.EPERM)
    flt = sc.SyscallFilter(sc.ALLOW)
    # Only the native ABI: i386/x32 (or arm32) system calls kill the process.
    flt.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)
    missing = sorted(name for name in REQUIRED if not _known(sc, name))
    if missing:
        raise SandboxUnavailable(
            f"the installed libseccomp does not know {', '.join(missing)}; upgrade libseccomp (>= 2.5)"
        )
    for names in EPERM_FAMILIES.values():
        for name in names:
            if _known(sc, name):
                flt.add_rule(deny, name)
    flag_arg = 1 if platform.machine() in ("s390", "s390x") else 0  # clone(flags, ...) elsewhere
    for flag in CLONE_NAMESPACE_FLAGS:
        flt.add_rule(deny, "clone", sc.Arg(flag_arg, sc.MASKED_EQ, flag, flag))
    flt.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    flt.add_rule(deny, "personality", sc.Arg(0, sc.NE, PER_LINUX))
    flt.add_rule(deny, "socket", sc.Arg(0, sc.EQ, AF_VSOCK))
    fd = os.memfd_create("clawgate-seccomp", os.MFD_CLOEXEC)
    try:
        flt.export_bpf(_Fd(fd))
        size = os.lseek(fd, 0, os.SEEK_CUR)
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


def filter_fd() -> int:
    """A fresh fd (a memfd at offset 0) holding the program, for `bwrap --seccomp FD`.

    Close-on-exec: pass it in `pass_fds`, and close it after spawning bwrap (bwrap reads it to
    the end and closes its own copy). One per launch, since reading consumes the offset.
    """
    program = filter_bpf()
    fd = os.memfd_create("clawgate-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, program)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd


class _Fd:
    """pyseccomp's export wants an object with `fileno()`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def fileno(self) -> int:
        return self._fd
