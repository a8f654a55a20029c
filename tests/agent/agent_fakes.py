"""Real loopback servers standing in for the model API, the gateway IPC and the vault."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Response = tuple[int, dict[str, Any] | str, dict[str, str]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def anthropic_text(text: str) -> Response:
    return (
        200,
        {
            "type": "message",
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
        },
        {},
    )


def anthropic_tool(tool_id: str, name: str, args: dict[str, Any], text: str = "") -> Response:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
    content.append({"type": "tool_use", "id": tool_id, "name": name, "input": args})
    return 200, {"type": "message", "role": "assistant", "content": content, "stop_reason": "tool_use"}, {}


def openai_text(text: str) -> Response:
    msg = {"role": "assistant", "content": text}
    return 200, {"choices": [{"index": 0, "message": msg, "finish_reason": "stop"}]}, {}


def openai_tool(call_id: str, name: str, args: dict[str, Any] | str) -> Response:
    arguments = args if isinstance(args, str) else json.dumps(args)
    msg = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        ],
    }
    return 200, {"choices": [{"index": 0, "message": msg, "finish_reason": "tool_calls"}]}, {}


class FakeModelServer:
    """Scripted HTTP server; records every request. Handles absolute-form (proxied) paths."""

    def __init__(self, script: list[Response | Callable[[dict[str, Any]], Response]]) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("content-length", "0"))
                raw = self.rfile.read(length)
                record = {
                    "raw_path": self.path,
                    "path": urlsplit(self.path).path,  # proxied requests use absolute URIs
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": json.loads(raw),
                }
                server.requests.append(record)
                step = server.script.pop(0) if server.script else (500, {"error": "script exhausted"}, {})
                status, body, headers = step(record) if callable(step) else step
                data = (body if isinstance(body, str) else json.dumps(body)).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeVault:
    """Unix socket that pipes bytes to a TCP port: the vault reduced to a dumb byte pipe."""

    def __init__(self, path: str, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.sock.close()


class FakeIPCServer:
    """The gateway end of ipc.sock: hands out ``jobs`` one per next_messages, then hangs up."""

    def __init__(self, path: str, jobs: list[tuple[int, str]]) -> None:
        self.jobs = list(jobs)
        self.calls: list[dict[str, Any]] = []
        self.done = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(1)
        threading.Thread(target=self._serve, daemon=True).start()

    def methods(self) -> list[str]:
        return [c["method"] for c in self.calls]

    def by_method(self, method: str) -> list[dict[str, Any]]:
        return [c["params"] for c in self.calls if c["method"] == method]

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        rfile = conn.makefile("rb")
        try:
            for raw in rfile:
                req = json.loads(raw)
                self.calls.append(req)
                method = req["method"]
                if method == "next_messages":
                    if not self.jobs:
                        break  # the gateway goes away: runtime must exit 0
                    run_id, prompt = self.jobs.pop(0)
                    result: dict[str, Any] = {"run_id": run_id, "prompt": prompt}
                elif method == "send_message":
                    result = {"ok": True}
                else:
                    result = {}
                conn.sendall((json.dumps({"id": req["id"], "result": result}) + "\n").encode())
        finally:
            rfile.close()
            conn.close()
            self.sock.close()
            self.done.set()
