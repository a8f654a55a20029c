"""proxy/stream_watch.py reads mitmproxy internals: this fails loudly, naming them, if they change.

Also the h2 stream state behind `ended_without_body`, read on mitmproxy's own HTTP layers fed
real h2 frames. The behaviour through the real vault process (a reset HTTP/2 stream withdraws
its held request; a bodyless request without content-length is held) is proven in
tests/vault/test_vault_holds_h2_e2e.py and tests/vault/test_vault_holds_h2_bodyless_e2e.py.
"""

from __future__ import annotations

import logging

import h2.config
import h2.connection
import h2.stream
import pytest
from mitmproxy import connection, options
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.proxy import events
from mitmproxy.proxy.context import Context
from mitmproxy.proxy.layer import NextLayer
from mitmproxy.proxy.layers.http import HttpLayer, HTTPMode
from mitmproxy.proxy.layers.http._hooks import HttpRequestHeadersHook
from mitmproxy.test import tflow
from mitmproxy.version import VERSION

from proxy.stream_watch import CHECKED_MITMPROXY, StreamWatch, problem


def test_the_installed_mitmproxy_has_what_the_stream_watch_reads() -> None:
    trouble = problem()
    assert trouble is None, (
        f"mitmproxy {VERSION} changed under proxy/stream_watch.py (checked against "
        f"{CHECKED_MITMPROXY}): {trouble}. Re-check it against the new _http2.py / layer.py."
    )


def test_the_checked_version_is_the_same_major_release() -> None:
    assert VERSION.split(".")[0] == CHECKED_MITMPROXY.split(".")[0]


def test_a_flow_whose_stream_cannot_be_found_is_never_called_withdrawn_and_says_so_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    watch = StreamWatch()
    with caplog.at_level(logging.ERROR, logger="clawgate.vault.streams"):
        checks = [watch.withdrawn(tflow.tflow()) for _ in range(3)]
        assert [check() for check in checks] == [False] * 3
    assert len([r for r in caplog.records if "cannot find the stream" in r.getMessage()]) == 1


def _h2_layer(watch: StreamWatch) -> tuple[HttpLayer, connection.Client]:
    """mitmproxy's own HTTP layer for one intercepted h2 client connection, known to `watch`."""
    opts = options.Options()
    Proxyserver().load(opts)  # the proxy options the HTTP layers read
    client = connection.Client(
        peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0, alpn=b"h2"
    )
    ctx = Context(client, opts)
    ctx.server.address, ctx.server.tls = ("upstream.test", 443), True
    layer = HttpLayer(ctx, HTTPMode.transparent)
    nextlayer = NextLayer(ctx)
    ctx.layers = [nextlayer, layer]
    nextlayer.layer = layer
    watch.next_layer(nextlayer)  # how the vault learns the layer (proxy/__main__.py adds the watch)
    list(layer.handle_event(events.Start()))
    return layer, client


def _answers_as_hooks_start(
    watch: StreamWatch, layer: HttpLayer, client: connection.Client, data: bytes
) -> list[bool]:
    """`ended_without_body` for each request, asked when its `requestheaders` hook is yielded.

    mitmproxy starts hook tasks eagerly: an addon runs before the rest of the read is handled.
    """
    answers = []
    for command in layer.handle_event(events.DataReceived(client, data)):
        if isinstance(command, HttpRequestHeadersHook):
            answers.append(watch.ended_without_body(command.flow))
    return answers


def _requests(*bodies: bytes | None) -> bytes:
    """One h2 connection's bytes: per request HEADERS; None = END_STREAM on them, else DATA + END_STREAM."""
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    head = [(":method", "DELETE"), (":scheme", "https"), (":authority", "upstream.test"), (":path", "/x")]
    for body in bodies:
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, head, end_stream=body is None)
        if body is not None:
            c.send_data(sid, body, end_stream=True)
    c.send_headers(c.get_next_available_stream_id(), head)  # and one whose body is still to come
    return c.data_to_send()


def test_a_stream_ended_with_its_headers_counts_as_bodyless_when_the_hook_starts() -> None:
    watch = StreamWatch()
    watch.running()
    layer, client = _h2_layer(watch)
    # END_STREAM on HEADERS; on an empty DATA frame; on a DATA frame with one byte; not yet.
    assert _answers_as_hooks_start(watch, layer, client, _requests(None, b"", b"x")) == [
        True,
        True,
        False,
        False,
    ]


def test_a_vault_whose_self_check_failed_never_calls_a_stream_ended(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail closed: internals that changed mean a held h2 request without content-length gets 413."""
    monkeypatch.setattr("proxy.stream_watch.problem", lambda: "HttpLayer.connections is gone")
    watch = StreamWatch()
    watch.running()
    layer, client = _h2_layer(watch)
    assert _answers_as_hooks_start(watch, layer, client, _requests(None)) == [False, False]


def test_the_self_check_notices_an_h2_that_stops_counting_body_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(h2.stream.H2Stream, "_track_content_length", lambda self, length, end_stream: None)
    trouble = problem()
    assert trouble is not None and "body count" in trouble


def test_an_unknown_or_http1_flow_never_counts_as_ended() -> None:
    watch = StreamWatch()
    watch.running()
    assert watch.ended_without_body(tflow.tflow()) is False  # HTTP/1.1, not found
    h2_flow = tflow.tflow()
    h2_flow.request.http_version = "HTTP/2.0"
    assert watch.ended_without_body(h2_flow) is False  # its stream is nowhere to be found
