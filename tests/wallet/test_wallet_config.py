"""Wallet configuration checks: `clawgate doctor`'s wallet line and cross-section config rules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config import Config
from gateway import doctor
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
    from core.config import ConfigError, parse

    with pytest.raises(ConfigError, match="must be shorter than sandbox.turn_timeout_s"):
        parse("[wallet]\napproval_timeout_s = 1000\n", Path("config.toml"))
    assert parse("[wallet]\napproval_timeout_s = 899\n", Path("config.toml")).wallet.approval_timeout_s == 899


def test_the_readme_wallet_example_is_valid_and_bounds_its_token_transfers() -> None:
    """The README's `[wallet]` example parses, and its auto-approved ft_transfer has token limits."""
    import re

    from core.config import parse

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if b.startswith("[wallet]")]
    policy = parse(block, Path("config.toml")).wallet.policy
    auto_token_rules = [r for r in policy.function_calls if r.auto_approve and "ft_transfer" in r.methods]
    assert auto_token_rules, "the example no longer shows an auto-approved token transfer"
    for rule in auto_token_rules:
        limit = policy.token_limits[rule.receiver]
        assert 0 < limit.auto_max <= limit.daily_limit


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ('"usdc.testnet" = { daily_limit = "1.5" }', "no decimal point"),
        ('"usdc.testnet" = { daily_limit = 1.5 }', "whole base units"),
        ('"usdc.testnet" = { daily_limit = "-1" }', "no decimal point"),
        ('"usdc.testnet" = { daily_limit = "340282366920938463463374607431768211456" }', "exceeds u128"),
        ('"usdc.testnet" = { daily = "1" }', "daily"),
        ('"USDC" = { daily_limit = "1" }', "invalid NEAR account id"),
        ('"usdc.testnet" = { }', "daily_limit"),
    ],
)
def test_token_limits_are_validated_like_the_rest_of_the_config(limits: str, message: str) -> None:
    from core.config import ConfigError, parse

    with pytest.raises(ConfigError, match=message):
        parse(f"[wallet.policy.token_limits]\n{limits}\n", Path("config.toml"))


def test_token_limits_parse_to_exact_base_units() -> None:
    from core.config import parse

    u128_max = "340282366920938463463374607431768211455"
    text = f'[wallet.policy.token_limits]\n"usdc.testnet" = {{ daily_limit = "{u128_max}" }}\n'
    limit = parse(text, Path("config.toml")).wallet.policy.token_limits["usdc.testnet"]
    assert limit.daily_limit == 2**128 - 1 and limit.auto_max == limit.daily_limit
