"""`[agent] runtime`: which image a group's sandbox runs, and the values refused at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, claude_variant, parse
from core.models import Group
from gateway.preflight import images_needed
from gateway.sandboxes import group_runtime, sandbox_spec
from groups import folders


def load(text: str):  # type: ignore[no-untyped-def]
    return parse(text, Path("test.toml"))


def test_default_is_builtin_and_images_follow_the_runtime() -> None:
    cfg = load('[sandbox]\nimage = "reg.example:5000/clawgate-sandbox:v2"\n')
    assert cfg.agent.runtime == "builtin"
    assert cfg.runtime_image("builtin") == "reg.example:5000/clawgate-sandbox:v2"
    assert cfg.runtime_image("claude") == "reg.example:5000/clawgate-sandbox:v2-claude"
    assert claude_variant("reg.example:5000/sandbox") == "reg.example:5000/sandbox:claude"
    pinned = load('[agent]\nruntime = "claude"\nclaude_image = "mine:sdk"\n')
    assert pinned.runtime_image("claude") == "mine:sdk"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[agent]\nruntime = "codex"\n', "agent.runtime"),
        ('[agent]\nruntime = "claude"\n[model]\nprovider = "openai"\n', 'needs model.provider = "anthropic"'),
        ('[agent]\nruntime = "claude"\n[sandbox]\nbackend = "bwrap"\n', 'needs sandbox.backend = "docker"'),
        ('[agent]\nruntimes = "claude"\n', "agent.runtimes"),
    ],
)
def test_bad_runtime_settings_are_config_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(text)
    assert needle in str(info.value)


def test_a_group_runtime_overrides_the_default_in_the_spec(tmp_path: Path) -> None:
    cfg = load('[sandbox]\nimage = "sb:t"\n')
    dirs = folders.group_dirs(tmp_path, "team")
    plain = Group("team", "tg:1", "team", "@Andy")
    claude = Group("team", "tg:1", "team", "@Andy", runtime="claude")
    assert group_runtime(cfg, plain) == "builtin"
    assert sandbox_spec(cfg, plain, dirs, (1000, 1000), "i").image == "sb:t"
    assert sandbox_spec(cfg, claude, dirs, (1000, 1000), "i").image == "sb:t-claude"
    everyone_claude = load('[sandbox]\nimage = "sb:t"\n[agent]\nruntime = "claude"\n')
    assert sandbox_spec(everyone_claude, plain, dirs, (1000, 1000), "i").image == "sb:t-claude"
    # The placeholder key only, in every runtime's environment.
    env = sandbox_spec(cfg, claude, dirs, (1000, 1000), "i").env
    assert env["ANTHROPIC_API_KEY"] == "placeholder"


def test_doctor_needs_the_images_of_the_default_and_of_the_groups_runtimes() -> None:
    cfg = load('[sandbox]\nimage = "sb:t"\n')
    assert images_needed(cfg) == [("builtin", "sb:t")]
    assert images_needed(cfg, {"claude"}) == [("builtin", "sb:t"), ("claude", "sb:t-claude")]
    claude = load('[sandbox]\nimage = "sb:t"\n[agent]\nruntime = "claude"\n')
    assert images_needed(claude) == [("builtin", "sb:t"), ("claude", "sb:t-claude")]
