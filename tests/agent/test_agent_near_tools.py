"""The agent's `near_*` tools: requests only — what goes over IPC, and refusals as tool errors.

The agent never holds a key; these tools forward exactly the fields the gateway's schema
accepts, refuse wrong types before anything is sent, and turn a policy refusal into
information for the model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_agent_task_tools import ScriptedGateway

from groups.agent.tool_specs import TOOL_SPECS
from groups.agent.tools import Toolbox

NEAR_TOOLS = ["near_balance", "near_view", "near_transfer", "near_function_call", "near_sign_message"]


def answer(method: str, params: dict[str, Any]) -> dict[str, Any]:
    if method == "near_transfer" and params.get("amount") == "500":
        return {"error": {"code": "denied", "message": "refused by the wallet policy: over the daily limit"}}
    return {"result": {"method": method, "echo": params, "transaction_hash": "9xH"}}


@pytest.fixture
def gateway() -> Any:
    gw = ScriptedGateway(answer)
    yield gw
    gw.close()


def toolbox(tmp_path: Path, gw: ScriptedGateway) -> Toolbox:
    return Toolbox(str(tmp_path), gw.client.send_message, ipc_call=gw.client.call)


def test_every_near_tool_has_a_spec_without_any_key_material_field() -> None:
    specs = {s["name"]: s for s in TOOL_SPECS}
    for name in NEAR_TOOLS:
        properties = specs[name]["parameters"]["properties"]
        assert not {p for p in properties if "secret" in p or "private" in p}


@pytest.mark.parametrize(
    ("tool", "args", "sent"),
    [
        ("near_balance", {}, {}),
        ("near_balance", {"account_id": "bob.near"}, {"account_id": "bob.near"}),
        (
            "near_view",
            {"contract_id": "ft.near", "method": "ft_balance_of", "args": {"account_id": "a.near"}},
            {"contract_id": "ft.near", "method": "ft_balance_of", "args": {"account_id": "a.near"}},
        ),
        (
            "near_transfer",
            {"receiver_id": "bob.near", "amount": "1.5", "key": "hot"},
            {"receiver_id": "bob.near", "amount": "1.5", "key": "hot"},
        ),
        (
            "near_function_call",
            {"receiver_id": "c.near", "method": "go", "args": {"x": 1}, "deposit": "0.01", "gas": 10**13},
            {"receiver_id": "c.near", "method": "go", "args": {"x": 1}, "deposit": "0.01", "gas": 10**13},
        ),
        (
            "near_sign_message",
            {"message": "login", "recipient": "app.near", "unexpected": "dropped"},
            {"message": "login", "recipient": "app.near"},
        ),
    ],
)
def test_tools_forward_exactly_the_schema_fields(
    tmp_path: Path, gateway: ScriptedGateway, tool: str, args: dict, sent: dict
) -> None:
    text, is_error = toolbox(tmp_path, gateway).execute(tool, args)
    assert not is_error, text
    assert gateway.calls == [(tool, sent)]
    assert json.loads(text)["transaction_hash"] == "9xH"


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("near_transfer", {"receiver_id": "bob.near"}),
        ("near_transfer", {"receiver_id": "bob.near", "amount": 1.5}),
        ("near_transfer", {"receiver_id": "bob.near", "amount": True}),
        ("near_view", {"contract_id": "c.near", "method": ["x"]}),
        ("near_function_call", {"receiver_id": "c.near", "method": "go", "gas": "lots"}),
    ],
)
def test_bad_arguments_are_refused_before_anything_is_sent(
    tmp_path: Path, gateway: ScriptedGateway, tool: str, args: dict
) -> None:
    text, is_error = toolbox(tmp_path, gateway).execute(tool, args)
    assert is_error and text
    assert gateway.calls == []


def test_a_policy_refusal_is_a_tool_error_with_the_reason(tmp_path: Path, gateway: ScriptedGateway) -> None:
    text, is_error = toolbox(tmp_path, gateway).execute(
        "near_transfer", {"receiver_id": "bob.near", "amount": "500"}
    )
    assert is_error
    assert "denied" in text and "daily limit" in text
