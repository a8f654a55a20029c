"""Fixtures shared by the integration tests: the real headless browser (browser_support)."""

from tests.integration.browser_support import artifacts, driver

__all__ = ["artifacts", "driver"]
