"""`clawgate doctor`'s wallet line: optional, but a present key file must be private and named right."""

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
