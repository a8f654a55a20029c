"""The `[telegram]` config section: token from the environment, never shown, required when enabled."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, parse


def test_token_from_env_is_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLAWGATE_TELEGRAM_TOKEN", "42:very-secret")
    config = parse('[telegram]\nenabled = true\nbase_url = "http://127.0.0.1:8081/"\n', Path("c.toml"))
    assert config.telegram.token is not None and config.telegram.token.get_secret_value() == "42:very-secret"
    assert config.telegram.base_url == "http://127.0.0.1:8081"
    assert "very-secret" not in repr(config) and "very-secret" not in str(config.telegram)


def test_enabled_without_token_or_with_bad_values_is_fatal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CLAWGATE_TELEGRAM_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="telegram.token is required"):
        parse("[telegram]\nenabled = true\n", Path("c.toml"))
    with pytest.raises(ConfigError, match="telegram.mode"):
        parse('[telegram]\nmode = "push"\n', Path("c.toml"))
    with pytest.raises(ConfigError, match="webhook_url is required"):
        parse('[telegram]\nenabled = true\ntoken = "1:a"\nmode = "webhook"\n', Path("c.toml"))
    assert parse("", Path("c.toml")).telegram.enabled is False
