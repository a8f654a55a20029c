"""Is gVisor (`runsc`) usable by the Docker engine here, and how to make it so.

`[sandbox] runtime = "runsc"` only adds isolation if the engine really runs the
container under gVisor, and the agent only starts if, inside gVisor, it can connect
to the two host unix sockets bind-mounted at /run/clawgate. gVisor refuses host
sockets unless runsc is started with `--host-uds=open`, so a runtime registered
without it passes `docker info` yet every sandbox would hang until its start
timeout. `probe` therefore runs a real container that connects to a real socket.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from docker.errors import DockerException, ImageNotFound
from docker.types import Mount

if TYPE_CHECKING:
    from docker import DockerClient

RUNSC = "runsc"
RUNSC_PATH = "/usr/bin/runsc"
RUNTIME_ARGS = ("--platform=ptrace", "--network=none", "--host-uds=open")
"""What dockerd must pass to runsc. ptrace works on machines without (nested) KVM.
network=none: gVisor builds no network stack from the container's namespace (the
sandbox has no network anyway, and runsc's network setup refuses to start on kernels
that expose per-namespace `net.core` sysctls). host-uds=open: sandboxed code may
connect to bind-mounted host sockets (ipc.sock, vault.sock) but never create one."""
DAEMON_JSON = {"runtimes": {RUNSC: {"path": RUNSC_PATH, "runtimeArgs": list(RUNTIME_ARGS)}}}
PROBE_TIMEOUT_S = 60
_HOST_UDS_ARGS = {"--host-uds=open", "--host-uds=all", "--fsgofer-host-uds", "--fsgofer-host-uds=true"}
_PROBE_REPLY = b"clawgate-runsc-probe\n"
_PROBE_CODE = (
    "import socket\n"
    "s = socket.socket(socket.AF_UNIX)\n"
    "s.settimeout(20)\n"
    "s.connect('/run/probe/probe.sock')\n"
    "print(s.recv(64).decode().strip(), open('/proc/version').read().strip())\n"
)


def daemon_json() -> str:
    """The /etc/docker/daemon.json entry that registers runsc the way clawgate needs it."""
    return json.dumps(DAEMON_JSON)


def fix_hint() -> str:
    return (
        f"install gVisor (`apt-get install runsc`), merge {daemon_json()} into /etc/docker/daemon.json "
        "and restart dockerd"
    )


def runtime_problem(client: DockerClient, runtime: str) -> str | None:
    """None when the engine has `runtime` registered as clawgate needs it (runc always is), else the fix.

    Read from `docker info`, without starting anything: a runsc that may not open host sockets
    would start containers whose agent can never connect (and runsc leaves such a failed
    sandbox's processes behind).
    """
    if runtime == "runc":
        return None
    try:
        runtimes = client.info().get("Runtimes") or {}
    except DockerException as exc:
        return f"cannot ask the Docker engine for its runtimes: {exc}"
    if runtime not in runtimes:
        known = ", ".join(sorted(runtimes))
        return f"the Docker engine has no {runtime!r} runtime (it has: {known}); {fix_hint()}"
    args = (runtimes[runtime] or {}).get("runtimeArgs") or []
    if not any(arg in _HOST_UDS_ARGS for arg in args):
        return (
            f"runsc is registered with {args} but without --host-uds=open, so the agent cannot reach "
            f"its ipc.sock/vault.sock; {fix_hint()}"
        )
    return None


def _serve_once(server: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn, _ = server.accept()
        with conn:
            conn.sendall(_PROBE_REPLY)


def probe(client: DockerClient, image: str) -> str | None:
    """None when a gVisor container of `image` starts and reaches a host unix socket, else why not.

    Blocking (runs a container); call it in a thread from async code. The container is
    removed whatever happens, also when it never started.
    """
    problem = runtime_problem(client, RUNSC)
    if problem is not None:
        return problem
    work = Path(tempfile.mkdtemp(prefix="cg-runsc-"))
    server = socket.socket(socket.AF_UNIX)
    container = None
    try:
        work.chmod(0o755)  # the probe runs as the image's unprivileged user
        server.bind(str(work / "probe.sock"))
        (work / "probe.sock").chmod(0o666)
        server.listen(1)
        server.settimeout(PROBE_TIMEOUT_S)
        threading.Thread(target=_serve_once, args=(server,), daemon=True).start()
        container = client.containers.create(
            image,
            entrypoint=["python3", "-c", _PROBE_CODE],
            runtime=RUNSC,
            network_mode="none",
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges:true"],
            user="65534:65534",
            mounts=[Mount("/run/probe", str(work), type="bind", read_only=True)],
            labels={"clawgate.probe": "runsc"},
        )
        container.start()
        code = int(container.wait(timeout=PROBE_TIMEOUT_S).get("StatusCode", -1))
        text = container.logs(stdout=True, stderr=True).decode("utf-8", "replace")
    except ImageNotFound:
        return f"the sandbox image {image!r} does not exist; build it with `clawgate image build`"
    except DockerException as exc:
        detail = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:300]
        return f"a gVisor container did not run: {detail}; {fix_hint()}"
    except (OSError, ValueError) as exc:  # wait() timed out, or the probe socket could not be made
        return f"the gVisor probe did not finish: {exc}"
    finally:
        server.close()
        if container is not None:
            with contextlib.suppress(DockerException):
                container.remove(force=True)
        shutil.rmtree(work, ignore_errors=True)
    if code != 0 or not text.startswith(_PROBE_REPLY.decode().strip()):
        last = " ".join(text.split())[-300:]
        return f"a gVisor container cannot connect to a host unix socket ({last}); {fix_hint()}"
    if GVISOR_PROC_VERSION not in text:
        return f"the runsc runtime did not run the container under gVisor: {text.strip()[:200]!r}"
    return None


GVISOR_PROC_VERSION = "#1 SMP Sun Jan 10 15:06:54 PST 2016"
"""What gVisor's Sentry writes in /proc/version (a fixed fake kernel), whatever the host runs."""
