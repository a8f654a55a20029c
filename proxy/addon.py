"""The mitmproxy addon: who is asking, may it go there, and which real credential to add.

Identity: sandbox traffic reaches mitmproxy only through `proxy.relay`, which registers
the loopback (ip, port) it is about to connect from *before* connecting. A connection
from any other peer — e.g. a host process dialling the TCP port directly — is refused,
so nothing a client sends can choose its identity.

Egress policy: upstreams on loopback/private/link-local/… addresses are refused unless
explicitly allowed (`[vault] allow_private_upstreams`). The check runs at request level
(to give the client a helpful 403) and again in `server_connect`, where we resolve the
name ourselves and pin the socket to the checked IP so DNS rebinding cannot swap it.

Injection: for requests to a secret's host, the secret's header is overwritten with the
real value. Values are only sent over TLS, or to upstreams explicitly allowed above (local
model servers, test fakes); they are never logged.

Approval: a request an `approve = true` rule or `[[vault.policy]]` entry names gets no
credential in `requestheaders`; once its body is in, `request` holds it until the owner
decides (proxy/holds.py) and injects only on "approved" (invariant 14). A client that gives
up meanwhile — hangs up, or resets just that HTTP/2 stream (proxy/stream_watch.py) — withdraws
the question and gets nothing forwarded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from mitmproxy import connection, http
from mitmproxy.connection import ConnectionState
from mitmproxy.proxy import server_hooks

from proxy.audit import strip_query_values
from proxy.bodies import HOLD, STREAM_ABOVE, may_have_large_body
from proxy.budget import VaultBudgets
from proxy.holds import Demand, Holder, neutralise, refusal_json, summarize_body
from proxy.leaks import redact
from proxy.peers import Address, PeerRegistry
from proxy.policy import Enforcer, Policy
from proxy.secrets import SecretInfo, SecretStore
from proxy.stream_watch import StreamWatch

log = logging.getLogger("clawgate.vault")

_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def ip_is_disallowed(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """True for anything that is not a plain public unicast address."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d is just the IPv4 address
            return ip_is_disallowed(ip.ipv4_mapped)
        embedded = ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and ip_is_disallowed(embedded):
            return True
    return (
        not ip.is_global
        or ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local)
    )


def parse_hostport(value: str) -> Address:
    """`host:port` / `[v6]:port` → (lowercased host without brackets, port)."""
    value = value.strip().lower()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"expected [ipv6]:port, got {value!r}")
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"expected host:port, got {value!r}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ValueError(f"bad port in {value!r}")
    try:
        host = str(ipaddress.ip_address(host))  # canonical, to compare with resolved addresses
    except ValueError:
        host = host.rstrip(".")
    if not host:  # "." or "..": nothing left once the root label's dot is gone
        raise ValueError(f"expected host:port, got {value!r}")
    return host, int(port)


def format_hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class _Verdict:
    ok: bool
    reason: str = ""
    pinned: str | None = None  # the IP the connection must use


def _refusal_body(host: str, port: int, detail: str) -> str:
    hp = format_hostport(host, port)
    return (
        f"clawgate vault: refused upstream {hp}: {detail}.\n"
        "Private, loopback, link-local and similar addresses are blocked so a sandbox cannot\n"
        "reach the host or your internal network. If this upstream is intended (e.g. a local\n"
        "model server), allow it explicitly in config.toml:\n\n"
        "[vault]\n"
        f'allow_private_upstreams = ["{hp}"]\n'
    )


def _unheld_body_refusal() -> str:
    return (
        "clawgate vault: this request needs the owner's approval, and the vault holds a request "
        "only once it has the whole of it: a body of at most "
        f"{STREAM_ABOVE} bytes with a declared Content-Length (over HTTP/2 also no body at all, "
        "the stream ended with the headers). This one's body was still coming without a "
        "declared size. Send it again with a Content-Length header (Content-Length: 0 for no body) "
        "and it is held for the owner.\n"
    )


class VaultAddon:
    """mitmproxy addon enforcing identity, egress policy and credential injection."""

    def __init__(self, registry: PeerRegistry, allow_private: Iterable[str] = ()) -> None:
        self.registry = registry
        self.allow: set[Address] = {parse_hostport(a) for a in allow_private}
        # client connection -> group, for as long as the connection object lives: a flow's
        # last lines (audit, a withdrawn hold, a cut stream's usage) are written after the
        # client has disconnected and must still name the group. Ids are never reused.
        self._groups: weakref.WeakKeyDictionary[connection.Client, str] = weakref.WeakKeyDictionary()
        self._secrets: list[tuple[SecretInfo, str]] = []
        self._pinned: dict[str, Address] = {}  # server connection id -> original address
        self.enforcer = Enforcer()  # rules, scoping and policies: proxy/policy.py, proxy/rules.py
        self.usage_store: SecretStore | None = None  # where last-used times are flushed
        self.budgets: VaultBudgets | None = None  # model budgets (proxy/budget.py)
        # The vault's own loopback services (proxy/bodies.py EarlyResponder): reachable only
        # by connections the vault makes itself, never named by a client.
        self.internal: set[Address] = set()
        self.holder = Holder(None)  # asks the owner about held requests; socket set by __main__
        self.on_held: Callable[[http.HTTPFlow], None] | None = None  # the audit log's "held" line
        self.streams = StreamWatch()  # a mitmproxy addon too (__main__ adds it): finds reset streams

    # -- configuration --

    def set_secrets(self, secrets: list[tuple[SecretInfo, str]]) -> None:
        """Swap the injected secrets atomically (called at start and on reload)."""
        self._secrets = list(secrets)
        self.enforcer.set_secrets(self._secrets)
        log.info("vault: %d secret(s) loaded: %s", len(secrets), ", ".join(i.name for i, _ in secrets))

    def set_policy(self, policy: Policy) -> None:
        self.enforcer.set_policy(policy)
        self.holder.configure(
            policy.approval_timeout_s, policy.max_held_per_group, policy.max_prompts_per_minute
        )

    # -- identity --

    def client_connected(self, client: connection.Client) -> None:
        group = self.registry.lookup(client.peername)
        if group is None:
            client.error = "clawgate vault: connection did not arrive through a group socket"
            log.warning(
                "vault: refused connection from unregistered peer %s (%s)",
                client.peername,
                self.registry.describe_unknown(client.peername),
            )
            return
        self._groups[client] = group

    def group_of(self, client: connection.Client) -> str | None:
        return self._groups.get(client)

    # -- egress policy --

    def _allowed_literal(self, host: str, port: int) -> bool:
        return (host.lower().rstrip("."), port) in self.allow

    async def _resolve(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().getaddrinfo(
            host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )
        ips: list[str] = []
        for _family, _type, _proto, _canon, sockaddr in infos:
            ip = str(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0]))
            if ip not in ips:
                ips.append(ip)
        return ips

    async def check_upstream(self, host: str, port: int) -> _Verdict:
        """Resolve `host` and decide; `pinned` is the address the socket must connect to."""
        literal_ok = self._allowed_literal(host, port)
        try:
            ips = [str(ipaddress.ip_address(host))]
            host = ips[0]  # canonical spelling for messages
        except ValueError:
            try:
                ips = await self._resolve(host, port)
            except (OSError, UnicodeError) as e:
                return _Verdict(False, f"cannot resolve {host}: {e}")
        if not ips:
            return _Verdict(False, f"{host} has no addresses")
        if not literal_ok:
            for ip in ips:
                if ip_is_disallowed(ipaddress.ip_address(ip)) and (ip, port) not in self.allow:
                    what = "is" if ip == host else f"resolves to {ip}, which is"
                    return _Verdict(False, f"{host} {what} a private/loopback/reserved address")
        return _Verdict(True, pinned=ips[0])

    def _refuse(self, flow: http.HTTPFlow, status: int, body: str) -> None:
        flow.response = http.Response.make(status, body, {"Content-Type": "text/plain; charset=utf-8"})
        flow.metadata.setdefault("clawgate.refusal", (body.strip().splitlines() or [""])[0][:200])

    async def _check_flow(self, flow: http.HTTPFlow) -> bool:
        group = self.group_of(flow.client_conn)
        if group is None:
            self._refuse(flow, 403, "clawgate vault: unknown client\n")
            return False
        host, port = flow.request.host, flow.request.port
        if (host, port) in self.internal:
            self._refuse(flow, 403, "clawgate vault: this address is reserved for the vault itself\n")
            return False
        verdict = await self.check_upstream(host, port)
        if not verdict.ok:
            log.warning("vault[%s]: refused %s: %s", group, format_hostport(host, port), verdict.reason)
            if verdict.reason.startswith("cannot resolve") or verdict.reason.endswith("no addresses"):
                self._refuse(flow, 502, f"clawgate vault: {verdict.reason}\n")
            else:
                self._refuse(flow, 403, _refusal_body(host, port, verdict.reason))
            return False
        return True

    async def http_connect(self, flow: http.HTTPFlow) -> None:
        if await self._check_flow(flow):
            group = self.group_of(flow.client_conn) or ""
            refusal = self.enforcer.check_egress(group, flow.request.host, flow.request.port)
            self._policy_refusal(flow, refusal)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            return
        if (
            await self._check_flow(flow)
            and not self._policy_checks(flow)
            and not self._budget_check(flow)  # before a hold: no point asking about a refused call
            and not self._defer(flow)
        ):
            self._inject(flow)

    # -- policies (proxy/policy.py) --

    def _policy_refusal(self, flow: http.HTTPFlow, refusal: http.Response | None) -> bool:
        if refusal is None:
            return False
        flow.response = refusal
        text = refusal.get_text(strict=False) or ""  # None only for a body-less message; ours have one
        flow.metadata.setdefault("clawgate.refusal", text.splitlines()[0][:200])
        return True

    def _policy_checks(self, flow: http.HTTPFlow) -> bool:
        """Egress allowlist, rate limits, request size; True if the flow was refused."""
        group, host = self.group_of(flow.client_conn) or "", flow.request.host
        e = self.enforcer
        return (
            self._policy_refusal(flow, e.check_egress(group, host, flow.request.port))
            or self._policy_refusal(flow, e.check_rate(group, host))
            or self._policy_refusal(flow, e.check_request_size(flow, have_body=False))
        )

    def _budget_check(self, flow: http.HTTPFlow) -> bool:
        """A model call past the budget, or spend it cannot meter, gets a 403; True if refused."""
        if self.budgets is None:
            return False
        return self.budgets.screen(self.group_of(flow.client_conn) or "", flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is None:
            self._policy_refusal(flow, self.enforcer.check_request_size(flow, have_body=True))
        if flow.response is None and self.budgets is not None:  # `background: true` is in the body
            self.budgets.screen_body(self.group_of(flow.client_conn) or "", flow)
        demand = flow.metadata.pop(HOLD, None)
        if isinstance(demand, Demand) and flow.response is None:
            await self._hold(flow, demand)

    # -- held requests (proxy/holds.py) --

    def _defer(self, flow: http.HTTPFlow) -> bool:
        """True if the request needs the owner's approval: no credential now, held in `request`."""
        demand = self.enforcer.approval_demand(flow, self.group_of(flow.client_conn) or "")
        if demand is None:
            return False
        # Held means whole: a body of known small size, or (HTTP/2) a stream the client already
        # ended without one. A body still coming would be streamed to the upstream before the
        # hold (mitmproxy streams past STREAM_ABOVE), so it is refused here (invariant 14).
        if may_have_large_body(flow.request) and not self.streams.ended_without_body(flow):
            self._refuse(flow, 413, _unheld_body_refusal())
            return True
        flow.metadata[HOLD] = demand  # proxy/bodies.py BodyGate never streams such a flow
        return True

    async def _hold(self, flow: http.HTTPFlow, demand: Demand) -> None:
        req = flow.request
        group = self.group_of(flow.client_conn) or ""
        body = req.raw_content or b""
        if not demand.met(body):  # a body condition spares this one
            self._inject(flow)
            return
        path = flow.metadata.get("clawgate.audit_path") or strip_query_values(req.path)
        question = {
            "group": group,
            "method": req.method,
            "host": req.host,
            "port": req.port,
            "path": neutralise(redact(path)[0])[:300],
            "body": summarize_body(body, self.enforcer.secret_values()),
        }
        log.info("vault[%s]: holding %s %s%s for the owner's approval", group, req.method, req.host, path)
        client, stream_withdrawn = flow.client_conn, self.streams.withdrawn(flow)

        def gone() -> bool:  # HTTP/1: the connection; HTTP/2: also this one stream (RST_STREAM)
            return not client.state & ConnectionState.CAN_READ or stream_withdrawn()

        if self.on_held is not None and not self.holder.allowances.active(group, demand.key):
            self.on_held(flow)
        verdict = await self.holder.decide(group, demand, question, gone)
        flow.metadata["clawgate.approval"] = verdict.outcome
        log.info("vault[%s]: held request %s", group, verdict.outcome)
        if gone():  # the client gave up: nothing to answer, nothing sent
            flow.metadata.setdefault("clawgate.refusal", f"approval: {verdict.outcome}"[:200])
            flow.kill()
            return
        if verdict.forward:
            self._inject(flow)
            return
        flow.response = http.Response.make(
            verdict.status,
            refusal_json(verdict.reason or verdict.outcome, req.method, req.host, path),
            {"Content-Type": "application/json"},
        )
        flow.metadata.setdefault("clawgate.refusal", f"approval: {verdict.outcome}"[:200])

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None:
            self.enforcer.stream_response(flow)

    def running(self) -> None:
        if self.usage_store is not None:
            self._usage_task = asyncio.create_task(self._flush_usage_forever())

    async def _flush_usage_forever(self, every_s: float = 10.0) -> None:
        while True:
            await asyncio.sleep(every_s)
            await self.flush_usage()

    async def flush_usage(self) -> None:
        used = self.enforcer.take_usage()
        if used and self.usage_store is not None:
            try:
                await asyncio.to_thread(self.usage_store.record_usage, used)
            except Exception as e:  # best effort: never break traffic over a timestamp
                log.warning("vault: could not record last-used times: %s", e)

    async def done(self) -> None:
        await self.flush_usage()

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        """Last line of defence: check the address actually dialled and pin it to one IP."""
        server = data.server
        if self.group_of(data.client) is None:
            server.error = "clawgate vault: unknown client"
            return
        if server.address is None:
            return
        host, port = str(server.address[0]), int(server.address[1])
        if (host, port) in self.internal:
            return  # a refusal the vault answers itself (proxy/bodies.py)
        verdict = await self.check_upstream(host, port)
        if not verdict.ok or verdict.pinned is None:
            server.error = f"clawgate vault: refused upstream {format_hostport(host, port)}: {verdict.reason}"
            log.warning("vault: %s", server.error)
            return
        if verdict.pinned != host:
            # server.sni stays the name (set by proxy/pinning.py): TLS verifies against it.
            self._pinned[server.id] = server.address
            server.address = (verdict.pinned, port)

    def _unpin(self, server: connection.Server) -> None:
        # Once the socket exists the address is only used for connection reuse matching and
        # display; restoring the hostname keeps keep-alive reuse working.
        original = self._pinned.pop(server.id, None)
        if original is not None:
            server.address = original

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._unpin(data.server)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._unpin(data.server)

    # -- injection --

    def _inject(self, flow: http.HTTPFlow) -> None:
        """Most specific rule the group may use (proxy/rules.py); scoping per [vault] unscoped."""
        host, port = flow.request.host.lower().rstrip("."), flow.request.port
        tls_ok = flow.request.scheme == "https" or self._allowed_literal(host, port)
        refusal = self.enforcer.inject(flow, self.group_of(flow.client_conn), tls_ok)
        self._policy_refusal(flow, refusal)
