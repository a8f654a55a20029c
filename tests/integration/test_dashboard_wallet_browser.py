"""The Wallet page in a real browser (Debian's headless Chromium, Selenium): the page a reviewer
sees (screenshot `wallet`), a hostile request text that stays text in the DOM, and the filter form.

The gateway is the wallet test set-up with `[dashboard]` on (tests/integration/wallet_support.py);
one transfer is signed by the policy alone (under the auto-approve limit) and one NEP-413 request
with a script for a message and an `<img>` for a recipient is denied with the chat button.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.auth import mint_login
from gateway.wallet.keystore import KeyStore
from tests.integration.browser_support import Browser
from tests.integration.test_dashboard_wallet import DASHBOARD, TEAM_CALLER, owner_decides
from tests.integration.wallet_support import KEY_NAME, RECEIVER, SecretForms, WalletEnv, wallet_gateway


@pytest.fixture
async def env(dirs, model_server, sandbox_image, docker_client) -> AsyncIterator[WalletEnv]:  # type: ignore[no-untyped-def]
    async with wallet_gateway(dirs, model_server, sandbox_image, extra_toml=DASHBOARD) as wallet_env:
        yield wallet_env


async def test_the_wallet_page_in_a_browser(env: WalletEnv, driver: Any, artifacts: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    signed = await env.gw.wallet.handle(
        TEAM_CALLER, "near_transfer", {"receiver_id": RECEIVER, "amount": "0.5"}
    )
    tx_hash = signed["transaction_hash"]
    assert [r["hash"] for r in env.near.received] == [tx_hash]
    await owner_decides(
        env,
        {"message": "<script>document.title='owned'</script>", "recipient": "<img src=x id=injected>"},
        "near_sign_message",
        "d",
    )
    [message, transfer] = await env.gw.store.wallet_requests()

    server = env.gw.endpoints.dashboard_server
    assert server is not None and server.port
    browser = Browser(driver, f"http://127.0.0.1:{server.port}", artifacts)
    await browser.get(f"/login?t={mint_login(env.data_dir, 'console:owner')}")
    await browser.get("/wallet")
    assert await browser.text("h1") == "Wallet"
    assert await browser.text("nav a[aria-current=page]") == "Wallet"
    key = await browser.text(f"#key-{KEY_NAME}")
    assert str(env.key.public_key) in key and "999.5 NEAR" in key
    row = await browser.text(f"#request-{transfer.id}")
    assert tx_hash in row and "submitted" in row and "auto_approve" in row
    hostile = await browser.text(f"#request-{message.id}")
    assert "<script>document.title='owned'</script>" in hostile and "<img src=x id=injected>" in hostile
    # It stayed text: no element was made of it, no script ran.
    assert (
        await browser.run(lambda: driver.find_elements(By.CSS_SELECTOR, "#injected, main script, main img"))
        == []
    )
    assert await browser.run(lambda: driver.title) == "Wallet · clawgate"
    await browser.screenshot("wallet")

    # The filter form: only the submitted transfer, and the URL says so (a link to share or reload).
    def state() -> Any:
        return Select(driver.find_element(By.CSS_SELECTOR, "#wallet-filter [name=state]"))

    def listed() -> list[str]:
        return [
            e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, "#requests tr.request-row")
        ]

    await browser.run(lambda: state().select_by_value("submitted"))
    await browser.click("#wallet-filter button[type=submit]")
    await browser.wait_url("state=submitted")
    assert await browser.run(listed) == [f"request-{transfer.id}"]
    assert await browser.run(lambda: state().first_selected_option.text) == "submitted"

    with KeyStore(env.config_dir).signer(KEY_NAME) as pair:
        forms = SecretForms.of(pair.export_secret())
    assert forms.find(str(await browser.run(lambda: driver.page_source))) == []
