"""The dashboard's Vault page against a real gateway, its real vault process and a loopback upstream.

A secret added from the page is stored by the CLI's code (proxy/secret_ops.py), the running
vault reloads it and injects it into a request sent through the vault; rotate, scope and remove
work the same way; a bad form gets the CLI's own error. The audit log is filtered by the URL.
Every response — and the gateway's log — is scanned for the secret values, the login token and
the session id; a forged cross-site POST to the vault forms changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest
import yarl
from click.testing import CliRunner
from markupsafe import escape

from dashboard.auth import COOKIE
from gateway.app import Gateway
from proxy.cli import vault_cli
from proxy.secrets import SecretStore
from tests.fakes.model_server import FakeModelServer
from tests.integration.test_dashboard_security import Recorder, base, client_for, gateway, login
from tests.integration.test_gateway_docker import REAL_KEY

__all__ = ["gateway"]  # the fixture, shared with the security tests

DASH_VALUE = "dash-VALUE-7f3a9c1e5b"
ROTATED = "rotated-VALUE-0d4e8b2a6c"


def csrf_of(gw: Gateway) -> str:
    [csrf] = [s.csrf for s in gw.endpoints.dashboard_server.sessions._by_id.values()]  # type: ignore[union-attr]
    return csrf


async def through_vault(sock: Path, url: str, host: str) -> bytes:
    """A plain-HTTP request through the group's vault socket, as a sandbox sends it."""
    reader, writer = await asyncio.open_unix_connection(str(sock))
    writer.write(
        f"GET {url} HTTP/1.1\r\nHost: {host}\r\nX-Dash-Key: placeholder\r\nConnection: close\r\n\r\n".encode()
    )
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


def dash_headers(server: FakeModelServer, path: str) -> list[str]:
    return [
        v
        for r in server.requests
        if r.path == path
        for k, v in r.headers.items()
        if k.lower() == "x-dash-key"
    ]


async def page_until(rec: Recorder, client: aiohttp.ClientSession, path: str, text: str) -> str:
    """The page once it shows `text` (the audit log is flushed every half second)."""
    for _ in range(40):
        _, page = await rec.get(client, path)
        if text in page:
            return page
        await asyncio.sleep(0.25)
    raise AssertionError(f"{path} never showed {text!r}")


async def test_a_secret_added_on_the_page_is_injected_and_never_shown(
    gateway: Gateway, model_server: FakeModelServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    hp = model_server.host_port
    store = SecretStore(gateway.config_dir)
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        session_id = client.cookie_jar.filter_cookies(yarl.URL(base(gateway)))[COOKIE].value
        status, page = await rec.get(client, "/vault")
        assert status == 200 and 'id="secret-anthropic"' in page and "x-api-key" in page
        assert 'type="password" name="value"' in page
        assert "unscoped" in page and "rate_limit.per_group_per_minute" in page and hp in page
        csrf = csrf_of(gateway)
        own = {"Origin": base(gateway), "Sec-Fetch-Site": "same-origin"}

        # A bad form gets exactly the CLI's answer, and stores nothing.
        cli = CliRunner().invoke(vault_cli, ["add", "bad", "--host", "exa mple", "--from-env", "UNUSED"])
        assert cli.exit_code != 0
        cli_error = cli.output.strip().removeprefix("Error: ")
        form = {"csrf": csrf, "name": "bad", "value": DASH_VALUE, "host": "exa mple"}
        status, _ = await rec.post(client, "/vault/secrets", headers=own, data=form)
        assert status == 303
        _, page = await rec.get(client, "/vault")
        assert str(escape(cli_error)) in page and store.get("bad") is None

        form = {
            "csrf": csrf,
            "name": "dashkey",
            "value": DASH_VALUE,
            "host": hp,
            "path": "/dash/*",
            "methods": "GET",
            "header": "X-Dash-Key",
            "format": "{value}",
            "groups": "main",
        }
        status, body = await rec.post(client, "/vault/secrets", headers=own, data=form)
        assert status == 303 and DASH_VALUE not in body
        _, page = await rec.get(client, "/vault")
        assert "stored secret dashkey: " in page and "the running vault reloaded its secrets" in page
        assert 'id="secret-dashkey"' in page and "/dash/* [GET] set_header X-Dash-Key: {value}" in page
        info = store.get("dashkey")
        assert info is not None and info.groups == ("main",)

        # The running vault injects it: a request through the real vault carries the value.
        sock = gateway.data_dir / "t-vault.sock"
        await gateway.vault.open_group("main", sock)
        answer = await through_vault(sock, f"http://{hp}/dash/one", hp)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert dash_headers(model_server, "/dash/one") == [DASH_VALUE]
        refused = await through_vault(sock, "http://127.0.0.1:9/blocked", "127.0.0.1:9")
        assert refused.startswith(b"HTTP/1.1 4"), refused[:200]

        # The audit log, filtered: by host, by status, refused only, a group with no requests.
        page = await page_until(rec, client, "/vault", "/dash/one")
        page = await page_until(rec, client, "/vault?kind=refused", "/blocked")
        assert "/dash/one" not in page
        _, page = await rec.get(client, f"/vault?host={hp}&status=2xx")
        assert "/dash/one" in page and "dashkey" in page and "/blocked" not in page
        _, page = await rec.get(client, "/vault?group=nobody")
        assert 'id="no-audit"' in page and "/dash/one" not in page
        _, page = await rec.get(client, "/vault?status=abc")
        assert 'id="audit-note"' in page and "status: expected a code like 403" in page

        # Rotate: the next request carries the new value.
        data = {"csrf": csrf, "action": "rotate", "value": ROTATED}
        status, _ = await rec.post(client, "/vault/secrets/dashkey", headers=own, data=data)
        assert status == 303
        _, page = await rec.get(client, "/vault")
        assert "rotated secret dashkey" in page
        assert (await through_vault(sock, f"http://{hp}/dash/two", hp)).startswith(b"HTTP/1.1 200")
        assert dash_headers(model_server, "/dash/two") == [ROTATED]

        # Scope, with the CLI's validation; then remove: the vault stops injecting it.
        data = {"csrf": csrf, "action": "scope", "groups": "main, team"}
        await rec.post(client, "/vault/secrets/dashkey", headers=own, data=data)
        _, page = await rec.get(client, "/vault")
        assert "secret dashkey: groups main, team" in page
        data = {"csrf": csrf, "action": "scope", "groups": "no way"}
        await rec.post(client, "/vault/secrets/dashkey", headers=own, data=data)
        _, page = await rec.get(client, "/vault")
        assert "invalid group &#39;no way&#39;" in page
        info = store.get("dashkey")
        assert info is not None and info.groups == ("main", "team")
        status, _ = await rec.post(
            client, "/vault/secrets/dashkey", headers=own, data={"csrf": csrf, "action": "remove"}
        )
        assert status == 303 and store.get("dashkey") is None
        _, page = await rec.get(client, "/vault")
        assert "removed secret dashkey" in page and 'id="secret-dashkey"' not in page
        assert (await through_vault(sock, f"http://{hp}/dash/three", hp)).startswith(b"HTTP/1.1 200")
        assert dash_headers(model_server, "/dash/three") == ["placeholder"]
        status, _ = await rec.post(
            client, "/vault/secrets/dashkey", headers=own, data={"csrf": csrf, "action": "x"}
        )
        assert status == 400
    rec.assert_clean(REAL_KEY, DASH_VALUE, ROTATED, token, session_id)
    for secret in (DASH_VALUE, ROTATED, token):
        assert secret not in caplog.text


async def test_forged_posts_to_the_vault_forms_change_nothing(gateway: Gateway) -> None:
    store = SecretStore(gateway.config_dir)
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        csrf = csrf_of(gateway)
        own, evil = base(gateway), "https://evil.example"
        add = {"name": "planted", "value": DASH_VALUE, "host": "evil.example", "groups": "*"}
        forged = [
            ({"Origin": evil, "Sec-Fetch-Site": "cross-site"}, add),
            ({"Origin": evil, "Sec-Fetch-Site": "cross-site"}, {**add, "csrf": csrf}),
            ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, add),
            ({"Origin": own, "Sec-Fetch-Site": "same-origin"}, {**add, "csrf": "x" * 43}),
        ]
        for headers, form in forged:
            status, body = await rec.post(client, "/vault/secrets", headers=headers, data=form)
            assert status == 403 and "Refused" in body, headers
            for action in ("remove", "rotate", "scope"):
                change = {**form, "action": action, "groups": "*"}
                status, _ = await rec.post(client, "/vault/secrets/anthropic", headers=headers, data=change)
                assert status == 403
        assert store.get("planted") is None
        info = store.get("anthropic")
        assert info is not None and info.groups == ("main",)
        assert [v for i, v in store.load_all() if i.name == "anthropic"] == [REAL_KEY]
    rec.assert_clean(REAL_KEY, DASH_VALUE, token)


async def test_the_audit_log_pages_newest_first(gateway: Gateway, model_server: FakeModelServer) -> None:
    hp = model_server.host_port
    sock = gateway.data_dir / "t-vault.sock"
    await gateway.vault.open_group("pager", sock)
    for i in range(55):
        answer = await through_vault(sock, f"http://{hp}/page/{i:02d}", hp)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        first = await page_until(rec, client, "/vault?group=pager", "/page/54")
        assert first.count('class="audit-row"') == 50 and "/page/05" in first and "/page/04" not in first
        assert first.index("/page/54") < first.index("/page/05")  # newest first
        assert 'id="newer"' not in first
        assert 'id="older" href="/vault?group=pager&amp;offset=50#audit-log"' in first
        _, older = await rec.get(client, "/vault?group=pager&offset=50")
        assert older.count('class="audit-row"') == 5 and "/page/04" in older and "/page/05" not in older
        assert (
            'id="older"' not in older
            and 'id="newer" href="/vault?group=pager&amp;offset=0#audit-log"' in older
        )
        _, page = await rec.get(client, "/vault?group=pager&offset=nonsense")
        assert page.count('class="audit-row"') == 50  # a bad offset is the first page
    rec.assert_clean(REAL_KEY, token)


async def test_a_call_the_vault_could_not_meter_is_listed_under_spent_unmetered(
    gateway: Gateway, model_server: FakeModelServer
) -> None:
    """No budget applies, so a batch creation goes through; the audit log and the page say it
    was not metered, and the "spent unmetered" filter finds it and nothing else."""
    hp = model_server.host_port
    sock = gateway.data_dir / "u-vault.sock"
    await gateway.vault.open_group("batcher", sock)
    assert (await through_vault(sock, f"http://{hp}/plain", hp)).startswith(b"HTTP/1.1 200")
    reader, writer = await asyncio.open_unix_connection(str(sock))
    body = b'{"input_file_id":"file-1","endpoint":"/v1/chat/completions","completion_window":"24h"}'
    writer.write(
        f"POST http://{hp}/v1/batches HTTP/1.1\r\nHost: {hp}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    try:
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()
    assert not answer.startswith(b"HTTP/1.1 403"), answer[:300]  # no budget: not refused
    rec = Recorder()
    async with client_for(gateway) as client:
        token = await login(rec, client, gateway.data_dir)
        page = await page_until(rec, client, "/vault?group=batcher&kind=unmetered", "/v1/batches")
        assert page.count('class="audit-row"') == 1 and "/plain" not in page
        assert "unmetered: " in page and 'value="unmetered" selected' in page
        everything = await page_until(rec, client, "/vault?group=batcher", "/plain")
        assert everything.count('class="audit-row"') == 2
    rec.assert_clean(REAL_KEY, token)
