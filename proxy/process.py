"""Gateway-side handle on the vault process: spawn, talk to, supervise, stop.

The vault holds decrypted secrets, so it runs as a separate process the gateway drives
over a private control socket. If it dies, group sockets simply stop answering (fail
closed: sandboxes lose egress, they never get a weaker path); a supervisor restarts it
with backoff and re-opens every group socket at the same path, so the bind-mounted
per-group directories inside running containers keep working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from core.paths import ensure_private_dir, socket_path_problem

log = logging.getLogger("clawgate.vault.process")

LOG_FILE = "vault.log"
CONTROL_SOCKET = "vault-control.sock"
PID_FILE = "vault.pid"  # lets the next start find a vault an earlier, killed gateway left behind
STOP_GRACE = 5.0
BACKOFF_INITIAL = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0


class VaultUnavailable(Exception):
    """The vault process is not running or does not answer (callers must fail closed)."""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    return "\n".join(data.splitlines()[-lines:])


def _write_pid_file(path: Path, pid: int) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{pid}\n")
    os.replace(tmp, path)


def _is_our_vault(pid: int, state_dir: Path) -> bool:
    """True when `pid` runs `-m proxy` for this very state dir (PIDs get reused)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    want = str(state_dir).encode()
    return b"proxy" in argv and any(
        a == b"--state-dir" and i + 1 < len(argv) and argv[i + 1] == want for i, a in enumerate(argv)
    )


def reap_stale_vault(state_dir: Path, wait_s: float = 5.0) -> int | None:
    """Kill a vault an earlier gateway of this data dir left running; return its PID.

    The lifeline pipe makes a vault stop when its gateway dies, but a vault that was
    stopped (SIGSTOP), wedged or started by an older version may not; it would hold the
    secrets in memory and the group socket paths. The caller holds the data-dir lock,
    so whatever vault the PID file names cannot belong to a live gateway.
    """
    import time

    path = Path(state_dir) / PID_FILE
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or int(text) in (0, os.getpid()):
        return None
    pid = int(text)
    if not _is_our_vault(pid, Path(state_dir)):
        path.unlink(missing_ok=True)
        return None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while _is_our_vault(pid, Path(state_dir)) and time.monotonic() < deadline:
        time.sleep(0.02)  # a zombie's cmdline is empty, so this ends once it has died
    path.unlink(missing_ok=True)
    log.warning("vault: killed pid %d left running by an earlier gateway of this data dir", pid)
    return pid


# The project root must be importable by the child even when clawgate is not pip-installed.
_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


def _open_log(path: Path) -> BinaryIO:
    """Append-mode log handed to the child as stdout/stderr (the caller closes our copy)."""
    return open(path, "ab")  # noqa: SIM115


class VaultProcess:
    """Supervised `python -m proxy` subprocess."""

    def __init__(
        self,
        config_dir: Path,
        state_dir: Path,
        allow_private: list[str],
        python: str = sys.executable,
        upstream_ca: Path | None = None,
        gateway_socket: Path | None = None,
    ) -> None:
        self.config_dir = Path(config_dir)
        self.state_dir = Path(state_dir)
        self.allow_private = list(allow_private)
        self.python = python
        self.upstream_ca = upstream_ca  # replaces the system trust store for upstream TLS
        self.gateway_socket = gateway_socket  # the vault reports blocked leaks there (proxy/leaks.py)
        self.control_socket = self.state_dir / CONTROL_SOCKET
        self.log_path = self.state_dir / LOG_FILE
        self.ca_cert_path = self.state_dir / "ca" / "mitmproxy-ca-cert.pem"
        self.listen_port: int | None = None
        self.restarts = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._groups: dict[str, str] = {}  # group -> socket path, re-opened after a restart
        self._supervisor: asyncio.Task[None] | None = None
        self._stopping = False
        self._lock = asyncio.Lock()  # serializes control requests and (re)starts
        self.ready = asyncio.Event()  # set while the vault answers; cleared while it is down
        self._lifeline: int | None = None  # write end of the vault's parent-death pipe
        # The last `budgets` state (proxy/budget.py): replayed to a restarted vault before it
        # serves any group, so a crash never opens a window without limits.
        self._budgets: dict[str, Any] | None = None
        self.on_restart: Callable[[], None] | None = None  # the gateway then pushes fresh state

    def _close_lifeline(self) -> None:
        if self._lifeline is not None:
            with contextlib.suppress(OSError):
                os.close(self._lifeline)
            self._lifeline = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    # -- lifecycle --

    async def start(self, timeout: float = 30) -> None:  # noqa: ASYNC109 - public API per design
        """Spawn the vault and wait until it answers `ping`; raise VaultUnavailable otherwise."""
        self._stopping = False
        async with self._lock:
            await self._spawn(timeout)
        if self._supervisor is None or self._supervisor.done():
            self._supervisor = asyncio.create_task(self._supervise(timeout), name="vault-supervisor")

    async def _spawn(self, startup_s: float) -> None:
        problem = socket_path_problem(self.control_socket)
        if problem is not None:  # else the vault dies at start with an OSError traceback
            raise VaultUnavailable(f"cannot start the vault: {problem}; use a shorter data dir")
        ensure_private_dir(self.state_dir)
        self.ready.clear()
        self.listen_port = None  # the vault binds port 0; its first ping says which port it got
        cmd = [
            self.python,
            "-m",
            "proxy",
            "--config-dir",
            str(self.config_dir),
            "--state-dir",
            str(self.state_dir),
            "--control-socket",
            str(self.control_socket),
            "--log-file",
            str(self.log_path),
        ]
        # The vault watches the read end of this pipe and stops at EOF: the kernel closes our
        # write end however the gateway dies (kill -9 included), so no vault outlives it.
        lifeline_r, lifeline_w = os.pipe()
        cmd += ["--parent-fd", str(lifeline_r)]
        for a in self.allow_private:
            cmd += ["--allow-private", a]
        if self.upstream_ca is not None:
            cmd += ["--upstream-ca", str(self.upstream_ca)]
        if self.gateway_socket is not None:
            cmd += ["--gateway-socket", str(self.gateway_socket)]
        root = _PROJECT_ROOT
        env = dict(os.environ)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        await asyncio.to_thread(reap_stale_vault, self.state_dir)
        with contextlib.suppress(FileNotFoundError):
            self.control_socket.unlink()  # so a stale socket can't fake readiness
        logf = _open_log(self.log_path)
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=logf,
                stderr=logf,
                env=env,
                cwd=root,
                pass_fds=(lifeline_r,),
                start_new_session=True,  # a ^C to the gateway must not kill the vault mid-stop
            )
        except OSError as e:
            os.close(lifeline_w)
            raise VaultUnavailable(f"cannot start the vault ({self.python}): {e}") from None
        finally:
            logf.close()
            os.close(lifeline_r)
        self._close_lifeline()
        self._lifeline = lifeline_w
        self._proc = proc
        _write_pid_file(self.state_dir / PID_FILE, proc.pid)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + startup_s
        while True:
            if proc.returncode is not None:
                raise VaultUnavailable(
                    f"vault exited with code {proc.returncode} during startup;"
                    f" log tail:\n{_tail(self.log_path)}"
                )
            with contextlib.suppress(VaultUnavailable, OSError):
                reply = await self._request_raw({"op": "ping"}, wait_s=2)
                if reply.get("ok"):
                    port = reply.get("port")
                    self.listen_port = port if isinstance(port, int) else None
                    break
            if loop.time() > deadline:
                await self._kill(proc)
                raise VaultUnavailable(
                    f"vault did not answer within {startup_s}s; log tail:\n{_tail(self.log_path)}"
                )
            await asyncio.sleep(0.05)
        if self._budgets is not None:
            reply = await self._request_raw({"op": "budgets", **self._budgets})
            if not reply.get("ok"):
                log.error("vault: could not restore budgets: %s", reply.get("error"))
        for group, path in list(self._groups.items()):
            reply = await self._request_raw({"op": "open_group", "group": group, "socket": path})
            if not reply.get("ok"):
                log.error("vault: could not re-open group %s: %s", group, reply.get("error"))
        self.ready.set()
        log.info("vault: running (pid %s, port %s)", proc.pid, self.listen_port)

    async def _supervise(self, startup_s: float) -> None:
        backoff = BACKOFF_INITIAL
        loop = asyncio.get_running_loop()
        while not self._stopping:
            proc = self._proc
            if proc is None:
                return
            started = loop.time()
            code = await proc.wait()
            if self._stopping:
                return
            self.ready.clear()
            if loop.time() - started > STABLE_AFTER:
                backoff = BACKOFF_INITIAL  # it ran fine for a while: not a crash loop
            log.error("vault exited unexpectedly (code %s); restarting in %.1fs", code, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
            if self._stopping:
                return
            try:
                async with self._lock:
                    if self._stopping:
                        return
                    await self._spawn(startup_s)
                self.restarts += 1
                if self.on_restart is not None:
                    self.on_restart()
            except VaultUnavailable as e:
                log.error("vault restart failed: %s", e)
                if self._proc is not None and self._proc.returncode is None:
                    await self._kill(self._proc)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after a grace period; group sockets stop answering."""
        self._stopping = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        self.ready.clear()
        if self._proc is not None:
            await self._kill(self._proc)
        self._close_lifeline()
        with contextlib.suppress(OSError):
            (self.state_dir / PID_FILE).unlink()

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        if proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    # -- control requests --

    async def _request_raw(self, req: dict[str, Any], wait_s: float = 10) -> dict[str, Any]:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(self.control_socket)), wait_s
            )
        except (OSError, TimeoutError) as e:
            raise VaultUnavailable(f"vault control socket unavailable: {e}") from None
        try:
            writer.write(json.dumps(req).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), wait_s)
        except (OSError, TimeoutError) as e:
            raise VaultUnavailable(f"vault control request failed: {e}") from None
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line:
            raise VaultUnavailable("vault closed the control connection")
        try:
            reply = json.loads(line)
        except ValueError:
            raise VaultUnavailable("vault sent a malformed reply") from None
        if not isinstance(reply, dict):
            raise VaultUnavailable("vault sent a malformed reply")
        return reply

    async def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:
            reply = await self._request_raw(req)
        if not reply.get("ok"):
            raise VaultUnavailable(f"vault refused {req.get('op')}: {reply.get('error')}")
        return reply

    async def open_group(self, group: str, socket_path: Path | str) -> None:
        """Create the group's vault.sock; it is re-created automatically after a restart."""
        path = str(socket_path)
        await self._request({"op": "open_group", "group": group, "socket": path})
        self._groups[group] = path

    async def close_group(self, group: str) -> None:
        self._groups.pop(group, None)
        await self._request({"op": "close_group", "group": group})

    async def reload_secrets(self) -> int:
        """Re-read secrets.json; returns how many secrets the vault now injects."""
        return int((await self._request({"op": "reload_secrets"})).get("secrets", 0))

    async def set_budgets(self, state: dict[str, Any]) -> None:
        """The gateway's budget state (gateway/budget_state.py); kept for replay after a restart."""
        previous, self._budgets = self._budgets, state  # kept even if the vault is down right now
        async with self._lock:
            reply = await self._request_raw({"op": "budgets", **state})
        if not reply.get("ok"):  # refused as malformed: the vault keeps the previous state, so do we
            self._budgets = previous
            raise VaultUnavailable(f"vault refused budgets: {reply.get('error')}")

    async def healthy(self) -> bool:
        if self._proc is None or self._proc.returncode is not None:
            return False
        try:
            reply = await self._request_raw({"op": "ping"}, wait_s=2)
        except VaultUnavailable:
            return False
        return bool(reply.get("ok"))

    async def stats(self) -> dict[str, Any]:
        """The vault's request counters (proxy/stats.py); raises VaultUnavailable while it is down.

        Not under `_lock`: a scrape must not wait behind a restart, it reports the vault down.
        """
        if not self.ready.is_set():
            raise VaultUnavailable("the vault is not running")
        reply = await self._request_raw({"op": "stats"}, wait_s=2)
        if not reply.get("ok"):
            raise VaultUnavailable(f"vault refused stats: {reply.get('error')}")
        return reply
