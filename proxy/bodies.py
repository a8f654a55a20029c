"""Request bodies: bounded in size, never buffered past `STREAM_ABOVE`, scanned while streaming.

A container can send a body of any size, and mitmproxy by default holds a whole body in
memory before the `request` hook sees it. A 4 GB upload grew the vault by 650 MB; a body
of unknown length (chunked) had no limit at all. So:

- mitmproxy's `stream_large_bodies` is `STREAM_ABOVE`: nothing larger is buffered.
- A request the vault lets through whose body is larger than `STREAM_ABOVE` or of unknown
  length is streamed through a `StreamGuard`: it counts bytes against `[vault]
  max_request_bytes` and runs the leak scanner over every chunk plus a bounded overlap
  with the previous ones, holding back that overlap so no part of a secret split across
  chunks is forwarded before the whole of it has been seen. On a violation nothing more is
  forwarded and the client's connection is cut, so the upstream never gets a complete request
  (the headers went first; that is what streaming means). Smaller bodies are buffered and
  scanned whole as before, and can still get a clean 403/413.
- A request the vault refuses (any addon set `flow.response` in `requestheaders`) while its
  body is still coming cannot be answered by mitmproxy until the body has been read — and a
  refused body larger than `STREAM_ABOVE` would have to be buffered, or would crash
  mitmproxy's stream state machine. Such a request is instead sent, with no headers of the
  client's and no body, to `EarlyResponder`, an in-process loopback server that answers at once
  with the refusal; the body is discarded as it arrives. So a declared 4 GB body gets its 413
  right after the headers.
- A request to be held for the owner's approval (proxy/holds.py; marked `HOLD` in
  `requestheaders`) is never streamed, whatever its headers say: streaming would send it
  upstream before the owner decided. The marking addon vouches that its body is whole or small.

Register `BodyGate` after every addon that may refuse in `requestheaders` (it acts on their
decision), and tell `VaultAddon` and `PinAddon` the responder's address (`internal`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable

from mitmproxy import http
from mitmproxy.net.http.http1 import expected_http_body_size

from proxy.leaks import LeakScanner

log = logging.getLogger("clawgate.vault.bodies")

STREAM_ABOVE = 1 << 20  # bodies above this (or of unknown length) are streamed, never buffered
MIN_OVERLAP = 4096  # covers every built-in credential format with room to spare
REFUSAL_HEADER = "x-clawgate-refusal"
HOLD = "clawgate.hold"  # flow metadata: this request waits for the owner in `request` (whole, never streamed)
_MAX_HELD = 1024  # refusals waiting for their redirected request; the oldest go first
_HEAD_LIMIT = 64 * 1024
_DRAIN_S = 30.0

Address = tuple[str, int]
Abort = Callable[[http.HTTPFlow], None]
Violation = Callable[[http.HTTPFlow, str, str], None]


def overlap_for(scanner: LeakScanner) -> int:
    """Bytes to carry between chunks so any secret (also URL-encoded, 3x) is seen whole."""
    return max(MIN_OVERLAP, 3 * scanner.longest_value + 16)


class StreamGuard:
    """A mitmproxy `request.stream` callable: size cap plus leak scan with a held-back overlap."""

    def __init__(
        self,
        flow: http.HTTPFlow,
        limit: int,
        scanner: LeakScanner,
        on_violation: Violation,
    ) -> None:
        self.flow = flow
        self.limit = limit
        self.scanner = scanner
        self.overlap = overlap_for(scanner)
        self.on_violation = on_violation
        self.seen = 0
        self.tail = b""
        self.tripped: str | None = None

    def __call__(self, chunk: bytes) -> list[bytes]:
        if self.tripped is not None:
            return []
        end = chunk == b""  # mitmproxy calls once more with b"" at the end of the body
        self.seen += len(chunk)
        if self.seen > self.limit:
            return self._trip(
                "size",
                f"request body exceeds [vault] max_request_bytes = {self.limit}",
            )
        data = self.tail + chunk
        found = self.scanner.scan_bytes(data)
        if found is not None:
            return self._trip("leak", found)
        if end:
            self.tail = b""
            return [data] if data else []
        keep = min(len(data), self.overlap)
        out, self.tail = data[: len(data) - keep], data[len(data) - keep :]
        return [out] if out else []

    def _trip(self, kind: str, detail: str) -> list[bytes]:
        self.tripped = detail
        self.tail = b""
        self.on_violation(self.flow, kind, detail)
        return []


def _discard(chunk: bytes) -> list[bytes]:
    return []


class EarlyResponder:
    """Loopback HTTP/1 server that answers a redirected, refused request with its held refusal."""

    def __init__(self) -> None:
        self._held: OrderedDict[str, http.Response] = OrderedDict()
        self._server: asyncio.Server | None = None
        self.address: Address | None = None

    async def start(self) -> Address:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=_HEAD_LIMIT)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.address = (str(host), int(port))
        return self.address

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    def hold(self, response: http.Response) -> str:
        token = secrets.token_urlsafe(18)
        self._held[token] = response
        while len(self._held) > _MAX_HELD:
            self._held.popitem(last=False)
        return token

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            token = ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == REFUSAL_HEADER.encode():
                    token = value.strip().decode("ascii", "replace")
            resp = self._held.pop(token, None) if token else None
            if resp is None:
                resp = http.Response.make(400, "clawgate vault: refused\n", {"Content-Type": "text/plain"})
            body = resp.raw_content or b""
            lines = [f"HTTP/1.1 {resp.status_code} {resp.reason or 'Refused'}"]
            lines += [f"{k}: {v}" for k, v in resp.headers.items(multi=True) if k.lower() not in _FRAMING]
            lines += [f"Content-Length: {len(body)}", "Connection: close"]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            await writer.drain()
            # Read (and drop) until mitmproxy closes: closing with unread data would reset the
            # connection and could lose the response on its way.
            while await asyncio.wait_for(reader.read(65536), _DRAIN_S):
                pass
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


_FRAMING = {"content-length", "transfer-encoding", "connection"}


def may_have_large_body(req: http.Request) -> bool:
    """True unless the request is known to carry no body or one of at most STREAM_ABOVE bytes."""
    try:
        size = expected_http_body_size(req)
    except ValueError:
        return True
    if size is None or size < 0 or size > STREAM_ABOVE:
        return True
    # HTTP/2 and 3 frame bodies without Content-Length; "0" only means "not declared" there.
    return size == 0 and (req.is_http2 or req.is_http3) and "content-length" not in req.headers


class BodyGate:
    """Decides, after every refusal check, how a request body travels (see the module doc)."""

    def __init__(
        self,
        scanner: LeakScanner,
        responder: EarlyResponder,
        abort: Abort,
        on_leak: Callable[[http.HTTPFlow, str], None],
        limit: Callable[[], int],
    ) -> None:
        self.scanner = scanner
        self.responder = responder
        self.abort = abort  # cuts the client's connection (proxy/relay.py)
        self.on_leak = on_leak  # audit + owner notice for a leak (proxy/leaks.py)
        self.limit = limit  # current [vault] max_request_bytes

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        req = flow.request
        if not may_have_large_body(req):
            return
        if flow.response is None and HOLD in flow.metadata:
            return  # held whole until the owner decides (invariant 14): the body has ended already
        if flow.response is not None:
            self._answer_early(flow)
        else:
            req.stream = StreamGuard(flow, self.limit(), self.scanner, self._violation)

    def _answer_early(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None and self.responder.address is not None
        req = flow.request
        token = self.responder.hold(flow.response)
        flow.metadata["clawgate.audit_target"] = (req.host, req.port)
        flow.response = None
        req.stream = _discard
        host, port = self.responder.address
        req.scheme = "http"
        req.data.host, req.data.port = host, port
        req.authority = ""
        framing = [(k, v) for k, v in req.headers.items(multi=True) if k.lower() in _FRAMING]
        req.headers.clear()
        for k, v in framing:
            req.headers.add(k, v)
        req.headers["Host"] = f"{host}:{port}"
        req.headers[REFUSAL_HEADER] = token

    def _violation(self, flow: http.HTTPFlow, kind: str, detail: str) -> None:
        if kind == "leak":
            self.on_leak(flow, detail)  # names the pattern in the audit log, tells the owner
        else:
            flow.metadata["clawgate.refusal"] = detail
            log.warning("vault: cut a streamed request to %s: %s", flow.request.host, detail)
        self.abort(flow)


def cut_client(relay_abort: Callable[[object], bool]) -> Abort:
    """An `Abort` closing the relay link a flow's client connection came through."""

    def abort(flow: http.HTTPFlow) -> None:
        relay_abort(flow.client_conn.peername)

    return abort
