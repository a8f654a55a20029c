"""The dashboard in a real browser: Debian's headless Chromium driven by Selenium.

A real Gateway (Docker sandbox with the real agent, vault process, SQLite) whose main chat is a
Telegram supergroup on the fake Bot API and whose wallet talks to a fake NEAR node on loopback
(the set-up of tests/integration/test_wallet_telegram.py), with `[dashboard]` on. The browser
logs in with a link from the same code as `clawgate dashboard url`, watches a team message
arrive on the overview without a reload, approves a NEAR transfer the team's agent asked for,
sees a second attempt (a stale dashboard tab and the chat button) change nothing, retries a
dead letter, pauses a task, adds a vault secret and filters the audit log.

Selenium is synchronous and the gateway serves the browser from this test's event loop, so
every browser call runs in a worker thread (`Browser`). Screenshots of each page go to
`CLAWGATE_ARTIFACTS` (default: the test's tmp dir). Without chromium, chromedriver or selenium
the test skips — unless `CLAWGATE_REQUIRE_BROWSER=1` (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.models import InboundMessage
from dashboard.auth import mint_login
from gateway.wallet.keystore import KeyStore
from proxy import audit_pages
from proxy.secrets import SecretStore
from tests.integration.browser_support import Browser
from tests.integration.test_dashboard_vault import DASH_VALUE, dash_headers, through_vault
from tests.integration.test_wallet_telegram import AGENT_TIMEOUT
from tests.integration.wallet_support import (
    ADMIN,
    KEY_NAME,
    MAIN,
    RECEIVER,
    TEAM,
    YOCTO,
    SecretForms,
    WalletEnv,
    wallet_gateway,
)

DASHBOARD = "[dashboard]\nenabled = true\nport = 0\n"


def env_message(text: str) -> InboundMessage:
    """A team message as the Telegram channel would have stored it."""
    return InboundMessage(
        f"tg:{TEAM}", f"dl-{time.time_ns()}", "tg:6161", "Bob", text, time.time(), "telegram"
    )


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[WalletEnv]:  # type: ignore[no-untyped-def]
    async with wallet_gateway(dirs, model_server, sandbox_image, extra_toml=DASHBOARD) as wallet_env:
        yield wallet_env


async def test_login_live_feed_and_a_near_approval_from_the_browser(
    env: WalletEnv, driver: Any, artifacts: Path
) -> None:
    server = env.gw.endpoints.dashboard_server
    assert server is not None and server.port
    browser = Browser(driver, f"http://127.0.0.1:{server.port}", artifacts)

    # Without a session: nothing but the way to get one.
    await browser.get("/")
    assert "Not logged in" in await browser.text("h1")
    await browser.screenshot("0-signed-out")

    # The login link works once; the session sees the overview.
    token = mint_login(env.data_dir, "console:owner")
    await browser.get(f"/login?t={token}")
    assert await browser.text("h1") == "Overview"
    assert "telegram" in await browser.text("#channels") and "connected" in await browser.text("#channels")
    assert "up" in await browser.text("#state")

    # A team message appears on the open page, pushed by the server (no reload).
    env.say_in_team("hello dashboard, from the team")
    line = await browser.wait_text("#feed li", "hello dashboard, from the team")
    assert "team" in line
    await browser.screenshot("1-overview")

    # The team's agent asks for 25 NEAR: the prompt is in the main chat and on the dashboard.
    env.say_in_team(f"@Andy send 25 NEAR to {RECEIVER}")
    prompt, approval_id, _ = await env.prompt(0, AGENT_TIMEOUT)
    await browser.get("/")  # a reload lists the team's live sandbox (it waits for the decision)
    row = await browser.wait_text("#sandboxes tr", "team")
    assert "docker" in row and "runc" in row
    await browser.get("/approvals")
    title = await browser.text(f"#approval-{approval_id} h3")
    assert f"25 NEAR → {RECEIVER}" in title
    await browser.screenshot("2-approvals-pending")

    # A second tab keeps the pending page for the second attempt below.
    first = driver.current_window_handle
    await browser.run(driver.switch_to.new_window, "tab")
    stale = driver.current_window_handle
    await browser.get("/approvals")
    await browser.run(driver.switch_to.window, first)

    # Approve from the dashboard: exactly one transaction, the chat prompt edited.
    await browser.click(f"#approval-{approval_id} button.approve")
    flash = await browser.wait_text(".flash", "Approved")
    assert flash.startswith("Approved: NEAR request #")
    assert await asyncio.to_thread(env.near.wait_for_submissions, 1, 30)
    [signed] = env.near.submitted
    assert env.near.balance(RECEIVER) == 25 * YOCTO
    edited = await env.edited(prompt)
    assert "Approved by console:owner" in edited
    await env.text_in(MAIN, f"Transaction: {signed.hash}")
    history = await browser.text("#history")
    assert "approved" in history and "console:owner" in history
    await browser.screenshot("3-approvals-decided")

    # A second attempt changes nothing: the stale tab's Approve, then the chat's button.
    await browser.run(driver.switch_to.window, stale)
    await browser.click(f"#approval-{approval_id} button.approve")
    again = await browser.wait_text(".flash", "already decided")
    assert again.startswith("already decided: approved by console:owner")
    toast = await env.click(prompt, f"ap:{approval_id}:a", ADMIN)
    assert toast.startswith("already decided: approved")
    await asyncio.sleep(0.5)
    assert len(env.near.submitted) == 1
    assert [r["hash"] for r in env.near.received] == [signed.hash]
    await browser.screenshot("4-second-attempt")

    # A dead letter of the team is retried from the dashboard: its message reaches the model again.
    team = env.gw.registry.by_folder("team")
    assert team is not None
    stuck = "@Andy this one failed for good"
    await env.gw.store.ingest(env_message(stuck), "pending")
    letter = await env.gw.store.dead_letter_pending(team, "test: retries used up")
    await browser.run(driver.switch_to.window, first)
    await browser.get("/dead-letters")
    assert "test: retries used up" in await browser.text(f"#letter-{letter}")
    await browser.screenshot("5-dead-letters")
    await browser.click(f"#letter-{letter} button.approve")
    assert (await browser.wait_text(".flash", "queued again")) == f"dead letter #{letter} queued again"
    assert await env.gw.store.dead_letter(letter) is None
    await env.model_saw("this one failed for good", AGENT_TIMEOUT)

    # A team task is paused from the Tasks page.
    task = await env.gw.scheduler.schedule("team", "daily report", every_s=86400, created_by="console:owner")
    await browser.get("/tasks")
    await browser.click(f"#task-{task['id']} button[value=pause]")
    assert (await browser.wait_text(".flash", "paused")) == f"task {task['id']}: paused"
    stored = await env.gw.store.task(int(task["id"]))
    assert stored is not None and stored.status == "paused"
    await browser.screenshot("6-tasks")
    await browser.get("/spend")
    assert "team" in await browser.text("#month")  # the team's metered model calls this month
    await browser.screenshot("7-spend")

    from selenium.webdriver.common.by import By

    # The Vault page: a secret is added from the form; the page names it, never shows the value,
    # and the running vault injects it into a request sent through it.
    await browser.get("/vault")
    hp = env.model.host_port
    for field, text in (
        ("name", "dashkey"),
        ("value", DASH_VALUE),
        ("host", hp),
        ("path", "/dash/*"),
        ("header", "X-Dash-Key"),
        ("format", "{value}"),
        ("groups", "vaulttest"),
    ):
        await browser.type(f"#add-secret [name={field}]", text)
    assert (
        await browser.run(
            lambda: driver.find_element(By.CSS_SELECTOR, "#add-secret [name=value]").get_attribute("type")
        )
        == "password"
    )
    await browser.click("#add-secret button[type=submit]")
    assert (await browser.wait_text(".flash", "stored secret dashkey")).startswith("stored secret dashkey: ")
    assert "vaulttest" in await browser.text("#secret-dashkey")
    info = SecretStore(env.config_dir).get("dashkey")
    assert info is not None and info.groups == ("vaulttest",)
    await browser.screenshot("8-vault-added")
    sock = env.data_dir / "t-vault.sock"
    await env.gw.vault.open_group("vaulttest", sock)
    answer = await through_vault(sock, f"http://{hp}/dash/browser", hp)
    assert answer.startswith(b"HTTP/1.1 200") and dash_headers(env.model, "/dash/browser") == [DASH_VALUE]

    # The audit log filtered by group: only that group's request is listed (once the vault has
    # flushed its line, every half second).
    for _ in range(40):
        logged = await asyncio.to_thread(
            audit_pages.page, env.data_dir / "vault", audit_pages.AuditFilter(group="vaulttest")
        )
        if logged.entries:
            break
        await asyncio.sleep(0.25)
    await browser.type("#audit-filter [name=group]", "vaulttest")
    await browser.click("#audit-filter button[type=submit]")
    await browser.wait_url("group=vaulttest")  # the unfiltered page being left lists that row too
    row = await browser.wait_text("#audit tr.audit-row", "/dash/browser")
    assert "dashkey" in row and "200" in row
    groups = await browser.run(
        lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#audit tr.audit-row td:nth-child(2)")]
    )
    assert groups == ["vaulttest"]
    await browser.screenshot("9-vault-audit-filtered")

    # No page showed the login token, the vault secret's value or the wallet's private key, in any spelling.
    with KeyStore(env.config_dir).signer(KEY_NAME) as pair:
        forms = SecretForms.of(pair.export_secret())
    for page in ("/", "/approvals", "/dead-letters", "/tasks", "/spend", "/vault", "/wallet"):
        await browser.get(page)
        source = str(await browser.run(lambda: driver.page_source))
        assert token not in source and DASH_VALUE not in source
        assert forms.find(source) == [], page
    # Other pages' browser tests may share CLAWGATE_ARTIFACTS: this test's shots are all there.
    assert set(p.name for p in await asyncio.to_thread(lambda: list(artifacts.iterdir()))) >= {
        "0-signed-out.png",
        "1-overview.png",
        "2-approvals-pending.png",
        "3-approvals-decided.png",
        "4-second-attempt.png",
        "5-dead-letters.png",
        "6-tasks.png",
        "7-spend.png",
        "8-vault-added.png",
        "9-vault-audit-filtered.png",
    }
