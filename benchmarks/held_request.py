"""held_request_forward_ms: the owner's Approve click → the held request arriving at the upstream.

Everything that happens after a click is on this path: the approval is decided in SQLite
(`Approvals.on_button`), the prompt is edited, `gateway/http_approvals.py` wakes and answers the
vault on the control socket connection it kept open, the vault (`python -m proxy`, a real
process) adds the credential and forwards the request to the upstream. Real parts: the vault
process, `gateway.control.ControlServer`, `Approvals`, `Store` (SQLite file), the secret store.
Fakes: the channel (in-process capture, as in benchmarks/wallet_approve.py) and the upstream
(real HTTP on loopback, which stamps each request with `time.perf_counter()` the moment its
head has been read).

The baseline, measured in the same run through the same vault, is the same request to a path
no approval rule names: from writing it into the group's vault.sock to its arrival at the
upstream — what forwarding costs without a hold. No Docker needed. Prints one JSON object when
run as a script.
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.blocking import run_blocking  # noqa: E402
from channels.base import ButtonPress  # noqa: E402
from core.config import Config  # noqa: E402
from core.models import Group  # noqa: E402
from gateway.approvals import Approvals  # noqa: E402
from gateway.control import ControlServer  # noqa: E402
from gateway.http_approvals import ask_owner  # noqa: E402
from gateway.registry import GroupRegistry  # noqa: E402
from gateway.store import Store  # noqa: E402
from proxy.policy import write_policy_config  # noqa: E402
from proxy.process import VaultProcess  # noqa: E402
from proxy.rules import make_rule  # noqa: E402
from proxy.secrets import SecretStore  # noqa: E402
from tests.fakes.channel import CaptureChannel  # noqa: E402

MAIN, TEAM, ADMIN = "tg:-1", "tg:-2", "tg:1"
SECRET = "bench-held-request-credential-0001"
WARMUP = 2  # first rounds pay for connection set-up and cold caches; not counted


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (the same rule as benchmarks/run.py)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class StampingUpstream:
    """Loopback HTTP server: (path, credential header, perf_counter at arrival) per request."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[str, str, float]] = []
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server API
                arrivals.append((self.path, self.headers.get("x-token", ""), time.perf_counter()))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def _send(sock: Path, port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    reader, writer = await asyncio.open_unix_connection(str(sock))
    body = b'{"amount": 5}'
    sent = time.perf_counter()
    writer.write(
        f"POST http://127.0.0.1:{port}{path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nx-token: placeholder\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    return reader, writer, sent


async def _finish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    status = await asyncio.wait_for(reader.readline(), 30)
    writer.close()
    if not status.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"request not forwarded: {status!r}")


async def run_async(samples: int = 20) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="clawgate-bench-held-") as tmp:
        base = Path(tmp)
        up = StampingUpstream()
        hp = f"127.0.0.1:{up.port}"
        (base / "cfg").mkdir(mode=0o700)
        config = Config.model_validate(
            {
                "vault": {
                    "allow_private_upstreams": [hp],
                    "egress": {"team": ["*"]},
                    "approval": {"timeout_s": 60, "allow_for_minutes": 0, "max_prompts_per_minute": 600},
                }
            }
        )
        write_policy_config(config, base / "state")
        SecretStore(base / "cfg").add(
            "tok",
            SECRET,
            rules=[make_rule(hp, "/*", [], "set_header", "x-token", "{value}", approve=True)],
            groups=["team"],
        )
        # The held path needs approval; the baseline path is covered by the same secret but a
        # more specific rule without `approve`, so both carry the credential.
        SecretStore(base / "cfg").add(
            "tok-plain",
            SECRET,
            rules=[make_rule(hp, "/plain/*", [], "set_header", "x-token", "{value}")],
            groups=["team"],
        )
        store = await Store.open(base / "clawgate.db")
        registry = GroupRegistry(store)
        await registry.load()
        await registry.register(Group("main", MAIN, "main", "@Andy", False, True))
        await registry.register(Group("team", TEAM, "team", "@Andy"))
        channel = CaptureChannel(prefix="tg:")
        approvals = Approvals(store, registry, [channel], [ADMIN])
        await channel.connect(lambda m: asyncio.sleep(0), approvals.on_button)
        await approvals.start()
        gw = SimpleNamespace(config=config, registry=registry, approvals=approvals, store=store)

        async def handler(request: dict[str, object]) -> dict[str, object]:
            if request.get("op") == "http_approval":
                return await ask_owner(gw, request)  # type: ignore[arg-type]  # the parts it reads
            return {"ok": True}

        control = ControlServer(base / "gw.sock", handler)
        await control.start()
        gw_sock = base / "gw.sock"
        vault = VaultProcess(base / "cfg", base / "state", allow_private=[hp], gateway_socket=gw_sock)
        await vault.start(timeout=30)
        sock = base / "team.sock"
        await vault.open_group("team", sock)
        held: list[float] = []
        direct: list[float] = []
        try:
            for i in range(samples + WARMUP):
                # the held request: click → arrival
                prompts, arrived = len(channel.prompts), len(up.arrivals)
                reader, writer, _ = await _send(sock, up.port, f"/pay/{i}")
                await channel.wait_until(lambda n=prompts: len(channel.prompts) > n, 30)  # type: ignore[misc]
                _, prompt = channel.prompts[prompts]
                start = time.perf_counter()
                toast = await approvals.on_button(ButtonPress(prompt.id, "approve", ADMIN, "admin", MAIN))
                await _finish(reader, writer)
                if not toast.startswith("Approved:") or len(up.arrivals) != arrived + 1:
                    raise RuntimeError(f"the held request was not forwarded once: {toast!r}")
                path, token, at = up.arrivals[arrived]
                if path != f"/pay/{i}" or token != SECRET:
                    raise RuntimeError(f"the upstream got something else: {path} {token == SECRET}")
                # the baseline: the same request, no hold
                reader, writer, sent = await _send(sock, up.port, f"/plain/{i}")
                await _finish(reader, writer)
                _, token, plain_at = up.arrivals[arrived + 1]
                if token != SECRET:
                    raise RuntimeError("the baseline request went without its credential")
                if i >= WARMUP:
                    held.append(at - start)
                    direct.append(plain_at - sent)
        finally:
            await vault.stop()
            await control.close()
            await approvals.stop()
            await store.close()
            up.close()
    return {
        "held_request_forward_ms": round(pct(held, 0.5) * 1000, 3),
        "held_request_forward_p99_ms": round(pct(held, 0.99) * 1000, 3),
        "held_request_forward_baseline_ms": round(pct(direct, 0.5) * 1000, 3),
    }


def run(samples: int = 20) -> dict[str, float]:
    return run_blocking(lambda: run_async(samples))


if __name__ == "__main__":
    print(json.dumps(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20)))
