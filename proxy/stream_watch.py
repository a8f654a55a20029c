"""Whether the client of a held request still waits for it — the one place that reads mitmproxy internals.

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

Checked against mitmproxy 12.3.1 (pyproject bounds it to 12.x). If a release changes these
internals, `problem()` says what is missing: the vault logs it as an error at start and the
hold falls back to the connection-level check only; tests/vault/test_stream_watch.py fails on
the same check, and tests/vault/test_vault_holds_h2_e2e.py on the behaviour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from mitmproxy import connection, http, options
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode, HttpStream
from mitmproxy.proxy.layers.http._events import RequestProtocolError

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
    return None


class StreamWatch:
    """mitmproxy addon: keeps each client connection's HTTP layers to find a held flow's stream."""

    def __init__(self) -> None:
        self._layers: dict[str, list[HttpLayer]] = {}  # client connection id -> its HTTP layers
        self._warned = False

    def running(self) -> None:
        trouble = problem()
        if trouble is not None:
            log.error(
                "vault: %s (checked against mitmproxy %s): a client resetting one HTTP/2 stream of "
                "a held request will not withdraw the owner's question",
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

    def _stream_of(self, flow: http.HTTPFlow) -> HttpStream | None:
        for layer in self._layers.get(flow.client_conn.id, ()):
            for stream in layer.streams.values():
                if getattr(stream, "flow", None) is flow:
                    return stream
        return None

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
                "a client resetting just that HTTP/2 stream will not withdraw the question",
                CHECKED_MITMPROXY,
            )
