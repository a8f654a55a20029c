"""A real headless Chromium for the dashboard's browser tests, driven by Selenium.

Debian's `chromium` and `chromium-driver`, started with explicit paths so Selenium Manager has
nothing to look up or download. Selenium is synchronous and the gateway under test serves the
browser from the test's own event loop, so every browser call runs in a worker thread
(`Browser`). Screenshots go to `CLAWGATE_ARTIFACTS` (default: the test's tmp dir) for a
reviewer. Without chromium, chromedriver or selenium the tests skip — unless
`CLAWGATE_REQUIRE_BROWSER=1` (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)


def _missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[dev]')"
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(os.path.basename(path))):
            return f"{path} is missing (Debian: apt-get install chromium chromium-driver)"
    return None


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    where = Path(os.environ.get("CLAWGATE_ARTIFACTS") or tmp_path / "artifacts") / "dashboard"
    where.mkdir(parents=True, exist_ok=True)
    return where


@pytest.fixture
def driver() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CLAWGATE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CLAWGATE_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="clawgate-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    # An explicit driver and browser: Selenium Manager has nothing to look up or download.
    service = Service(executable_path=shutil.which("chromedriver") or CHROMEDRIVER)
    browser = webdriver.Chrome(service=service, options=options)
    try:
        yield browser
    finally:
        browser.quit()
        shutil.rmtree(profile, ignore_errors=True)


class Browser:
    """The Selenium driver, each call in a thread so the gateway's loop keeps serving pages."""

    def __init__(self, driver: Any, base: str, artifacts: Path) -> None:
        self.driver = driver
        self.base = base
        self.artifacts = artifacts

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def get(self, path: str) -> None:
        await self.run(self.driver.get, self.base + path)

    async def text(self, css: str) -> str:
        from selenium.webdriver.common.by import By

        return str(await self.run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).text))

    async def click(self, css: str) -> None:
        from selenium.webdriver.common.by import By

        await self.run(lambda: self.driver.find_element(By.CSS_SELECTOR, css).click())

    async def type(self, css: str, text: str) -> None:
        from selenium.webdriver.common.by import By

        def typed() -> None:
            field = self.driver.find_element(By.CSS_SELECTOR, css)
            field.clear()
            field.send_keys(text)

        await self.run(typed)

    async def wait_text(self, css: str, needle: str, timeout: float = 30) -> str:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        def found(d: Any) -> str | bool:
            texts = [e.text for e in d.find_elements(By.CSS_SELECTOR, css)]
            return next((t for t in texts if needle in t), False)

        from selenium.common.exceptions import StaleElementReferenceException, TimeoutException

        # A click that submits a form navigates while we look: elements of the page being left go
        # stale between find and read, and the wait goes on with the new page.
        wait = WebDriverWait(self.driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
        try:
            return str(await self.run(lambda: wait.until(found)))
        except TimeoutException:
            body = await self.run(lambda: self.driver.find_element(By.TAG_NAME, "body").text)
            raise AssertionError(f"no {css} with {needle!r} on {self.driver.current_url}:\n{body}") from None

    async def wait_url(self, fragment: str, timeout: float = 30) -> None:
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(self.driver, timeout)
        await self.run(lambda: wait.until(lambda d: fragment in d.current_url))

    async def screenshot(self, name: str) -> None:
        path = self.artifacts / f"{name}.png"
        assert await self.run(self.driver.save_screenshot, str(path)), path
        assert path.stat().st_size > 1000
