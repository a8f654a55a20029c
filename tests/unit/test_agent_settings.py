"""`[agent] max_model_calls` and `history_budget_tokens`: validated by the gateway, handed to the
sandbox in its environment, and read back by the agent runtime as the same values."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import ConfigError, load, parse
from core.models import Group
from gateway.sandboxes import agent_environment
from groups.agent import config as agent_config
from groups.agent import llm, turn

SRC = Path("test.toml")
GROUP = Group("team", "tg:-1", "team", "@Andy")


def test_defaults_fit_a_personal_assistant_and_match_the_agents_own(tmp_path: Path) -> None:
    agent = load(tmp_path).agent
    assert (agent.max_model_calls, agent.history_budget_tokens) == (25, 40_000)
    assert (llm.MAX_ITERATIONS, turn.DEFAULT_BUDGET_TOKENS) == (25, 40_000)


def test_the_agent_reads_what_the_gateway_hands_it() -> None:
    cfg = parse("[agent]\nmax_model_calls = 7\nhistory_budget_tokens = 12000\n", SRC)
    env = agent_environment(cfg, GROUP)
    assert env["CLAWGATE_MAX_MODEL_CALLS"] == "7"
    assert env["CLAWGATE_HISTORY_BUDGET_TOKENS"] == "12000"
    inside = agent_config.load(env)
    assert (inside.max_model_calls, inside.history_budget_tokens) == (7, 12_000)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[agent]\nmax_model_calls = 0", "agent.max_model_calls"),
        ("[agent]\nmax_model_calls = 501", "agent.max_model_calls"),
        ('[agent]\nmax_model_calls = "many"', "agent.max_model_calls"),
        ("[agent]\nhistory_budget_tokens = 999", "agent.history_budget_tokens"),
        ("[agent]\nhistory_budget_tokenz = 5000", "agent.history_budget_tokenz"),
    ],
)
def test_bad_values_name_the_key(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(text, SRC)
    assert key in str(info.value)


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("CLAWGATE_MAX_MODEL_CALLS", "0"),
        ("CLAWGATE_MAX_MODEL_CALLS", "x"),
        ("CLAWGATE_HISTORY_BUDGET_TOKENS", "10"),
    ],
)
def test_the_agent_refuses_bad_settings_naming_the_variable(var: str, value: str) -> None:
    env = {"CLAWGATE_MODEL": "m", var: value}
    with pytest.raises(agent_config.ConfigError, match=var):
        agent_config.load(env)
