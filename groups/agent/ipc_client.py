"""JSON-lines RPC client for the gateway's per-group unix socket.

One connection, strictly sequential request/response: the gateway identifies the group by
the socket itself, so the payload never carries identity. EOF or a broken pipe means the
gateway stopped us or went away, surfaced as IPCClosed so the main loop can exit cleanly.
"""

import contextlib
import json
import socket
import threading
import time


class IPCClosed(Exception):
    """The gateway closed the connection; the runtime should exit with status 0."""


class IPCError(Exception):
    """The gateway answered a request with an error object."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class IPCClient:
    """Blocking client; a lock keeps request/response pairs atomic if a thread ever shares it."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._rfile = sock.makefile("rb")
        self._next_id = 1
        self._lock = threading.Lock()

    @classmethod
    def connect(cls, path: str, timeout: float = 10.0) -> "IPCClient":
        """Connect, retrying briefly in case the gateway is still creating the socket."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)
            except OSError:
                sock.close()
                raise

    def call(self, method: str, params: dict | None = None) -> dict:
        """Send one request and block for its response; raise IPCError / IPCClosed."""
        with self._lock:
            req_id = self._next_id
            self._next_id += 1
            line = json.dumps({"id": req_id, "method": method, "params": params or {}}) + "\n"
            try:
                self._sock.sendall(line.encode("utf-8"))
            except OSError as exc:
                raise IPCClosed(f"send failed: {exc}") from None
            while True:
                try:
                    raw = self._rfile.readline()
                except OSError as exc:
                    raise IPCClosed(f"read failed: {exc}") from None
                if not raw:
                    raise IPCClosed("gateway closed the connection")
                try:
                    msg = json.loads(raw)
                except ValueError:
                    raise IPCError("protocol", "response is not JSON") from None
                if not isinstance(msg, dict) or msg.get("id") != req_id:
                    continue  # stale or unsolicited line; the protocol is strictly paired
                if "error" in msg and msg["error"] is not None:
                    err = msg["error"] if isinstance(msg["error"], dict) else {}
                    raise IPCError(str(err.get("code", "error")), str(err.get("message", "")))
                result = msg.get("result")
                return result if isinstance(result, dict) else {}

    def next_messages(self) -> tuple[int, str]:
        """Block until the gateway has work; return ``(run_id, prompt)``."""
        result = self.call("next_messages")
        run_id, prompt = result.get("run_id"), result.get("prompt")
        if not isinstance(run_id, int) or not isinstance(prompt, str):
            raise IPCError("protocol", "next_messages result lacks run_id/prompt")
        return run_id, prompt

    def received(self, run_id: int) -> None:
        self.call("received", {"run_id": run_id})

    def send_message(self, text: str) -> None:
        result = self.call("send_message", {"text": text})
        if result.get("ok") is False:
            raise IPCError("rejected", "gateway did not accept the message")

    def turn_done(self, run_id: int, text: str | None, error: str | None) -> None:
        self.call("turn_done", {"run_id": run_id, "text": text, "error": error})

    def log(self, level: str, message: str) -> None:
        self.call("log", {"level": level, "message": message})

    def close(self) -> None:
        for closer in (self._rfile.close, self._sock.close):
            with contextlib.suppress(OSError):
                closer()
