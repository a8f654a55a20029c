"""Fuzzing the vault's request heads: what a sandbox sends decides where credentials go.

Two targets:

- `vault_host_parsing`: the pure parsers the decisions rest on (`parse_hostport`,
  `normalize_host_pattern`, `host_matches`) on hostile authorities (IPv6 literals with zones
  and brackets, percent-encoding, IDNA and confusable Unicode, trailing dots, odd ports).
  They return a typed value or raise their documented error, round-trip, and match the same
  way whatever the ASCII case, a trailing dot or an explicit port.
- `vault_request_heads`: raw HTTP/1.1 request heads (origin-, absolute- and authority-form,
  hostile `Host`, overlong headers) parsed by mitmproxy's own HTTP/1 reader and run through
  the real `VaultAddon` hooks for a registered sandbox client. Name resolution is answered by
  a fixed table (no DNS traffic). Properties: a credential is only ever added for a group the
  secret allows, to a host its rule matches, over TLS, on an upstream that is allowed and
  public; a refused request never carries the real value; and the decision does not change
  with the host's ASCII case or a trailing dot.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from typing import Any

from hypothesis import strategies as st
from mitmproxy import connection, http
from mitmproxy.net.http.http1 import read_request_head
from mitmproxy.test import tflow

from proxy.addon import VaultAddon, format_hostport, parse_hostport
from proxy.peers import PeerRegistry
from proxy.pinning import PinAddon, canonical_host, parse_authority, same_host
from proxy.policy import Policy
from proxy.rules import RuleError, host_matches, make_rule, normalize_host_pattern
from proxy.secrets import SecretInfo
from tests.fuzz import harness
from tests.fuzz.strategies import nasty_text

REAL = "REAL-SECRET-VALUE-0123456789"
PUBLIC_IP = "93.184.216.34"
GROUP_PORTS = {"main": 40001, "team": 40002}

_labels = st.one_of(
    st.sampled_from(["api", "example", "com", "org", "internal", "xn--80ak6aa92e", "localhost", "*", ""]),
    st.from_regex(r"[a-zA-Z0-9-]{1,12}", fullmatch=True),
    st.text(max_size=6),
)
_names = st.one_of(
    st.sampled_from(["api.example.com", "sub.example.org", "a.b.example.org", "example.org", "localhost"]),
    st.lists(_labels, min_size=1, max_size=4).map(".".join),
)
_ipv6 = st.one_of(
    st.ip_addresses(v=6).map(str),
    st.ip_addresses(v=6).map(lambda ip: ip.exploded.upper()),
    st.sampled_from(
        ["::1", "::ffff:127.0.0.1", "::ffff:7f00:1", "64:ff9b::7f00:1", "fe80::1%eth0", "2002:7f00:1::"]
    ),
)
_ipv4 = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.sampled_from(["127.0.0.1", "127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1", "169.254.169.254", "0"]),
)
_hosts = st.one_of(_names, _ipv4, _ipv6, _ipv6.map(lambda h: f"[{h}]"), nasty_text())
_ports = st.one_of(
    st.integers(-1, 70000).map(str), st.sampled_from(["443", "80", "0443", "+443", "４４３", "²", "", " 443"])
)
_authorities = st.one_of(
    st.builds(lambda h, p: f"{h}:{p}", _hosts, _ports),
    st.builds(lambda h, p: f"[{h}]:{p}", _ipv6, _ports),
    _hosts,
    st.builds(lambda h: re.sub(r"[a-z.]", lambda m: f"%{ord(m.group()):02x}", h, count=2), _names),
)


def _case_variants(value: str) -> list[str]:
    """Spellings that must mean the same: ASCII case changes only (Unicode case folding may not)."""
    swapped = "".join(c.swapcase() if c.isascii() else c for c in value)
    return [value, value.upper() if value.isascii() else value, swapped]


@harness.fuzz_target(
    "vault_host_parsing",
    ci_examples=2000,
    examples=({"authority": "a.example.com:443", "pattern": "api.example.com:²", "host": "x", "port": 1},),
    authority=_authorities,
    pattern=st.one_of(_authorities, _names.map(lambda n: "*." + n)),
    host=_hosts,
    port=st.integers(1, 65535),
)
def vault_host_parsing(env: None, authority: str, pattern: str, host: str, port: int) -> None:
    # parse_hostport: (lowercase host without brackets, port) or ValueError; round-trips.
    try:
        parsed = parse_hostport(authority)
    except ValueError:
        parsed = None
    if parsed is not None:
        name, number = parsed
        assert isinstance(name, str) and name and name == name.lower()
        assert not (name.startswith("[") or name.endswith("]")), name  # brackets are removed
        assert isinstance(number, int) and 1 <= number <= 65535
        assert parse_hostport(format_hostport(name, number)) == parsed
        for variant in _case_variants(authority):
            assert parse_hostport(variant) == parsed, (authority, variant)
    # normalize_host_pattern: a canonical pattern or RuleError, nothing else; idempotent.
    try:
        normal = normalize_host_pattern(pattern)
    except RuleError:
        return
    assert normalize_host_pattern(normal) == normal
    for variant in _case_variants(pattern):
        assert normalize_host_pattern(variant) == normal, (pattern, variant)
    # host_matches: the same answer for every ASCII case and a trailing dot of the request host.
    plain = host.lower().rstrip(".")
    verdict = host_matches(normal, plain, port)
    for variant in [*_case_variants(host), host + ".", host.rstrip(".")]:
        if variant.lower().rstrip(".") == plain:
            assert host_matches(normal, variant, port) == verdict, (normal, host, variant)
    if normal.startswith("*.") and verdict:  # one label, never the bare domain or two labels
        label = plain[: -len(normal.split(":")[0]) + 1]
        assert label and "." not in label, (normal, plain)


# ------------------------------------------------------------------ request heads through the addon


class _TableResolver(VaultAddon):
    """The real addon with name resolution from a fixed table: fuzzed names never reach DNS."""

    async def _resolve(self, host: str, port: int) -> list[str]:
        name = host.lower().rstrip(".")
        if name == "localhost" or name.endswith((".internal", ".local")):
            return ["10.0.0.7"]
        if not name or len(name) > 253 or any(c in name for c in " /\\@%\x00"):
            raise OSError("name does not resolve")
        return [PUBLIC_IP]


def _addon() -> VaultAddon:
    registry = PeerRegistry()
    for group, port in GROUP_PORTS.items():
        registry.register(("127.0.0.1", port), group)
    addon = _TableResolver(registry, ["127.0.0.1:8080"])
    secrets = [
        (SecretInfo("api", "api.example.com", "Authorization", "Bearer {value}", "", groups=("main",)), REAL),
        (
            SecretInfo(
                "wild",
                "*.example.org",
                "x-api-key",
                "{value}",
                "",
                rules=(make_rule("*.example.org", "/v1/*", (), "set_header", "x-api-key", "{value}"),),
                groups=("main", "team"),
            ),
            REAL,
        ),
        (
            SecretInfo(
                "bot",
                "bot.example.com",
                "",
                "",
                "",
                rules=(make_rule("bot.example.com:443", "/*", (), "path_template", None, "/bot{value}"),),
                groups=("*",),
            ),
            REAL,
        ),
    ]
    addon.set_secrets(secrets)
    addon.set_policy(Policy(egress={"team": ["api.example.com", "*.example.org", "bot.example.com"]}))
    return addon


_paths = st.one_of(
    st.sampled_from(["/", "/v1/x", "/v1/../admin", "/botplaceholder/getMe", "/%2e%2e/", "//evil.com/x", "*"]),
    st.from_regex(r"/[A-Za-z0-9/._~%-]{0,30}", fullmatch=True),
)
_token_text = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=40)
_header_values = st.one_of(
    _token_text,
    st.sampled_from(["", "Bearer placeholder", "0", "-1", "99999999999999999999", "1e3", "x" * 70000]),
)
_headers = st.lists(
    st.tuples(
        st.sampled_from(
            ["Host", "host", "Authorization", "x-api-key", "Content-Length", "X-Forwarded-Host", "Foo"]
        ),
        _header_values,
    ),
    max_size=5,
)


# Upstreams the policy and the secrets know, so that many examples get as far as injection.
_known = st.sampled_from(
    [
        "api.example.com:443",
        "API.Example.COM:443",
        "api.example.com.:443",
        "sub.example.org:443",
        "a.b.example.org:443",
        "bot.example.com:443",
        "127.0.0.1:8080",
        "localhost:8080",
        "[::1]:8080",
        "evil.example.net:443",
    ]
)
_upstreams = st.one_of(_known, _known, _authorities)


@st.composite
def request_heads(draw: st.DrawFn) -> tuple[bytes, str | None, str | None]:
    """(raw head, CONNECT authority of the tunnel it is sent in or None, client TLS SNI or None)."""
    method = draw(st.sampled_from(["GET", "POST", "GET", "CONNECT", "get", "DELETE"]))
    authority = draw(_upstreams)
    form = draw(st.sampled_from(["origin", "absolute", "origin", "absolute", "authority"]))
    if method == "CONNECT" or form == "authority":
        target = authority
    elif form == "absolute":
        target = f"{draw(st.sampled_from(['http', 'https', 'HTTPS']))}://{authority}{draw(_paths)}"
    else:
        target = draw(_paths)
    lines = [f"{method} {target} HTTP/1.1"]
    host_header = draw(st.one_of(st.just(authority), _upstreams))
    if draw(st.booleans()):
        lines.append(f"Host: {host_header}")
    lines += [f"{name}: {value}" for name, value in draw(_headers)]
    raw = "\r\n".join(lines) + "\r\n\r\n"
    tunnel = None
    if form == "origin" and method != "CONNECT":  # origin-form is only valid inside a tunnel
        tunnel = draw(st.one_of(st.just(authority), _upstreams, st.none()))
    sni = draw(st.one_of(st.none(), st.just(authority.rsplit(":", 1)[0]), _hosts)) if tunnel else None
    return raw.encode("utf-8", "surrogatepass"), tunnel, sni


def _parse(raw: bytes) -> http.Request | None:
    try:
        head = raw.removesuffix(b"\r\n\r\n")
        return read_request_head([line + b"\r\n" for line in head.split(b"\r\n")])
    except Exception:  # mitmproxy refuses the head (400) before any addon runs
        return None


class _Vault:
    """The vault's request-deciding addons in their production order: pinning, then policy/injection."""

    def __init__(self, sni: str | None, group: str) -> None:
        self.addon = _addon()
        self.pin = PinAddon(self.addon.group_of)
        self.client = connection.Client(
            peername=("127.0.0.1", GROUP_PORTS[group]), sockname=("127.0.0.1", 1), timestamp_start=0, sni=sni
        )
        self.addon.client_connected(self.client)

    def flow(self, request: http.Request) -> http.HTTPFlow:
        flow = tflow.tflow()
        flow.client_conn = self.client
        flow.request = request
        return flow

    async def connect(self, authority: str) -> http.HTTPFlow | None:
        """The CONNECT that opens a tunnel; None when mitmproxy cannot even parse its target."""
        request = _parse(f"CONNECT {authority} HTTP/1.1\r\n\r\n".encode("utf-8", "surrogatepass"))
        if request is None:
            return None
        flow = self.flow(request)
        await self.addon.http_connect(flow)
        if flow.response is None:
            self.pin.http_connected(flow)
        return flow

    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.request.method.upper() == "CONNECT":
            await self.addon.http_connect(flow)
            return
        self.pin.requestheaders(flow)
        await self.addon.requestheaders(flow)


async def _decide(raw: bytes, tunnel: str | None, sni: str | None, group: str) -> tuple[_Vault, Any]:
    """Run one request head through the vault; (the vault, the request's flow or None if never sent)."""
    vault = _Vault(sni, group)
    if tunnel is not None:
        connect = await vault.connect(tunnel)
        if connect is None:
            return vault, None  # mitmproxy refuses the CONNECT itself
        if connect.response is not None:
            return vault, connect  # the vault refused the tunnel: that is the decision
    request = _parse(raw)
    if request is None:
        return vault, None
    if tunnel is not None:  # inside the tunnel mitmproxy addresses the request to the CONNECT target
        assert connect is not None
        request.scheme, request.host, request.port = "https", connect.request.host, connect.request.port
    elif not request.host:
        return vault, None  # origin-form outside a tunnel: mitmproxy's regular mode refuses it
    flow = vault.flow(request)
    await vault.request(flow)
    return vault, flow


def _outcome(flow: http.HTTPFlow | None) -> tuple[Any, ...]:
    if flow is None:
        return ("not sent",)
    status = flow.response.status_code if flow.response is not None else None
    return status, flow.metadata.get("clawgate.secret"), flow.request.path


def _respell(raw: bytes, tunnel: str | None, old: str, new: str) -> tuple[bytes, str | None]:
    """The same request with the decided host spelled differently wherever it names it."""
    if tunnel is not None:
        return raw, tunnel.replace(old, new, 1)
    line, crlf, rest = raw.partition(b"\r\n")
    method, target, version = line.split(b" ", 2)
    scheme, sep, after = target.partition(b"://")  # absolute form: the host follows the scheme
    target = scheme + sep + after.replace(old.encode(), new.encode(), 1)
    return b" ".join((method, target, version)) + crlf + rest, None


@harness.fuzz_target(
    "vault_request_heads",
    ci_examples=1000,
    setup=harness.quiet("clawgate.vault", "clawgate.vault.pinning"),
    head=request_heads(),
    group=st.sampled_from(sorted(GROUP_PORTS)),
)
def vault_request_heads(env: None, head: tuple[bytes, str | None, str | None], group: str) -> None:
    raw, tunnel, sni = head
    vault, flow = asyncio.run(_decide(raw, tunnel, sni, group))
    if flow is None:
        return
    addon, req = vault.addon, flow.request
    host, port = req.host.lower().rstrip("."), req.port
    secret = flow.metadata.get("clawgate.secret")
    carried = REAL in str(req.headers) or REAL in req.path
    if flow.response is not None:
        assert secret is None and not carried, "a refused request carries the credential"
        assert flow.response.status_code in (400, 403, 413, 421, 429, 502), flow.response.status_code
        assert REAL not in flow.response.get_text(strict=False)
        return
    assert addon.enforcer.policy.egress_allowed(group, host, port), (group, host, port)
    with contextlib.suppress(ValueError):  # a name: the table resolver decided on it above
        assert not ipaddress.ip_address(host).is_private or (host, port) in addon.allow
    assert carried == (secret is not None), (secret, carried)
    if secret is not None:
        info = next(i for i, _ in addon._secrets if i.name == secret)
        assert info.allows(group), (secret, group)
        assert any(host_matches(r.host, host, port) for r in info.effective_rules), (secret, host, port)
        assert req.scheme == "https", req.scheme
        # Pinned: nothing in the request names another upstream than the one that got the key.
        if sni:
            assert same_host(sni, host), (sni, host)
        for named in [*req.headers.get_all("host"), *([req.authority] if req.authority else [])]:
            assert parse_authority(named, req.scheme) == (canonical_host(host), port), (named, host, port)
    # The decision does not depend on how the host is spelled (ASCII case, a trailing dot).
    spelled = tunnel.rsplit(":", 1)[0] if tunnel is not None else req.host
    if not spelled or not spelled.isascii() or spelled.startswith("["):
        return
    for variant in {spelled.swapcase(), spelled.upper()} - {spelled}:
        raw2, tunnel2 = _respell(raw, tunnel, spelled, variant)
        _, other = asyncio.run(_decide(raw2, tunnel2, sni, group))
        assert _outcome(other) == _outcome(flow), (variant, _outcome(other), _outcome(flow))


def test_vault_host_parsing() -> None:
    harness.check("vault_host_parsing")


def test_vault_request_heads() -> None:
    harness.check("vault_request_heads")
