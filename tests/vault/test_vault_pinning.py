"""How proxy/pinning.py compares the names a request carries with the decided upstream.

Real mitmproxy flow objects (mitmproxy.test.tflow); the end-to-end attacks through the vault
process are in test_vault_pinning_e2e.py.
"""

from __future__ import annotations

import pytest
from mitmproxy import connection
from mitmproxy.proxy import server_hooks
from mitmproxy.test import tflow

from proxy.pinning import PinAddon, canonical_host, mismatch, parse_authority


def flow(scheme: str = "https", host_header: str | None = None, authority: str = "", sni: str | None = None):  # type: ignore[no-untyped-def]
    f = tflow.tflow()
    f.request.scheme = scheme
    f.request.data.host, f.request.data.port = "api.example.com", 443 if scheme == "https" else 80
    f.request.authority = authority
    f.request.headers.clear()
    if host_header is not None:
        f.request.headers["Host"] = host_header
    f.client_conn.sni = sni
    return f


def test_canonical_host() -> None:
    assert canonical_host("API.Example.COM.") == "api.example.com"
    assert canonical_host("[::FFFF:7f00:1]") == "::ffff:127.0.0.1"
    assert canonical_host("bücher.example") == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("value", "scheme", "expected"),
    [
        ("api.x.com", "https", ("api.x.com", 443)),
        ("API.x.com:443", "https", ("api.x.com", 443)),
        ("api.x.com", "http", ("api.x.com", 80)),
        ("api.x.com:8443", "https", ("api.x.com", 8443)),
        ("[2001:db8::1]:8443", "https", ("2001:db8::1", 8443)),
    ],
)
def test_parse_authority_fills_in_the_default_port(
    value: str, scheme: str, expected: tuple[str, int]
) -> None:
    assert parse_authority(value, scheme) == expected


@pytest.mark.parametrize(
    "host", ["api.example.com", "API.EXAMPLE.COM", "api.example.com:443", "api.example.com.:443"]
)
def test_same_host_and_port_spelled_differently_is_accepted(host: str) -> None:
    assert mismatch(flow(host_header=host), ("api.example.com", 443)) is None
    assert mismatch(flow(authority=host), ("api.example.com", 443)) is None


@pytest.mark.parametrize(
    "host", ["api.example.com:8443", "evil.example", "api.example.com.evil.example", "api.example.com:80"]
)
def test_another_host_or_port_is_refused(host: str) -> None:
    found = mismatch(flow(host_header=host), ("api.example.com", 443))
    assert found is not None and found[0] == 421 and "Host header" in found[1]
    found = mismatch(flow(authority=host), ("api.example.com", 443))
    assert found is not None and found[0] == 421


def test_plain_http_default_port_is_80() -> None:
    assert mismatch(flow("http", host_header="api.example.com"), ("api.example.com", 80)) is None
    assert mismatch(flow("http", host_header="api.example.com:443"), ("api.example.com", 80)) is not None


def test_sni_must_name_the_target() -> None:
    assert mismatch(flow(sni="API.example.com"), ("api.example.com", 443)) is None
    found = mismatch(flow(sni="evil.example"), ("api.example.com", 443))
    assert found is not None and found[0] == 421 and "SNI" in found[1]


@pytest.mark.parametrize("host", ["user@api.example.com", "api.example.com:99999", "api example.com", ""])
def test_malformed_host_is_a_400(host: str) -> None:
    found = mismatch(flow(host_header=host), ("api.example.com", 443))
    assert found is not None and found[0] == 400


def test_two_host_headers_are_a_400() -> None:
    f = flow(host_header="api.example.com")
    f.request.headers.add("Host", "evil.example")
    assert mismatch(f, ("api.example.com", 443)) == (400, "more than one Host header")


@pytest.mark.parametrize("path", ["https://evil.example/x", "evil.example/x", "//evil.example/x"])
def test_a_path_that_is_not_a_path_is_refused(path: str) -> None:
    f = flow(host_header="api.example.com")
    f.request.path = path
    found = mismatch(f, ("api.example.com", 443))
    if path.startswith("//"):
        assert found is None  # a path on the requested host, however odd
    else:
        assert found is not None and found[0] == 421


def test_options_star_is_a_path() -> None:
    f = flow(host_header="api.example.com")
    f.request.method, f.request.path = "OPTIONS", "*"
    assert mismatch(f, ("api.example.com", 443)) is None


def _server_connect(client_sni: str | None, address: tuple[str, int]) -> connection.Server:
    client = connection.Client(peername=("127.0.0.1", 5555), sockname=("127.0.0.1", 8080))
    client.sni = client_sni
    server = connection.Server(address=address)
    server.sni = client_sni  # what mitmproxy would have copied from the client
    PinAddon(lambda c: "main").server_connect(
        server_hooks.ServerConnectionHookData(client=client, server=server)
    )
    return server


def test_upstream_tls_name_is_the_decided_host_not_the_clients() -> None:
    server = _server_connect(None, ("API.Example.com", 443))
    assert server.sni == "api.example.com" and server.error is None
    server = _server_connect("api.example.com", ("api.example.com", 443))
    assert server.sni == "api.example.com" and server.error is None


def test_server_connection_for_a_client_naming_another_host_is_refused() -> None:
    server = _server_connect("evil.example", ("api.example.com", 443))
    assert server.error is not None and "evil.example" in server.error
