"""Host pinning: a request reaches exactly one upstream name — the one the vault decided on.

The egress allowlist and credential injection decide on the CONNECT target (or, for a
plain-HTTP proxy request, the absolute-form URL's host). A client can name a host to the
upstream in three more places: the TLS server name (SNI), the `Host` header and HTTP/2's
`:authority` (or an absolute-form URI inside a tunnel). A shared front — any CDN — routes by
those, so if the vault forwarded them as sent, the key for `api.a.example` would reach the
attacker's `b.example` behind the same front, and a group's egress allowlist would stop
meaning anything. So:

- Every request naming another host:port than the decided one is refused here with 421
  (Misdirected Request) — before the leak scan, the egress check and injection, so nothing
  credentialed is built and nothing leaves. Hosts compare case-insensitively and without a
  trailing dot; ports compare after filling in the scheme's default (`a.example` equals
  `a.example:443` over TLS, `a.example:8443` does not).
- The upstream TLS name is always the decided host (`server.sni`; mitmproxy's tlsconfig
  verifies the certificate against exactly that name), never the client's SNI; a server
  connection for a client whose SNI differs is refused outright as a last line of defence.

Register this addon after the audit addon (so refusals are logged) and before every other
vault addon (leaks, policy, injection).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from mitmproxy import connection, http
from mitmproxy.net.http import url
from mitmproxy.proxy import server_hooks

log = logging.getLogger("clawgate.vault.pinning")

Address = tuple[str, int]
GroupOf = Callable[[connection.Client], str | None]


def canonical_host(host: str) -> str:
    """Lower-case, no brackets or trailing dot, IPs in canonical form, IDNs as punycode."""
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    h = h.rstrip(".")
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if not h.isascii():
        try:
            return h.encode("idna").decode("ascii")
        except UnicodeError:
            return h
    return h


def default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80


def parse_authority(value: str, scheme: str) -> Address:
    """`host[:port]` as a Host header or `:authority` carries it; ValueError if malformed."""
    host, port = url.parse_authority(value, check=True)
    return canonical_host(host), port if port is not None else default_port(scheme)


def same_host(a: str, b: str) -> bool:
    return canonical_host(a) == canonical_host(b)


def mismatch(flow: http.HTTPFlow, target: Address) -> tuple[int, str] | None:
    """Why this request names another upstream than `target`, with the status; None if it does not."""
    req = flow.request
    host, port = canonical_host(target[0]), target[1]
    shown = url.hostport(req.scheme, host, port)
    sni = flow.client_conn.sni
    if sni and not same_host(sni, host):
        return 421, f"the TLS server name (SNI) {sni!r} differs from the requested host {shown!r}"
    if not (req.path.startswith("/") or (req.method == "OPTIONS" and req.path == "*")):
        # HTTP/2 :path (or curl --request-target) carrying a whole URL: an upstream speaking
        # HTTP/1 would take it as an absolute-form target naming its own host.
        return 421, f"the request target {req.path[:200]!r} is not a path on the requested host {shown!r}"
    if req.authority:
        try:
            named = parse_authority(req.authority, req.scheme)
        except ValueError:
            return 400, f"malformed request authority {req.authority!r}"
        if named != (host, port):
            what = ":authority" if req.is_http2 or req.is_http3 else "absolute-form request target"
            return 421, f"the {what} {req.authority!r} differs from the requested host {shown!r}"
    hosts = req.headers.get_all("host")
    if len(hosts) > 1:
        return 400, "more than one Host header"
    if hosts:
        try:
            named = parse_authority(hosts[0], req.scheme)
        except ValueError:
            return 400, f"malformed Host header {hosts[0]!r}"
        if named != (host, port):
            return 421, f"the Host header {hosts[0]!r} differs from the requested host {shown!r}"
    return None


def refusal_body(reason: str) -> str:
    return (
        f"clawgate vault: refused: {reason}.\n"
        "The vault decides on one upstream per request (the CONNECT target, or the URL of a\n"
        "plain-HTTP proxy request) and adds credentials for that host only; the TLS server name,\n"
        "Host and :authority must name the same host and port.\n"
    )


class PinAddon:
    """Refuses requests whose SNI/Host/:authority name another host; pins the upstream TLS name."""

    def __init__(self, group_of: GroupOf) -> None:
        self._group_of = group_of
        self._tunnels: dict[str, Address] = {}  # client connection id -> CONNECT target
        self.internal: set[Address] = set()  # the vault's own responder (proxy/bodies.py)

    def http_connected(self, flow: http.HTTPFlow) -> None:
        self._tunnels[flow.client_conn.id] = (flow.request.host, flow.request.port)

    def client_disconnected(self, client: connection.Client) -> None:
        self._tunnels.pop(client.id, None)

    def target_of(self, flow: http.HTTPFlow) -> Address:
        """The decided upstream: the tunnel's CONNECT target, else the request's own host."""
        return self._tunnels.get(flow.client_conn.id) or (flow.request.host, flow.request.port)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        target = self.target_of(flow)
        req = flow.request
        if (req.host, req.port) != target:
            # Inside a tunnel mitmproxy takes host/port from the server connection, whose
            # address the vault briefly swaps for the checked IP while connecting (DNS
            # rebinding defence); decisions are taken on the CONNECT target's name.
            req.data.host, req.data.port = target
        found = mismatch(flow, target)
        if found is None:
            return
        status, reason = found
        group = self._group_of(flow.client_conn) or "?"
        log.warning("vault[%s]: refused request to %s: %s", group, format_target(target), reason)
        flow.response = http.Response.make(
            status,
            refusal_body(reason),
            {"Content-Type": "text/plain; charset=utf-8", "Connection": "close"},
        )
        flow.metadata["clawgate.refusal"] = f"host mismatch: {reason}"

    def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """The upstream TLS name is the decided host, whatever the client put in its SNI."""
        server = data.server
        if server.address is None:
            return
        host = str(server.address[0])
        if (host, int(server.address[1])) in self.internal:
            return  # a refused request the vault answers itself: no TLS, nothing leaves
        sni = data.client.sni
        if sni and not same_host(sni, host):
            server.error = (
                f"clawgate vault: client TLS server name {sni!r} differs from the upstream {host!r}"
            )
            log.warning("vault: %s", server.error)
            return
        server.sni = canonical_host(host)


def format_target(target: Address) -> str:
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
