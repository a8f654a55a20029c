"""`clawgate vault` CLI: values come from stdin/env/prompt, never appear in output."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from proxy.cli import vault_cli
from proxy.secrets import SecretStore

VALUE = "sk-REAL-cli-value-987654321"


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "config"
    monkeypatch.setenv("CLAWGATE_CONFIG_DIR", str(d))
    return d


def test_add_from_stdin_and_list(cfg: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        vault_cli,
        ["add", "anthropic", "--host", "api.anthropic.com", "--preset", "anthropic"],
        input=VALUE + "\n",
    )
    assert r.exit_code == 0, r.output
    assert VALUE not in r.output
    ((info, value),) = SecretStore(cfg).load_all()
    assert value == VALUE  # exactly one trailing newline stripped
    assert (info.header, info.format) == ("x-api-key", "{value}")

    r = runner.invoke(vault_cli, ["list"])
    assert r.exit_code == 0
    assert "anthropic" in r.output and "api.anthropic.com" in r.output and "x-api-key" in r.output
    assert VALUE not in r.output


def test_openai_preset_and_defaults(cfg: Path) -> None:
    runner = CliRunner()
    assert (
        runner.invoke(
            vault_cli, ["add", "oa", "--host", "api.openai.com", "--preset", "openai"], input="k1"
        ).exit_code
        == 0
    )
    assert (
        runner.invoke(
            vault_cli,
            ["add", "custom", "--host", "x.example", "--header", "X-Token", "--format", "tok {value}"],
            input="k2",
        ).exit_code
        == 0
    )
    got = {i.name: (i.header, i.format, v) for i, v in SecretStore(cfg).load_all()}
    assert got["oa"] == ("Authorization", "Bearer {value}", "k1")
    assert got["custom"] == ("X-Token", "tok {value}", "k2")


def test_from_env(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", VALUE)
    r = CliRunner().invoke(vault_cli, ["add", "k", "--host", "example.com", "--from-env", "MY_KEY"])
    assert r.exit_code == 0, r.output
    assert SecretStore(cfg).load_all()[0][1] == VALUE
    r = CliRunner().invoke(vault_cli, ["add", "k2", "--host", "example.com", "--from-env", "NOPE_UNSET"])
    assert r.exit_code != 0 and "NOPE_UNSET" in r.output


def test_errors_are_one_line_and_nonzero(cfg: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(vault_cli, ["add", "bad name", "--host", "example.com"], input=VALUE)
    assert r.exit_code != 0 and "invalid secret name" in r.output and VALUE not in r.output
    r = runner.invoke(vault_cli, ["add", "n", "--host", "example.com", "--format", "nope"], input=VALUE)
    assert r.exit_code != 0 and "{value}" in r.output and VALUE not in r.output
    assert runner.invoke(vault_cli, ["add", "n", "--host", "example.com"], input=VALUE).exit_code == 0
    r = runner.invoke(vault_cli, ["add", "n", "--host", "example.com"], input=VALUE)
    assert r.exit_code != 0 and "--replace" in r.output
    assert (
        runner.invoke(vault_cli, ["add", "n", "--host", "example.com", "--replace"], input="v2").exit_code
        == 0
    )
    r = runner.invoke(vault_cli, ["remove", "n"])
    assert r.exit_code == 0
    r = runner.invoke(vault_cli, ["remove", "n"])
    assert r.exit_code != 0 and "no secret named" in r.output


def test_value_is_not_accepted_from_argv(cfg: Path) -> None:
    r = CliRunner().invoke(vault_cli, ["add", "n", "--host", "example.com", VALUE], input="x")
    assert r.exit_code != 0
    assert not (cfg / "secrets.json").exists()


def test_empty_list(cfg: Path) -> None:
    r = CliRunner().invoke(vault_cli, ["list"])
    assert r.exit_code == 0 and "no secrets" in r.output


def test_add_with_approve_stores_the_rule_and_show_says_so(cfg: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(
        vault_cli,
        ["add", "deploy", "--host", "api.example.com", "--approve", "--groups", "team"],
        input=VALUE,
    )
    assert r.exit_code == 0, r.output
    assert "(owner approves)" in r.output and VALUE not in r.output
    [(info, _)] = SecretStore(cfg).load_all()
    [rule] = info.effective_rules
    assert rule.approve and rule.host == "api.example.com"  # stored as a rule, not the v1 form
    shown = runner.invoke(vault_cli, ["show", "deploy"])
    assert shown.exit_code == 0 and "(owner approves)" in shown.output
