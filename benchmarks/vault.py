"""Vault benchmark: HTTPS requests through the vault vs a bare `mitmdump` vs direct, in one run.

All subjects talk to the same loopback HTTPS upstream (a minimal asyncio keep-alive server in
its own process, certificate from a throw-away CA):

- direct: the client connects to the upstream itself (TLS to the upstream).
- mitmdump: the same mitmproxy, no addon (`connection_strategy=lazy`, trusting the
  upstream CA, flow output off), client through its TCP port with CONNECT.
- vault: `python -m proxy` (VaultProcess) with a secret whose rule injects a header for
  the upstream, leak scanning and the audit log on; client through the group's unix
  socket (the path containers use: relay → mitmproxy).
- vault_metering: the same vault, `POST /v1/messages` answered with a recorded-shape Anthropic
  SSE stream carrying usage (chunked, keep-alive): metered as it is relayed, each call spooled
  (fsync) and reported to a gateway control socket that acknowledges (this process), next to
  - vault_stream: the same request and stream on a path that is not a model endpoint (not
    metered), so `vault_metering_vs_stream_rps` isolates what metering costs.
- vault_metering_json / vault_json: the same pair with a non-streamed call (`"stream": false`,
  a small JSON Messages body with usage, `Content-Length`). `vault_metering_json_vs_json_rps`
  is what metering costs a non-streamed call; `vault_metering_json_vs_vault_rps` and
  `vault_metering_vs_vault_rps` set model calls next to `vault_rps`'s 3-byte GET, so they also
  contain what a POST with a body and a larger answer (or an SSE stream) cost mitmproxy with
  metering off (`vault_json_rps`, `vault_stream_rps`).

Throughput: a fixed number of requests at the same client concurrency over keep-alive
connections (httpcore, HTTP/1.1), in ROUNDS rounds; every round runs each subject once, in
the same order (vault, mitmdump, direct, vault_stream, vault_metering, vault_json,
vault_metering_json, then vault again in the next round, ...), so a machine that is busy for a
while slows every subject alike. The reported figure is each subject's median round; the
per-round figures are reported too (`*_rps_rounds`), so drift within the run can be seen.
Latency: a sequential pass, one request in flight, alternating between the modes;
`vault_added_*` = vault minus direct at the same percentile.

Run alone: `python -m benchmarks.vault` (prints JSON).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpcore  # noqa: E402

from tests.fakes.tls import make_ca_and_server_cert  # noqa: E402

REQUESTS = int(os.environ.get("BENCH_VAULT_REQUESTS", "2000"))
CONCURRENCY = int(os.environ.get("BENCH_VAULT_CONCURRENCY", "8"))
LATENCY_SAMPLES = int(os.environ.get("BENCH_VAULT_LATENCY_SAMPLES", "300"))
ROUNDS = int(os.environ.get("BENCH_VAULT_ROUNDS", "7"))
TOKEN = "bench-REAL-token-0123456789"
MODEL_BODY = json.dumps(
    {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
).encode()
MODEL_BODY_JSON = MODEL_BODY.replace(b'"stream": true', b'"stream": false')
JSON_SHAPE = "shape=json"  # the upstream answers JSON instead of a stream (the query is not part of the path)


# -- the upstream (runs in its own process: `python -m benchmarks.vault --upstream CERT KEY`) --

_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n"


def _stream_response() -> bytes:
    """A recorded-shape Messages stream (with usage), chunked in three pieces as a server flushes."""
    from tests.fakes.model_payloads import Tokens, anthropic_sse

    body = anthropic_sse(Tokens(input=1200, output=300, cache_read=20_000, cache_write=800))
    third = len(body) // 3
    pieces = [body[:third], body[third : 2 * third], body[2 * third :]]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    return head + chunks


def _json_response() -> bytes:
    """A recorded-shape non-streamed Messages answer (with usage)."""
    from tests.fakes.model_payloads import Tokens, anthropic_json

    body = anthropic_json(Tokens(input=1200, output=300, cache_read=20_000, cache_write=800))
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (
        len(body),
        body,
    )


async def _serve_upstream(cert: str, key: str) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    stream, answer = _stream_response(), _json_response()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if not head.startswith(b"POST"):
                    writer.write(_RESPONSE)
                else:
                    writer.write(answer if JSON_SHAPE.encode() in head.split(b"\r\n", 1)[0] else stream)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ctx, backlog=512)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()


# -- the client ---------------------------------------------------------------------------------


async def _one(pool: httpcore.AsyncConnectionPool, url: str) -> float:
    start = time.perf_counter()
    if "/v1/" in url:  # a model call (metered on /v1/messages), streamed or JSON
        headers = {"Authorization": "Bearer placeholder", "Content-Type": "application/json"}
        as_json = JSON_SHAPE in url
        resp = await pool.request(
            "POST", url, headers=headers, content=MODEL_BODY_JSON if as_json else MODEL_BODY
        )
        if (b'"usage"' if as_json else b"message_stop") not in resp.content:
            raise RuntimeError(f"{url}: the answer did not arrive whole: {resp.content[-300:]!r}")
    else:
        resp = await pool.request("GET", url, headers={"Authorization": "Bearer placeholder"})
    if resp.status != 200:
        raise RuntimeError(f"{url}: HTTP {resp.status}: {resp.content[:300]!r}")
    return time.perf_counter() - start


class _AckingGateway:
    """The gateway's control socket, as far as usage reports go: count the records, acknowledge."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records = 0
        self.ids: set[str] = set()
        self.server: asyncio.AbstractServer | None = None
        self._want = 0
        self._reached = asyncio.Event()

    async def reached(self, count: int) -> None:
        """Until `count` distinct records have arrived (the last ones leave the spool shortly)."""
        self._want = count
        if len(self.ids) >= count:
            return
        self._reached.clear()
        await self._reached.wait()

    async def start(self) -> None:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, ValueError):
                request = json.loads(await reader.readline())
                records = request.get("records") or []
                self.ids.update(r["id"] for r in records)
                self.records += len(records)
                if self._want and len(self.ids) >= self._want:
                    self._reached.set()
                writer.write(json.dumps({"ok": True, "stored": len(records)}).encode() + b"\n")
                await writer.drain()
            writer.close()

        self.server = await asyncio.start_unix_server(serve, path=str(self.path), limit=1 << 20)


async def _warm(pool: httpcore.AsyncConnectionPool, url: str) -> None:
    """Open CONCURRENCY keep-alive connections (TLS, certificate generation) before measuring."""
    for _ in range(CONCURRENCY * 2):
        await _one(pool, url)
    await asyncio.gather(*(_one(pool, url) for _ in range(CONCURRENCY)))


async def _throughput(pool: httpcore.AsyncConnectionPool, url: str, count: int) -> float:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(pool, url)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return count / (time.perf_counter() - start)


class _UnixBackend(httpcore.AsyncNetworkBackend):
    """Every "TCP" connection goes to the group's unix socket (httpcore's proxy ignores `uds`)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
        return await self._inner.connect_unix_socket(self._path, timeout=timeout)

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):  # type: ignore[no-untyped-def]  # noqa: ASYNC109
        return await self._inner.connect_unix_socket(path, timeout=timeout)

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _wait_for_file(path: Path, proc: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(path.exists):
        if proc.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mitmdump did not start (exit {proc.returncode})")
        await asyncio.sleep(0.05)


_LISTENING = re.compile(rb"proxy listening at 127\.0\.0\.1:(\d+)")


async def _listening_port(proc: asyncio.subprocess.Process) -> int:
    """mitmdump's own port, as it reports it: it binds port 0, so nothing can take it first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
        if not line:
            break
        if m := _LISTENING.search(line):
            return int(m.group(1))
    raise RuntimeError(f"mitmdump did not report its port (exit {proc.returncode})")


async def run() -> dict[str, object]:
    from proxy.process import VaultProcess
    from proxy.secrets import SecretStore

    tmp = Path(tempfile.mkdtemp(prefix="cgv"))
    procs: list[asyncio.subprocess.Process] = []
    drains: list[asyncio.Task[bytes]] = []
    vault: VaultProcess | None = None
    gateway: _AckingGateway | None = None
    try:
        ca, cert, key = make_ca_and_server_cert(tmp)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        upstream = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.vault", "--upstream", str(cert), str(key),
            stdout=asyncio.subprocess.PIPE, cwd=str(ROOT), env=env,
        )  # fmt: skip
        procs.append(upstream)
        assert upstream.stdout is not None
        port = int(await asyncio.wait_for(upstream.stdout.readline(), 30))
        url = f"https://127.0.0.1:{port}/bench?x=1"
        upstream_ctx = ssl.create_default_context(cafile=str(ca))

        # bare mitmdump: no addon, same mitmproxy, same connection strategy
        mdir = tmp / "mitmdump"
        mdir.mkdir()
        mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or "mitmdump"
        mproc = await asyncio.create_subprocess_exec(
            mitmdump, "--listen-host", "127.0.0.1", "-p", "0",
            "--set", f"confdir={mdir}", "--set", "connection_strategy=lazy",
            "--set", f"ssl_verify_upstream_trusted_ca={ca}", "--set", "flow_detail=0",
            "--set", "termlog_verbosity=info",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        procs.append(mproc)
        mport = await _listening_port(mproc)
        await _wait_for_file(mdir / "mitmproxy-ca-cert.pem", mproc)
        assert mproc.stdout is not None  # keep draining its (quiet) log so it never blocks
        drains.append(asyncio.create_task(mproc.stdout.read()))

        # the vault: a secret with an injection rule for the upstream, leak scan + audit on
        cfg, state = tmp / "cfg", tmp / "state"
        cfg.mkdir(mode=0o700)
        SecretStore(cfg).add("bench", TOKEN, f"127.0.0.1:{port}", "Authorization", "Bearer {value}")
        gateway = _AckingGateway(tmp / "gw.sock")
        await gateway.start()
        vault = VaultProcess(cfg, state, [f"127.0.0.1:{port}"], upstream_ca=ca, gateway_socket=gateway.path)
        await vault.start(timeout=30)
        sock = tmp / "grp" / "vault.sock"
        sock.parent.mkdir()
        await vault.open_group("main", sock)

        def via_vault() -> httpcore.AsyncHTTPProxy:
            return httpcore.AsyncHTTPProxy(
                "http://vault.invalid/",
                network_backend=_UnixBackend(str(sock)),
                ssl_context=ssl.create_default_context(cafile=str(vault_ca)),
                max_connections=CONCURRENCY,
            )

        vault_ca = vault.ca_cert_path
        pools = {
            "vault": via_vault(),
            "mitmdump": httpcore.AsyncHTTPProxy(
                f"http://127.0.0.1:{mport}/",
                ssl_context=ssl.create_default_context(cafile=str(mdir / "mitmproxy-ca-cert.pem")),
                max_connections=CONCURRENCY,
            ),
            "direct": httpcore.AsyncConnectionPool(ssl_context=upstream_ctx, max_connections=CONCURRENCY),
            "vault_stream": via_vault(),
            "vault_metering": via_vault(),
            "vault_json": via_vault(),
            "vault_metering_json": via_vault(),
        }
        urls = {name: url for name in pools}
        urls["vault_stream"] = f"https://127.0.0.1:{port}/v1/not-a-model"
        urls["vault_metering"] = f"https://127.0.0.1:{port}/v1/messages"
        urls["vault_json"] = f"https://127.0.0.1:{port}/v1/not-a-model?{JSON_SHAPE}"
        urls["vault_metering_json"] = f"https://127.0.0.1:{port}/v1/messages?{JSON_SHAPE}"
        # Rounds in a fixed order (vault, mitmdump, direct, vault_stream, vault_metering, vault,
        # ...): background load hits every subject alike; throughput is each one's median round.
        rps: dict[str, list[float]] = {name: [] for name in pools}
        lat: dict[str, list[float]] = {name: [] for name in ("vault", "mitmdump", "direct")}
        for name, pool in pools.items():
            await _warm(pool, urls[name])
        for _ in range(ROUNDS):
            for name, pool in pools.items():
                rps[name].append(await _throughput(pool, urls[name], REQUESTS // ROUNDS))
        for _ in range(LATENCY_SAMPLES):
            for name in lat:
                lat[name].append(await _one(pools[name], urls[name]))
        for pool in pools.values():
            await pool.aclose()
        metered_calls = 2 * (CONCURRENCY * 3 + ROUNDS * (REQUESTS // ROUNDS))  # 2 subjects: warm-up + rounds
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gateway.reached(metered_calls), 30)
        results = {name: (statistics.median(rps[name]), lat.get(name, [])) for name in pools}
        audit_lines = await asyncio.to_thread(_count_lines, state / "audit.jsonl")
    finally:
        if vault is not None:
            await vault.stop()
        if gateway is not None and gateway.server is not None:
            gateway.server.close()
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
        for task in drains:
            task.cancel()
        shutil.rmtree(tmp, ignore_errors=True)

    def p(name: str, q: float) -> float:
        return _pct(results[name][1], q)

    def added(name: str, q: float) -> float:
        return round((p(name, q) - p("direct", q)) * 1000, 3)

    def ratio(a: str, b: str) -> float:
        return round(results[a][0] / results[b][0], 3)

    return {
        "vault_rps": round(results["vault"][0], 1),
        "mitmdump_rps": round(results["mitmdump"][0], 1),
        "direct_rps": round(results["direct"][0], 1),
        "vault_vs_mitmdump_rps": round(results["vault"][0] / results["mitmdump"][0], 3),
        "vault_added_p50_ms": added("vault", 0.5),
        "vault_added_p99_ms": added("vault", 0.99),
        "mitmdump_added_p50_ms": added("mitmdump", 0.5),
        "mitmdump_added_p99_ms": added("mitmdump", 0.99),
        "vault_metering_rps": round(results["vault_metering"][0], 1),
        "vault_stream_rps": round(results["vault_stream"][0], 1),
        "vault_metering_vs_vault_rps": round(results["vault_metering"][0] / results["vault"][0], 3),
        "vault_metering_vs_stream_rps": round(results["vault_metering"][0] / results["vault_stream"][0], 3),
        "vault_metering_json_rps": round(results["vault_metering_json"][0], 1),
        "vault_json_rps": round(results["vault_json"][0], 1),
        "vault_metering_json_vs_vault_rps": ratio("vault_metering_json", "vault"),
        "vault_metering_json_vs_json_rps": round(
            results["vault_metering_json"][0] / results["vault_json"][0], 3
        ),
        "vault_metering_records": len(gateway.ids),
        "vault_metering_calls": metered_calls,
        **{f"{name}_rps_rounds": [round(v, 1) for v in rps[name]] for name in pools},
        "vault_requests": REQUESTS,
        "vault_rounds": ROUNDS,
        "vault_concurrency": CONCURRENCY,
        "vault_audit_lines": audit_lines,
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--upstream":
        asyncio.run(_serve_upstream(sys.argv[2], sys.argv[3]))
    else:
        print(json.dumps(asyncio.run(run())))
