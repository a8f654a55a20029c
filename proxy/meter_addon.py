"""The vault's metering addon: every model call a group makes is measured as it is relayed.

For a request to a model endpoint (`proxy.spend_paths.model_endpoint`, on any host, however
the path is spelled):

- The model a Gemini call names is taken from its path (`…/models/<m>:…`), the others' from
  the body, as the fallback when a response does not say.
- `Accept-Encoding: identity` is sent upstream, so the response can be read without decompressing
  it (see proxy/metering.py; gzip/deflate answers are still metered).
- An OpenAI chat or legacy completions request that streams without
  `stream_options.include_usage` is rewritten to ask for it: otherwise its stream would carry no
  token counts, and a sandbox could hide its spend by how it asks. A small body is rewritten
  whole in `request`; a body the vault streams (over 1 MiB or of unknown length) is held back
  until complete — bounded by `[vault] max_request_bytes`, which the body gate enforces first —
  and sent chunked, since its length may change.
- The response is read by a `Meter` chained in front of the response's stream callable (the size
  cap of proxy/policy.py), or from the buffered body in `response` for a small one. The moment
  the final usage is known — for a stream, while relaying the chunk that carries it, before the
  client has the end of the response — every `on_usage(group, usage)` listener is called, then
  the record is queued for the gateway (proxy/usage_report.py).
- A call that ends without its final usage — the client hangs up, the upstream breaks off, or it
  sends garbage — is counted with an over-estimate, marked incomplete (`complete: false`): input
  from the request body's size unless the response stated it, output from the content relayed
  before the cut (proxy/meter_estimate.py), so a sandbox cannot spend under a budget by hanging
  up before the end. Hence the request body's bytes are counted as they pass. A call cut after
  its request went upstream but before any response counts its input. The audit log's line for
  it says `spend: "estimated: …"` — unless the answer is a Responses object queued in the
  background (`"background": true`, status queued or in_progress; a request body the vault could
  not read let it through without a budget): its usage comes only through a later GET, so the
  line says `spend: "unmetered: OpenAI background response"` (proxy/spend_paths.py).

Metering never breaks or slows traffic: each step is wrapped, a failure disables metering for
that one flow and is logged once per kind (no bodies, no secrets), and the bytes pass unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from mitmproxy import connection, http

from proxy.metering import Meter, Usage, ensure_stream_usage, request_model
from proxy.spend_paths import BACKGROUND, Endpoint, gemini_model, model_endpoint, unmetered
from proxy.usage_report import UsageReporter

log = logging.getLogger("clawgate.vault.metering")

Listener = Callable[[str, Usage], None]
_ENDPOINT = "clawgate.model_endpoint"
_MODEL = "clawgate.request_model"
_METER = "clawgate.meter"
_GROUP = "clawgate.meter_group"  # kept on the flow: the client may be gone when a cut stream ends
_STREAM_USAGE = ("openai-chat", "openai-completions")  # streams that carry usage only when asked
_REQUEST_BYTES = "clawgate.request_bytes"  # a streamed request body's bytes, counted as they pass
SPEND = "clawgate.spend"  # the audit log's `spend` (proxy/audit.py)
ESTIMATED = "estimated: the call ended before its final usage; counted from the bytes relayed"


class _Chain:
    """A response `stream` callable: meter the upstream's bytes, then pass them to `inner`."""

    def __init__(self, addon: MeterAddon, flow: http.HTTPFlow, meter: Meter, inner: Any) -> None:
        self.addon, self.flow, self.meter, self.inner = addon, flow, meter, inner

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        self.addon.feed(self.flow, self.meter, chunk)
        if callable(self.inner):
            out: bytes | list[bytes] = self.inner(chunk)
            return out
        return chunk


class _Counted:
    """A request `stream` callable counting the body's bytes before passing them to `inner`."""

    def __init__(self, flow: http.HTTPFlow, inner: Any) -> None:
        self.flow, self.inner = flow, inner
        flow.metadata[_REQUEST_BYTES] = 0

    def __call__(self, chunk: bytes) -> bytes | list[bytes]:
        self.flow.metadata[_REQUEST_BYTES] += len(chunk)
        if callable(self.inner):
            out: bytes | list[bytes] = self.inner(chunk)
            return out
        return chunk


def _request_size(flow: http.HTTPFlow) -> tuple[int, bool]:
    """The request body's bytes as sent by the client, and whether it was content-encoded."""
    req = flow.request
    encoded = req.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")
    counted = flow.metadata.get(_REQUEST_BYTES)
    return (counted if isinstance(counted, int) else len(req.raw_content or b"")), encoded


class _HoldWhole:
    """A request `stream` callable holding a chat request body back to rewrite it whole."""

    def __init__(self, flow: http.HTTPFlow, inner: Any) -> None:
        self.flow, self.inner = flow, inner
        self.parts: list[bytes] = []

    def _through(self, chunk: bytes) -> list[bytes]:
        if not callable(self.inner):
            return [chunk] if chunk else []
        out = self.inner(chunk)
        return [out] if isinstance(out, bytes) else list(out)

    def __call__(self, chunk: bytes) -> list[bytes]:
        passed = self._through(chunk)
        if self.flow.metadata.get("clawgate.refusal"):  # the body gate cut it: forward nothing more
            self.parts.clear()
            return passed
        self.parts.extend(passed)
        if chunk != b"":
            return []
        body = b"".join(self.parts)
        self.parts.clear()
        try:
            self.flow.metadata[_MODEL] = request_model(body)
            body = ensure_stream_usage(body) or body
        except Exception:
            log.exception("vault: could not check a chat request for stream usage; sent as it was")
        return [body] if body else []


class MeterAddon:
    """Register after `BodyGate` (it chains the gate's request stream and the size cap's response one)."""

    def __init__(self, group_of: Callable[[connection.Client], str | None], reporter: UsageReporter) -> None:
        self.group_of = group_of
        self.reporter = reporter
        self.listeners: list[Listener] = []  # budget accounting (proxy/budget.py) registers here
        self._logged: set[str] = set()

    def _failed(self, flow: http.HTTPFlow, where: str, exc: BaseException) -> None:
        flow.metadata.pop(_METER, None)
        flow.metadata.pop(_ENDPOINT, None)
        if where not in self._logged:
            self._logged.add(where)
            log.error(
                "vault: metering failed in %s (%s); that call is not metered", where, type(exc).__name__
            )

    # -- requests --

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        try:
            endpoint = model_endpoint(flow.request.method, flow.request.path)
            group = self.group_of(flow.client_conn)
            if endpoint is None or group is None:
                return
            flow.metadata[_ENDPOINT] = endpoint
            flow.metadata[_GROUP] = group
            if endpoint == "gemini":  # the model is named in the path, not the body
                flow.metadata[_MODEL] = gemini_model(flow.request.path)
            flow.request.headers["accept-encoding"] = "identity"
            if endpoint in _STREAM_USAGE and flow.request.stream:
                flow.request.stream = _HoldWhole(flow, flow.request.stream)
                # Its length may change: HTTP/1 sends it chunked, HTTP/2 frames it anyway.
                flow.request.headers.pop("content-length", None)
                if not (flow.request.is_http2 or flow.request.is_http3):
                    flow.request.headers["transfer-encoding"] = "chunked"
            if flow.request.stream:
                flow.request.stream = _Counted(flow, flow.request.stream)
        except Exception as exc:
            self._failed(flow, "requestheaders", exc)

    def request(self, flow: http.HTTPFlow) -> None:
        endpoint = flow.metadata.get(_ENDPOINT)
        if endpoint in (None, "gemini") or flow.response is not None or flow.request.stream:
            return
        try:
            body = flow.request.raw_content or b""
            flow.metadata[_MODEL] = request_model(body)
            if endpoint in _STREAM_USAGE and body:
                if flow.request.headers.get("content-encoding", "identity").strip().lower() != "identity":
                    flow.response = http.Response.make(
                        415,
                        "clawgate vault: a compressed (chat) completions request body cannot be checked"
                        " for streamed usage; send it uncompressed.\n",
                        {"Content-Type": "text/plain; charset=utf-8"},
                    )
                    flow.metadata.setdefault("clawgate.refusal", "compressed model request")
                    return
                rewritten = ensure_stream_usage(body)
                if rewritten is not None:
                    flow.request.raw_content = rewritten
                    flow.request.headers["content-length"] = str(len(rewritten))
        except Exception as exc:
            self._failed(flow, "request", exc)

    # -- responses --

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        endpoint: Endpoint | None = flow.metadata.get(_ENDPOINT)
        resp = flow.response
        if endpoint is None or resp is None:
            return
        try:
            sse = resp.headers.get("content-type", "").split(";")[0].strip().lower() == "text/event-stream"
            request_bytes, encoded = _request_size(flow)
            meter = Meter(
                endpoint,
                sse=sse,
                status=resp.status_code,
                request_model=flow.metadata.get(_MODEL, ""),
                encoding=resp.headers.get("content-encoding", ""),
                request_bytes=request_bytes,
                request_encoded=encoded,
            )
            if meter.undecodable:
                log.warning(
                    "vault: a model response came %s-encoded despite Accept-Encoding: identity;"
                    " its usage cannot be read",
                    resp.headers.get("content-encoding", "")[:20],
                )
            flow.metadata[_METER] = meter
            if resp.stream:
                resp.stream = _Chain(self, flow, meter, resp.stream)
        except Exception as exc:
            self._failed(flow, "responseheaders", exc)

    def feed(self, flow: http.HTTPFlow, meter: Meter, chunk: bytes) -> None:
        if flow.metadata.get(_METER) is not meter:
            return  # metering was given up for this flow
        try:
            usage = meter.feed(chunk) if chunk else meter.finish()
        except Exception as exc:
            self._failed(flow, "stream", exc)
            return
        if usage is not None:
            self._emit(flow, usage)

    def response(self, flow: http.HTTPFlow) -> None:
        meter: Meter | None = flow.metadata.get(_METER)
        if meter is None or flow.response is None:
            return
        try:
            usage = None
            if not flow.response.stream:
                usage = meter.feed(flow.response.raw_content or b"")
            usage = usage or meter.finish()
        except Exception as exc:
            self._failed(flow, "response", exc)
            return
        if usage is not None:
            self._emit(flow, usage)

    def error(self, flow: http.HTTPFlow) -> None:
        """A call cut short: estimated, marked incomplete (the module docstring)."""
        meter: Meter | None = flow.metadata.get(_METER)
        try:
            if meter is None:
                meter = self._unanswered(flow)
                if meter is None:
                    return
            usage = meter.finish()
        except Exception as exc:
            self._failed(flow, "error", exc)
            return
        if usage is not None:
            self._emit(flow, usage)

    def _unanswered(self, flow: http.HTTPFlow) -> Meter | None:
        """A meter for a model call cut after its whole request went upstream, before any response
        (its input may be billed); None if the call never reached the upstream whole."""
        endpoint: Endpoint | None = flow.metadata.get(_ENDPOINT)
        server = flow.server_conn
        if (
            endpoint is None
            or flow.response is not None
            or flow.metadata.get("clawgate.refusal")
            or flow.request.timestamp_end is None
            or server is None
            or server.timestamp_tcp_setup is None
        ):
            return None
        request_bytes, encoded = _request_size(flow)
        return Meter(
            endpoint,
            sse=False,
            request_model=flow.metadata.get(_MODEL, ""),
            request_bytes=request_bytes,
            request_encoded=encoded,
        )

    def _emit(self, flow: http.HTTPFlow, usage: Usage) -> None:
        group: str | None = flow.metadata.get(_GROUP)
        if group is None:
            return
        flow.metadata["clawgate.usage"] = usage
        meter: Meter | None = flow.metadata.get(_METER)
        if not usage.complete and meter is not None and meter.background:
            flow.metadata[SPEND] = unmetered(BACKGROUND)
        elif not usage.complete:
            flow.metadata.setdefault(SPEND, ESTIMATED)
        for listener in list(self.listeners):
            try:
                listener(group, usage)
            except Exception as exc:
                key = f"listener {getattr(listener, '__qualname__', type(listener).__name__)}"
                if key not in self._logged:
                    self._logged.add(key)
                    log.error("vault: a usage listener failed (%s): %s", key, type(exc).__name__)
        try:
            self.reporter.add(group, usage)
        except Exception as exc:
            if "report" not in self._logged:
                self._logged.add("report")
                log.error("vault: could not queue a usage record (%s)", type(exc).__name__)
