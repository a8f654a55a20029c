"""Acceptance: real containers, the real vault (mitmproxy) and real TLS to loopback HTTPS servers.

A test CA (made here with `cryptography`) signs the upstream's certificate; the vault
trusts it through `[vault] upstream_ca`, the container trusts only the vault's CA. From
inside the container curl, `git ls-remote` (smart HTTP via `git http-backend`) and Python
urllib reach the upstream with the credential injected by the vault, and the credential
is nowhere in the container. Leaks (a secret value in a binary body or the URL) are
blocked with 403 before the upstream sees anything, and the main chat is told once.

Blocking docker calls run in threads: the gateway runs on this event loop.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docker
import pytest

from core.config import parse
from gateway.app import Gateway
from proxy.audit import read_entries
from proxy.secrets import SecretStore
from tests.fakes.channel import CaptureChannel
from tests.fakes.model_server import FakeModelServer
from tests.fakes.tls import make_ca_and_server_cert, serve_tls
from tests.integration.test_gateway_docker import REAL_KEY, containers

TOKEN = "gitsrv-REAL-token-6c1e0b9f"


class HttpsServer:
    """HTTPS on 127.0.0.1: `/repo.git/...` is `git http-backend` (smart HTTP), the rest echoes.

    Every request is recorded (method, path, headers, body size); anything without the
    expected credential gets 401, so a success proves the vault injected it.
    """

    def __init__(self, cert: Path, key: Path, git_root: Path) -> None:
        self.requests: list[dict[str, object]] = []
        rec = self.requests
        expected = f"Bearer {TOKEN}"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                rec.append(
                    {"method": self.command, "path": self.path, "body": len(body)}
                    | {k.lower(): v for k, v in self.headers.items()}
                )
                if self.headers.get("Authorization") != expected:
                    self._send(401, b"unauthorized\n", [("WWW-Authenticate", 'Bearer realm="t"')])
                elif self.path.startswith("/repo.git/"):
                    self._git(body)
                else:
                    self._send(200, b"hello over tls\n", [("Content-Type", "text/plain")])

            do_GET = do_POST = do_DELETE = _handle  # noqa: N815 - http.server API

            def _send(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _git(self, body: bytes) -> None:
                path, _, query = self.path.partition("?")
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(git_root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_ADDR": "127.0.0.1",
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                }
                out = subprocess.run(
                    ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
                ).stdout
                head, _, payload = out.partition(b"\r\n\r\n")
                status, headers = 200, []
                for line in head.decode("latin-1").split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self._send(status, payload, headers)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        serve_tls(self.server, cert, key)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[HttpsServer, Path]]:
    certs = tmp_path / "certs"
    certs.mkdir()
    ca, cert, key = make_ca_and_server_cert(certs)
    git_root = tmp_path / "git"
    subprocess.run(["git", "init", "-q", "--bare", str(git_root / "repo.git")], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("hi\n")
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run([*git, "add", "README"], check=True)
    subprocess.run([*git, "commit", "-qm", "init"], check=True)
    subprocess.run([*git, "push", "-q", str(git_root / "repo.git"), "main"], check=True)
    server = HttpsServer(cert, key, git_root)
    yield server, ca
    server.close()


@pytest.fixture
async def tls_gateway(  # type: ignore[no-untyped-def]
    dirs, model_server: FakeModelServer, sandbox_image: str, docker_client, https_server
) -> AsyncIterator[Gateway]:
    server, ca = https_server
    config_dir, data_dir = dirs
    store = SecretStore(config_dir)
    store.add("anthropic", REAL_KEY, model_server.host_port, "x-api-key", "{value}")
    store.add("gitsrv", TOKEN, f"127.0.0.1:{server.port}", "Authorization", "Bearer {value}")
    config = parse(
        f"""
[model]
base_url = "{model_server.url}"
name = "fake-model"
[sandbox]
image = "{sandbox_image}"
idle_timeout_s = 60
memory_mb = 256
[vault]
allow_private_upstreams = ["{model_server.host_port}", "127.0.0.1:{server.port}"]
upstream_ca = "{ca}"
""",
        Path("test.toml"),
    )
    channel = CaptureChannel()
    gw = Gateway(config, config_dir, data_dir)
    await gw.start([channel])
    gw.test_channel = channel  # type: ignore[attr-defined]
    await gw.ingest(channel.message("start the container"))
    await channel.wait_for(1)
    yield gw
    await gw.stop(grace_s=5)
    assert containers(docker_client, gw) == []


async def exec_in(container, cmd: list[str]) -> tuple[int, str]:  # type: ignore[no-untyped-def]
    result = await asyncio.to_thread(container.exec_run, cmd)
    return result.exit_code, result.output.decode("utf-8", "replace")


async def test_curl_git_and_urllib_through_the_vault_with_injected_credential(
    tls_gateway: Gateway, https_server, docker_client: docker.DockerClient
) -> None:
    server, _ = https_server
    base = f"https://127.0.0.1:{server.port}"
    [container] = containers(docker_client, tls_gateway, "main")

    code, out = await exec_in(
        container, ["curl", "-sS", "--fail", "-H", "Authorization: Bearer placeholder", f"{base}/hello?x=1"]
    )
    assert code == 0 and out == "hello over tls\n", out

    code, out = await exec_in(
        container,
        ["sh", "-c", f"GIT_TERMINAL_PROMPT=0 git ls-remote {base}/repo.git 2>&1"],
    )
    assert code == 0, out
    assert "refs/heads/main" in out

    script = f"""
import urllib.request
req = urllib.request.Request("{base}/py", data=b"payload", method="POST")
with urllib.request.urlopen(req, timeout=20) as r:
    print(r.status, r.read().decode().strip())
"""
    code, out = await exec_in(container, ["python3", "-c", script])
    assert code == 0 and out.strip().endswith("200 hello over tls"), out

    seen = {(r["method"], str(r["path"]).split("?")[0]) for r in server.requests}
    assert {("GET", "/hello"), ("GET", "/repo.git/info/refs"), ("POST", "/py")} <= seen
    assert all(r.get("authorization") == f"Bearer {TOKEN}" for r in server.requests)
    assert any(r["path"] == "/repo.git/info/refs?service=git-upload-pack" for r in server.requests)

    # The credential is nowhere the container can look.
    inspect = json.dumps(await asyncio.to_thread(docker_client.api.inspect_container, container.id))
    assert TOKEN not in inspect
    code, out = await exec_in(
        container,
        [
            "sh",
            "-c",
            "cat /proc/*/environ /proc/*/cmdline 2>/dev/null; env; "
            "grep -rsl 'gitsrv-REAL' / --exclude-dir=proc --exclude-dir=sys 2>/dev/null; true",
        ],
    )
    assert "gitsrv-REAL" not in out.replace("grep -rsl 'gitsrv-REAL'", "")

    # Audit: one line per request, no credential, no query values.
    await asyncio.sleep(1.2)
    entries = [e for e in read_entries(tls_gateway.data_dir / "vault") if e["port"] == server.port]
    assert {e["group"] for e in entries} == {"main"}
    assert any(e["path"] == "/hello?x=" and e["secret"] == "gitsrv" and e["status"] == 200 for e in entries)
    assert TOKEN not in (tls_gateway.data_dir / "vault" / "audit.jsonl").read_text()


async def test_leaks_in_binary_body_and_url_are_blocked_and_reported_once(
    tls_gateway: Gateway, https_server, docker_client: docker.DockerClient
) -> None:
    server, _ = https_server
    channel: CaptureChannel = tls_gateway.test_channel  # type: ignore[attr-defined]
    base = f"https://127.0.0.1:{server.port}"
    [container] = containers(docker_client, tls_gateway, "main")
    before = len(server.requests)
    script = f"""
import os, urllib.request, urllib.error
body = os.urandom(3000) + {TOKEN.encode()!r} + os.urandom(3000)
for _ in range(2):
    try:
        urllib.request.urlopen(urllib.request.Request("{base}/upload", data=body), timeout=20)
        print("status 200")
    except urllib.error.HTTPError as e:
        print("status", e.code, e.read().decode())
"""
    code, out = await exec_in(container, ["python3", "-c", script])
    assert out.count("status 403") == 2, out
    assert "stored secret gitsrv" in out and TOKEN not in out

    code, out = await exec_in(
        container, ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", f"{base}/q?d=x{TOKEN}"]
    )
    assert out == "403", out
    assert len(server.requests) == before  # the upstream never saw the leaked value

    await channel.wait_for(2)
    await asyncio.sleep(0.5)
    notices = [text for chat, text in channel.sent if "blocked a request" in text]
    assert notices == ["⚠️ blocked a request from group main: it contained stored secret gitsrv"]
    assert all(TOKEN not in text for _, text in channel.sent)
