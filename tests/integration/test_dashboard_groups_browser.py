"""The Groups page in a real browser: Debian's headless Chromium driven by Selenium.

A real Gateway (Docker sandbox, vault process, SQLite) with `[dashboard]` on. The browser logs in
with a link from `clawgate dashboard url`'s code, registers a group by filling in and submitting
the page's form (no script involved: a plain POST with the form's token), sees the chat's answer
as the flash and the group's card, sets the group's budget from its card (shown with the shared
global one), and leaves a screenshot `groups` for a reviewer. Without
chromium, chromedriver or selenium the test skips — unless `CLAWGATE_REQUIRE_BROWSER=1` (CI).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dashboard.auth import mint_login
from gateway.app import Gateway
from tests.integration.browser_support import Browser
from tests.integration.test_dashboard_security import gateway

__all__ = ["gateway"]  # the fixture, shared with the security tests


async def test_register_a_group_from_the_browser(gateway: Gateway, driver: Any, artifacts: Path) -> None:
    server = gateway.endpoints.dashboard_server
    assert server is not None and server.port
    browser = Browser(driver, f"http://127.0.0.1:{server.port}", artifacts)

    await browser.get(f"/login?t={mint_login(gateway.data_dir, 'console:owner')}")
    assert await browser.text("h1") == "Overview"
    await browser.click('nav a[href="/groups"]')
    await browser.wait_url("/groups")
    assert await browser.text("h1") == "Groups"
    assert "main" in await browser.text("#group-main h3")

    await browser.type('#register-group input[name="chat_id"]', "tg:-1009876")
    await browser.type('#register-group input[name="name"]', "team")
    await browser.type('#register-group input[name="trigger"]', "@Bob")
    await browser.type('#register-group input[name="members"]', "tg:101,tg:102")
    await browser.click('#register-group button[type="submit"]')

    said = "registered team for tg:-1009876 (trigger @Bob, senders members: tg:101, tg:102)"
    assert said in await browser.wait_text(".flash", "registered team")
    assert "tg:-1009876" in await browser.wait_text("#group-team h3", "team")
    assert "@Bob" in await browser.text("#group-team .trigger")
    assert "tg:101 allowed" in await browser.text("#group-team .senders")
    group = gateway.registry.by_folder("team")
    assert group is not None and group.chat_id == "tg:-1009876" and group.senders == "members"
    assert [g.folder for g in await gateway.store.groups() if g.folder == "team"] == ["team"]

    # A budget of its own from the card's form (/budget set team daily 2), under a global one:
    # the card shows both in /budget's words, the global one marked as shared by all groups.
    await gateway.store.set_budget_override("global", "monthly_tokens", 100_000, "console:owner")
    await browser.type('#group-team .budget-form input[name="amount"]', "2")
    await browser.click("#group-team .budget-form button")
    assert "budget set: team daily: $2.00" in await browser.wait_text(".flash", "budget set")
    assert "daily $2.00 (used $0.00, 0%)" in await browser.text("#group-team .budget .own")
    shared = "monthly-tokens 100,000 tokens (used 0 tokens, 0%) for "
    for folder in ("team", "main"):
        line = await browser.text(f"#group-{folder} .budget .shared")
        assert shared in line and "· shared by all groups (global) · this group: 0 tokens" in line, line
    await browser.screenshot("groups")

    # A bad registration from the same form: the chat's answer, and no new card.
    await browser.type('#register-group input[name="chat_id"]', "tg:-1001111")
    await browser.type('#register-group input[name="name"]', "Bad/Name")
    await browser.type('#register-group input[name="trigger"]', "")
    await browser.type('#register-group input[name="members"]', "")
    await browser.click('#register-group button[type="submit"]')
    assert "invalid group folder" in await browser.wait_text(".flash", "usage: /register")
    assert {g.folder for g in await gateway.store.groups()} == {"main", "team"}
