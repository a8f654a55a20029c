"""`clawgate vault add` makes the group scope explicit; `clawgate vault scope` changes it.

Real config files and a real SQLite database (groups registered with the real CLI), the
real `clawgate` click commands through CliRunner. Before issue 12 the model key was
scoped to `main` alone unless the owner knew about `--groups`, and a second group's
model calls then went out with the placeholder and got 401.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from gateway.cli import main
from proxy.secrets import SecretStore

MODEL = "127.0.0.1:11434"


def setup_config(config_dir: Path) -> None:
    (config_dir / "config.toml").write_text(
        f'[model]\nbase_url = "http://{MODEL}/v1"\n[vault]\nallow_private_upstreams = ["{MODEL}"]\n'
    )


def cli(*args: str, value: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), input=value)
    return result.exit_code, result.output


def test_model_key_defaults_to_every_registered_group(dirs) -> None:
    config_dir, _ = dirs
    setup_config(config_dir)
    for chat, name in (("tg:-1001", "team"), ("tg:-1002", "family")):
        code, out = cli("groups", "register", chat, name)
        assert code == 0, out
    code, out = cli("vault", "add", "model", "--host", MODEL, "--preset", "anthropic", value="sk-ant-1\n")
    assert code == 0, out
    assert SecretStore(config_dir).get("model").groups == ("main", "family", "team")  # type: ignore[union-attr]
    assert "every registered group" in out and "--groups" in out


def test_other_keys_default_to_main_and_groups_is_explicit(dirs) -> None:
    config_dir, _ = dirs
    setup_config(config_dir)
    assert cli("groups", "register", "tg:-1001", "team")[0] == 0
    code, out = cli("vault", "add", "gh", "--host", "api.github.com", value="ghp_x\n")
    assert code == 0, out
    assert SecretStore(config_dir).get("gh").groups == ("main",)  # type: ignore[union-attr]
    assert "groups main" in out
    code, out = cli("vault", "add", "gh2", "--host", "api.github.com", "--groups", "a,b", value="ghp_y\n")
    assert code == 0, out
    assert SecretStore(config_dir).get("gh2").groups == ("a", "b")  # type: ignore[union-attr]


def test_scope_changes_groups_and_keeps_value_and_rules(dirs) -> None:
    config_dir, _ = dirs
    setup_config(config_dir)
    assert cli("vault", "add", "model", "--host", MODEL, "--preset", "anthropic", value="sk-ant-2\n")[0] == 0
    before = SecretStore(config_dir).get("model")
    code, out = cli("vault", "scope", "model", "--groups", "main,team")
    assert code == 0, out
    [(info, value)] = SecretStore(config_dir).load_all()
    assert info.groups == ("main", "team") and value == "sk-ant-2"
    assert info.effective_rules == before.effective_rules  # type: ignore[union-attr]
    code, out = cli("vault", "scope", "model", "--groups", "bad group")
    assert code != 0 and "invalid group" in out
    code, out = cli("vault", "scope", "nope", "--groups", "main")
    assert code != 0 and "no secret named 'nope'" in out
