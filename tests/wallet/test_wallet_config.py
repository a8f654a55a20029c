"""Wallet configuration checks: `clawgate doctor`'s wallet line and cross-section config rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway import doctor
from gateway.config import Config
from gateway.wallet.keystore import KEYS_FILE, KeyStore


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(tmp_path))
    return tmp_path


def with_key_groups(groups: dict[str, list[str]]) -> Config:
    return Config.model_validate({"wallet": {"policy": {"key_groups": groups}}})


def test_no_keys_is_fine(config_dir: Path) -> None:
    assert doctor._wallet(Config())


def test_keys_are_checked_for_mode_and_names(config_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    KeyStore(config_dir).generate("hot", network="testnet")
    assert doctor._wallet(with_key_groups({"hot": ["main", "team"]}))
    assert not doctor._wallet(with_key_groups({"hott": ["team"]}))
    assert "hott" in capsys.readouterr().out
    os.chmod(config_dir / KEYS_FILE, 0o644)
    assert not doctor._wallet(Config())
    assert f"chmod 600 {config_dir / KEYS_FILE}" in capsys.readouterr().out


def test_an_approval_that_outlasts_the_agent_turn_is_a_config_error() -> None:
    from gateway.config import ConfigError, parse

    with pytest.raises(ConfigError, match="must be shorter than sandbox.turn_timeout_s"):
        parse("[wallet]\napproval_timeout_s = 1000\n", Path("config.toml"))
    assert parse("[wallet]\napproval_timeout_s = 899\n", Path("config.toml")).wallet.approval_timeout_s == 899
