"""What a held request's HTTP/2 stream says — the one place that reads mitmproxy (and h2) internals.

Two questions: did the client already end the stream, bodyless, when its headers came (then it
can be held like an HTTP/1.1 GET), and does the client of a held request still wait for it.

Why internals: a request waiting for the owner sits in mitmproxy's async `request` hook. Over
HTTP/1.1 a client that gives up closes its connection, which the addon sees on the public
`Client.state`. Over HTTP/2 (and 3) it resets just that stream (RST_STREAM, CANCEL) and keeps
the connection for its other requests. mitmproxy then pauses the flow's `HttpStream` layer
while our hook runs and *queues* the stream's `RequestProtocolError` (mitmproxy/proxy/layer.py
`Layer.handle_event`); no addon hook runs for it until ours has returned. Without this module
the owner's question stays open for a request nobody waits for any more, an Approve click
"succeeds" and the audit log says approved; only mitmproxy's own check after the hook (below)
would then drop the flow — a safety net of the library we do not want to depend on.

How: the public `next_layer` hook hands us every layer stack mitmproxy builds for a client
connection; we keep that connection's `HttpLayer`s (dropped in `client_disconnected`). When a
hold starts, `withdrawn(flow)` finds the flow's `HttpStream` in `HttpLayer.streams` and answers
"withdrawn" once a `RequestProtocolError` waits in the stream's `_paused_event_queue` — the
same peek mitmproxy's own `HttpStream.check_killed` does after a hook to kill a flow whose
client went away. That event is queued for a reset stream and for a closed connection alike.

Ended without a body: a request needing approval must be whole before it is held (the
credential and the request go out only after Approve), and mitmproxy hands addons no
`end_stream` — over HTTP/2 a bodyless GET is a HEADERS frame with END_STREAM and no
content-length, which the public request cannot tell from a body still coming.
`ended_without_body(flow)`, asked in `requestheaders`, reads the h2 library's own stream on
mitmproxy's `Http2Server` layer (`HttpLayer.connections[client].h2_conn.streams[id]`): state
HALF_CLOSED_REMOTE and `_actual_content_length == 0` — the client can send nothing more on it,
and sent no body byte. h2 updates that state for every frame of a read before mitmproxy emits
any event of it, so the answer does not depend on when the hook task runs (mitmproxy starts
hook tasks eagerly, before the rest of the read's events are queued — which rules out peeking
for a queued `RequestEndOfMessage`). HTTP/3 and anything not found answer False. The answer is
also True for END_STREAM on an empty DATA frame right behind the headers: mitmproxy's
`HttpStream` saw headers that did not end the stream and would stream such a request upstream
at once if `request.stream` were set — so proxy/bodies.py `BodyGate` never streams a held flow.

Checked against mitmproxy 12.3.1 and h2 4.4.1 (pyproject bounds them to 12.x and 4.x). If a
release changes these internals, `problem()` says what is missing: the vault logs it as an
error at start, the hold falls back to the connection-level check only and no stream counts as
ended (a held HTTP/2 request without content-length gets the 413 it got before: fail closed);
tests/vault/test_stream_watch.py fails on the same check, and
tests/vault/test_vault_holds_h2_e2e.py and test_vault_holds_h2_bodyless_e2e.py on the behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

import h2.config
import h2.connection
import h2.stream
from mitmproxy import connection, http, options
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode, HttpStream
from mitmproxy.proxy.layers.http._events import RequestProtocolError
from mitmproxy.proxy.layers.http._http2 import Http2Connection, Http2Server
from mitmproxy.proxy.layers.http._http_h2 import BufferedH2Connection

log = logging.getLogger("clawgate.vault.streams")

CHECKED_MITMPROXY = "12.3.1"


def problem() -> str | None:
    """What this module relies on and the installed mitmproxy lacks, or None if all is there."""
    client = connection.Client(peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0)
    try:
        layer = HttpLayer(Context(client, options.Options()), HTTPMode.transparent)
        stream = HttpStream(Context(client, options.Options()), 1)
    except Exception as exc:  # a changed constructor is exactly what this check is for
        return f"mitmproxy's HTTP layers are not built as in {CHECKED_MITMPROXY}: {exc!r}"
    if not isinstance(getattr(layer, "streams", None), dict):
        return "HttpLayer.streams (stream id -> HttpStream) is gone"
    if not isinstance(getattr(stream, "_paused_event_queue", None), Iterable):
        return "Layer._paused_event_queue (events queued while a hook runs) is gone"
    if "flow" not in getattr(HttpStream, "__annotations__", {}):
        return "HttpStream.flow is gone"
    if not isinstance(getattr(layer, "connections", None), dict):
        return "HttpLayer.connections (connection -> its HTTP layer) is gone"
    if not isinstance(getattr(stream, "stream_id", None), int):
        return "HttpStream.stream_id is gone"
    if "h2_conn" not in getattr(Http2Connection, "__annotations__", {}):
        return "Http2Connection.h2_conn (the h2 library's connection) is gone"
    return _h2_problem()


def _h2_problem() -> str | None:
    """Feed mitmproxy's server-side h2 connection a bodyless, an empty-bodied and a bodied request."""
    try:
        client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        server = BufferedH2Connection(Http2Server.h2_conf)
        client.initiate_connection()
        server.initiate_connection()
        head = [(":method", "GET"), (":scheme", "https"), (":authority", "a.test"), (":path", "/")]
        client.send_headers(1, head, end_stream=True)
        client.send_headers(3, head)
        client.send_data(3, b"x", end_stream=True)
        client.send_headers(5, head)
        server.receive_data(client.data_to_send())
        states = {sid: _h2_state(server, sid) for sid in (1, 3, 5)}
    except Exception as exc:  # a changed h2 is exactly what this check is for
        return f"the h2 library's server side does not work as with mitmproxy {CHECKED_MITMPROXY}: {exc!r}"
    expected = {1: (True, 0), 3: (True, 1), 5: (False, 0)}
    if states != expected:
        return f"h2 stream state and body count read {states}, expected {expected}"
    return None


def _h2_state(conn: h2.connection.H2Connection, stream_id: int) -> tuple[bool, int] | None:
    """(the client ended the stream, body bytes received), or None if h2 keeps no such stream."""
    stream = conn.streams.get(stream_id)
    if stream is None:
        return None
    received = getattr(stream, "_actual_content_length", None)
    if not isinstance(received, int) or isinstance(received, bool):
        return None
    ended = stream.state_machine.state is h2.stream.StreamState.HALF_CLOSED_REMOTE
    return ended, received


class StreamWatch:
    """mitmproxy addon: keeps each client connection's HTTP layers to find a held flow's stream."""

    def __init__(self) -> None:
        self._layers: dict[str, list[HttpLayer]] = {}  # client connection id -> its HTTP layers
        self._warned = False
        self._trusted = False  # ended_without_body answers False until problem() found nothing

    def running(self) -> None:
        trouble = problem()
        self._trusted = trouble is None
        if trouble is not None:
            log.error(
                "vault: %s (checked against mitmproxy %s): a client resetting one HTTP/2 stream of "
                "a held request will not withdraw the owner's question, and a held HTTP/2 request "
                "without content-length gets 413",
                trouble,
                CHECKED_MITMPROXY,
            )

    def next_layer(self, nextlayer: NextLayer) -> None:
        # Runs after mitmproxy's own NextLayer addon (added before ours): `.layer` is its
        # decision, and every layer of that stack was built on this context, so is in `.layers`.
        if nextlayer.layer is None:
            return
        known = self._layers.setdefault(nextlayer.context.client.id, [])
        for layer in nextlayer.context.layers:
            if isinstance(layer, HttpLayer) and not any(layer is k for k in known):
                known.append(layer)

    def client_disconnected(self, client: connection.Client) -> None:
        self._layers.pop(client.id, None)

    def _find(self, flow: http.HTTPFlow) -> tuple[HttpLayer, HttpStream] | None:
        for layer in self._layers.get(flow.client_conn.id, ()):
            for stream in layer.streams.values():
                if getattr(stream, "flow", None) is flow:
                    return layer, stream
        return None

    def _stream_of(self, flow: http.HTTPFlow) -> HttpStream | None:
        found = self._find(flow)
        return None if found is None else found[1]

    def ended_without_body(self, flow: http.HTTPFlow) -> bool:
        """True only if the client already ended this HTTP/2 request's stream without a body byte.

        Ask it in `requestheaders`. Then nothing more can come on the stream: the request is
        whole and may be held. False whenever that is not certain (HTTP/1, HTTP/3, a stream not
        found, internals changed), so the caller keeps refusing what it cannot see whole.
        """
        if not self._trusted or not flow.request.is_http2:
            return False
        found = self._find(flow)
        if found is None:
            self._lost()
            return False
        layer, stream = found
        server = layer.connections.get(flow.client_conn)
        if not isinstance(server, Http2Server):
            return False
        return _h2_state(server.h2_conn, stream.stream_id) == (True, 0)

    def withdrawn(self, flow: http.HTTPFlow) -> Callable[[], bool]:
        """A check, cheap enough to poll, for "the client reset this flow's stream or left".

        Poll it while the flow's `request` hook runs (the stream is paused then). The stream
        is looked up at the first call, so a hold that never waits costs nothing.
        """
        found: list[HttpStream | None] = []

        def check() -> bool:
            if not found:
                found.append(self._stream_of(flow))
                if found[0] is None:
                    self._lost()
            stream = found[0]
            if stream is None:
                return False
            return any(isinstance(event, RequestProtocolError) for event in stream._paused_event_queue)

        return check

    def _lost(self) -> None:
        if not self._warned:
            self._warned = True
            log.error(
                "vault: cannot find the stream of a held request (mitmproxy changed since %s?): "
                "a client resetting just that HTTP/2 stream will not withdraw the question, and a "
                "held HTTP/2 request without content-length gets 413",
                CHECKED_MITMPROXY,
            )
