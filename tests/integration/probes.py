"""Hostile programs run inside a sandbox by the hardening proofs of every backend.

One copy, so the Docker and bubblewrap suites attack with exactly the same code.
"""

from __future__ import annotations

# Forks until the pids limit bites, reports how far it got, then cleans up after itself.
FORK_BOMB = (
    "import os, signal, time\n"
    "kids = []\n"
    "try:\n"
    "    for _ in range(200):\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            time.sleep(30); os._exit(0)\n"
    "        kids.append(pid)\n"
    "    print('UNLIMITED')\n"
    "except OSError as e:\n"
    "    print('blocked after', len(kids), e.strerror)\n"
    "for pid in kids: os.kill(pid, signal.SIGKILL)\n"
    "for pid in kids: os.waitpid(pid, 0)\n"
)


def connect_probe(targets: list[tuple[str, int]]) -> str:
    """Tries a direct TCP connection to each (host, port); prints CONNECTED or failed per target."""
    return (
        "import socket\n"
        f"for host, port in {targets!r}:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=3); print('CONNECTED', host)\n"
        "    except OSError as e: print('failed', host, type(e).__name__)\n"
    )


# ctypes access to raw system calls by name (x86_64 and aarch64 numbers); ints become C longs.
SYSCALLS = r"""
import ctypes, errno, os, platform, struct
NR = {
    "x86_64": dict(add_key=248, request_key=249, keyctl=250, unshare=272, setns=308, mount=165, umount2=166,
        ptrace=101, process_vm_readv=310, bpf=321, perf_event_open=298, io_uring_setup=425,
        userfaultfd=323, open_tree=428, fsopen=430, personality=135, clone=56, clone3=435,
        kexec_load=246, init_module=175),
    "aarch64": dict(add_key=217, request_key=218, keyctl=219, unshare=97, setns=268, mount=40, umount2=39,
        ptrace=117, process_vm_readv=270, bpf=280, perf_event_open=241, io_uring_setup=425,
        userfaultfd=282, open_tree=428, fsopen=430, personality=92, clone=220, clone3=435,
        kexec_load=104, init_module=105),
}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long

def sys(name, *args):
    args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return libc.syscall(ctypes.c_long(NR[name]), *args)

def err():
    return errno.errorcode.get(ctypes.get_errno(), "?")
"""

# Each dangerous system call, made the way an attacker would, in a forked child so that one
# success (a new user namespace, a tracer) cannot change what the next probe sees. Prints one
# line per call: `<name> ok` when the kernel let it through, else `<name> <ERRNO>`. The
# arguments are the cheapest ones that SUCCEED when nothing filters the call, so `ok` really
# means "reachable" (perf: a user-space software counter on itself, allowed by
# perf_event_paranoid <= 2; userfaultfd: UFFD_USER_MODE_ONLY; open_tree: no clone flag).
SYSCALL_PROBE = (
    SYSCALLS
    + r"""
import tempfile
USER_KEYRING, CLONE_NEWUSER, SIGCHLD = -4, 0x10000000, 17

def buf(size):
    return ctypes.create_string_buffer(size)

def perf_attr():
    attr = buf(128)
    struct.pack_into("IIQ", attr, 0, 1, 128, 0)  # PERF_TYPE_SOFTWARE, size, PERF_COUNT_SW_CPU_CLOCK
    struct.pack_into("Q", attr, 40, (1 << 0) | (1 << 5) | (1 << 6))  # disabled, exclude_kernel, _hv
    return attr

def clone_newuser():
    pid = sys("clone", CLONE_NEWUSER | SIGCHLD, None, None, None, None)
    if pid == 0:
        os._exit(0)
    if pid > 0:
        os.waitpid(pid, 0)
    return pid

def mount_tmpfs():
    # on a fresh private dir, undone at once: harmless even if run on a host as root
    target = tempfile.mkdtemp().encode()
    done = sys("mount", b"none", target, b"tmpfs", 0, None)
    if done == 0:
        sys("umount2", target, 2)  # MNT_DETACH
    return done

word = ctypes.c_long(0)
iov = (ctypes.c_void_p * 2)(ctypes.addressof(word), 8)
PROBES = {
    "add_key": lambda: sys("add_key", b"user", b"clawgate-probe", b"x", 1, USER_KEYRING),
    "keyctl": lambda: sys("keyctl", 0, USER_KEYRING, 1),  # KEYCTL_GET_KEYRING_ID, create
    "request_key": lambda: sys("request_key", b"user", b"clawgate-probe", None, 0),
    "unshare": lambda: sys("unshare", CLONE_NEWUSER),
    "clone_newuser": clone_newuser,
    "setns": lambda: sys("setns", os.open("/proc/self/ns/uts", os.O_RDONLY), 0),
    "mount": mount_tmpfs,
    "open_tree": lambda: sys("open_tree", -100, b"/tmp", 0),
    "fsopen": lambda: sys("fsopen", b"tmpfs", 0),
    "ptrace": lambda: sys("ptrace", 0, 0, None, None),  # PTRACE_TRACEME
    "process_vm_readv": lambda: sys("process_vm_readv", os.getpid(), iov, 1, iov, 1, 0),
    "bpf": lambda: sys("bpf", 0, buf(128), 128),
    "perf_event_open": lambda: sys("perf_event_open", perf_attr(), 0, -1, -1, 0),
    "io_uring_setup": lambda: sys("io_uring_setup", 1, buf(120)),
    "userfaultfd": lambda: sys("userfaultfd", 1),
    "personality": lambda: sys("personality", 0x0040000),  # ADDR_NO_RANDOMIZE
    "clone3": lambda: sys("clone3", None, 0),
    "kexec_load": lambda: sys("kexec_load", 0, 0, None, 0xDEAD0000),  # invalid flags: never loads
    "init_module": lambda: sys("init_module", None, 0, b""),
}
for name, call in PROBES.items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            result = "ok" if call() >= 0 else err()
        except Exception as exc:
            result = "error:" + type(exc).__name__
        os.write(write, result.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        result = pipe.read() or "killed"
    os.waitpid(pid, 0)
    print(name, result, flush=True)
"""
)

# What the kernel must answer for each SYSCALL_PROBE call under a seccomp filter (EPERM), and
# for clone3 ENOSYS (so that libc falls back to clone, whose flags the filter can read).
# Docker's default profile gives the same answers except `ptrace` (allowed on kernels >= 4.8).
SECCOMP_DENIED = {
    name: "EPERM"
    for name in (
        "add_key",
        "keyctl",
        "request_key",
        "unshare",
        "clone_newuser",
        "setns",
        "mount",
        "open_tree",
        "fsopen",
        "ptrace",
        "process_vm_readv",
        "bpf",
        "perf_event_open",
        "io_uring_setup",
        "userfaultfd",
        "personality",
        "kexec_load",
        "init_module",
    )
} | {"clone3": "ENOSYS"}


def parse_probe(output: str) -> dict[str, str]:
    """`{name: result}` from SYSCALL_PROBE's output (other lines, e.g. warnings, are ignored)."""
    found = {}
    for line in output.splitlines():
        name, _, result = line.partition(" ")
        if name in SECCOMP_DENIED and result:
            found[name] = result
    return found


# Leaves a key (argv[1]) in the per-uid user keyring, prints its serial, and stays alive (so
# the keyring does, whatever the kernel's keyring lifetime) until killed.
KEY_PLANT = (
    SYSCALLS
    + r"""
import sys as system, time
secret = system.argv[1].encode()
serial = sys("add_key", b"user", b"clawgate-planted", secret, len(secret), -4)
print("planted", serial if serial >= 0 else err(), flush=True)
time.sleep(120)
"""
)

# Looks for that key from another sandbox: KEYCTL_SEARCH in the user keyring, then KEYCTL_READ.
KEY_STEAL = (
    SYSCALLS
    + r"""
serial = sys("keyctl", 10, -4, b"user", b"clawgate-planted", 0)
if serial < 0:
    print("search", err())
else:
    out = ctypes.create_string_buffer(256)
    size = sys("keyctl", 11, serial, out, 256)
    print("STOLEN", out.raw[: max(size, 0)].decode(errors="replace"))
"""
)


# x86_64 only: a system call through another ABI than the native one (x32: number | 0x40000000;
# i386: `int 0x80` from 64-bit code), where a filter written for x86_64 numbers would not apply.
# Prints `<abi> returned <value> errno <n>` or `<abi> killed <signal>` per ABI.
ABI_PROBE = r"""
import ctypes, mmap, os, signal
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def x32():
    return libc.syscall(ctypes.c_long(0x40000000 + 39))  # getpid through the x32 ABI
code = bytes([0xB8, 20, 0, 0, 0, 0xCD, 0x80, 0xC3])  # mov eax, 20 (i386 getpid); int 0x80; ret
page = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(code)
i386 = ctypes.CFUNCTYPE(ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
for name, call in (("x32", x32), ("i386", i386)):
    pid = os.fork()
    if pid == 0:
        value = call()
        os.write(1, f"{name} returned {value} errno {ctypes.get_errno()}\n".encode())
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        print(name, "killed", signal.Signals(os.WTERMSIG(status)).name, flush=True)
"""
