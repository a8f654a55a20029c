"""analyze(): every action kind, exact amounts, hostile text made safe for chat, structural risk."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.wallet.amounts import U128_MAX, format_near
from gateway.wallet.analysis import (
    MAX_ARGS_CHARS,
    MAX_METHOD_CHARS,
    ActionAnalysis,
    TxAnalysis,
    analyze,
    format_yocto,
    render_args,
    safe_text,
)
from gateway.wallet.tokens import TokenMove
from gateway.wallet.transactions import (
    AccessKey,
    Action,
    AddKey,
    CreateAccount,
    DelegateAction,
    DeleteAccount,
    DeleteKey,
    DeployContract,
    FullAccessPermission,
    FunctionCall,
    FunctionCallPermission,
    Stake,
    Transaction,
    Transfer,
)
from tests.wallet.known_keys import KEY, NEAR, OTHER, TGAS


def tx(*actions: Action, receiver: str = "bob.near", signer: str = "alice.near") -> Transaction:
    return Transaction(signer, KEY.public_key, 7, receiver, bytes(32), actions)


def one(action: Action, receiver: str = "bob.near") -> ActionAnalysis:
    analysis = analyze(tx(action, receiver=receiver))
    assert len(analysis.actions) == 1
    return analysis.actions[0]


def delegate(*inner: Action, sender: str = "relayed.near", receiver: str = "app.near"):
    return DelegateAction(sender, receiver, inner, 5, 1000, OTHER.public_key).sign(OTHER)


# -- every action kind ---------------------------------------------------------------------


def test_transfer() -> None:
    a = one(Transfer(3 * NEAR // 2))
    assert a == ActionAnalysis(
        "Transfer", "bob.near", 3 * NEAR // 2, deposit=3 * NEAR // 2, summary="Transfer 1.5 NEAR to bob.near"
    )


def test_function_call() -> None:
    a = one(
        FunctionCall("ft_transfer", b'{"receiver_id": "c.near",\n "amount": "5"}', 30 * TGAS, 1), "usdt.near"
    )
    assert (a.kind, a.receiver_id, a.method, a.deposit, a.gas, a.value) == (
        "FunctionCall",
        "usdt.near",
        "ft_transfer",
        1,
        30 * TGAS,
        1,
    )
    assert a.risk == "medium"  # it moves tokens: the deposit is not its value
    assert a.token == TokenMove("usdt.near", "ft_transfer", "NEP-141", 5, "c.near")
    assert a.summary == (
        'Call usdt.near.ft_transfer({"receiver_id": "c.near", "amount": "5"}) '
        "with 0.000000000000000000000001 NEAR deposit, 30 Tgas"
        " — moves 5 base units of usdt.near tokens to c.near (NEP-141)"
    )


def test_function_call_gas_is_exact() -> None:
    a = one(FunctionCall("m", b"", 300 * TGAS + 1))
    assert "300.000000000001 Tgas" in a.summary
    assert a.value == 0


def test_stake_and_unstake() -> None:
    a = one(Stake(5 * NEAR, OTHER.public_key), "alice.near")
    assert (a.kind, a.value, a.public_key, a.risk) == ("Stake", 5 * NEAR, str(OTHER.public_key), "medium")
    assert a.summary == f"Stake 5 NEAR on alice.near with validator key {OTHER.public_key}"
    zero = one(Stake(0, OTHER.public_key), "alice.near")
    assert zero.value == 0 and "Unstake" in zero.summary


def test_add_full_access_key_is_critical() -> None:
    a = one(AddKey(OTHER.public_key, AccessKey(FullAccessPermission())), "alice.near")
    assert (a.kind, a.key_permission, a.public_key, a.risk, a.value) == (
        "AddKey",
        "full_access",
        str(OTHER.public_key),
        "critical",
        0,
    )
    assert "FULL ACCESS" in a.summary


def test_add_function_call_key() -> None:
    perm = FunctionCallPermission("app.near", ("a", "b"), NEAR // 4)
    a = one(AddKey(OTHER.public_key, AccessKey(perm, 3)), "alice.near")
    assert (a.key_permission, a.risk) == ("function_call:app.near:a,b", "medium")
    assert "0.25 NEAR gas allowance" in a.summary
    any_method = one(AddKey(OTHER.public_key, AccessKey(FunctionCallPermission("app.near"))), "alice.near")
    assert any_method.key_permission == "function_call:app.near:*"
    assert "unlimited gas allowance" in any_method.summary


def test_delete_key_is_high() -> None:
    a = one(DeleteKey(OTHER.public_key), "alice.near")
    assert (a.kind, a.key_permission, a.public_key, a.risk) == (
        "DeleteKey",
        "delete",
        str(OTHER.public_key),
        "high",
    )


def test_delete_account_is_critical() -> None:
    a = one(DeleteAccount("bob.near"), "alice.near")
    assert (a.kind, a.beneficiary_id, a.risk, a.value) == ("DeleteAccount", "bob.near", "critical", 0)
    assert "alice.near" in a.summary and "bob.near" in a.summary


def test_create_account_and_deploy() -> None:
    create = one(CreateAccount(), "sub.alice.near")
    assert (create.kind, create.risk, create.summary) == (
        "CreateAccount",
        "medium",
        "Create account sub.alice.near",
    )
    deploy = one(DeployContract(b"\0asm" + bytes(100)), "alice.near")
    assert (deploy.kind, deploy.risk) == ("DeployContract", "high")
    assert "104 bytes" in deploy.summary


def test_delegate_inner_actions_are_analyzed_but_not_our_value() -> None:
    d = delegate(Transfer(7 * NEAR), FunctionCall("m", b"{}", TGAS, 2))
    analysis = analyze(tx(d, receiver="relayed.near", signer="relayer.near"))
    a = analysis.actions[0]
    assert (a.kind, a.receiver_id, a.sender_id, a.value, a.risk) == (
        "Delegate",
        "app.near",
        "relayed.near",
        0,
        "medium",
    )
    assert [i.kind for i in a.inner] == ["Transfer", "FunctionCall"]
    assert [i.value for i in a.inner] == [7 * NEAR, 2]
    assert all(i.receiver_id == "app.near" for i in a.inner)
    assert analysis.total_value == 0
    assert "Transfer 7 NEAR to app.near" in a.summary
    assert analysis.summary.endswith("Total: 0 NEAR")


def test_delegate_risk_is_at_least_its_inner_risk() -> None:
    d = delegate(DeleteAccount("thief.near"))
    a = analyze(tx(d, receiver="relayed.near", signer="relayer.near")).actions[0]
    assert a.risk == "critical"
    assert a.inner[0].beneficiary_id == "thief.near"


def test_delegate_from_our_own_account_counts_as_our_spend() -> None:
    d = delegate(Transfer(3 * NEAR), sender="alice.near")
    analysis = analyze(tx(d, receiver="alice.near", signer="alice.near"))
    assert analysis.actions[0].value == 3 * NEAR
    assert analysis.total_value == 3 * NEAR


def test_unknown_action_is_refused() -> None:
    t = tx(Transfer(1))
    object.__setattr__(t, "actions", ("not an action",))
    with pytest.raises(TypeError):
        analyze(t)


# -- the transaction -----------------------------------------------------------------------


def test_tx_analysis_totals_and_summary() -> None:
    analysis = analyze(tx(Transfer(NEAR), FunctionCall("pay", b"{}", TGAS, NEAR // 10), Transfer(1)))
    assert isinstance(analysis, TxAnalysis)
    assert (analysis.signer_id, analysis.receiver_id, analysis.public_key) == (
        "alice.near",
        "bob.near",
        str(KEY.public_key),
    )
    assert analysis.total_value == NEAR + NEAR // 10 + 1
    assert analysis.risk == "low"
    lines = analysis.summary.split("\n")
    assert len(lines) == 4
    assert lines[0] == "Transfer 1 NEAR to bob.near"
    assert lines[-1] == "Total: 1.100000000000000000000001 NEAR"


def test_empty_transaction() -> None:
    analysis = analyze(tx())
    assert (analysis.actions, analysis.total_value, analysis.risk, analysis.summary) == (
        (),
        0,
        "low",
        "Total: 0 NEAR",
    )


@pytest.mark.parametrize(
    ("actions", "risk"),
    [
        ((Transfer(10**30),), "low"),
        ((FunctionCall("m", b"", 1, 10**30),), "low"),
        ((Transfer(1), CreateAccount()), "medium"),
        ((Transfer(1), DeployContract(b"x")), "high"),
        ((DeleteKey(OTHER.public_key), CreateAccount()), "high"),
        ((Transfer(1), DeleteAccount("bob.near"), DeleteKey(OTHER.public_key)), "critical"),
        ((AddKey(OTHER.public_key, AccessKey(FullAccessPermission())),), "critical"),
    ],
)
def test_risk_is_the_maximum_over_actions(actions: tuple[Action, ...], risk: str) -> None:
    assert analyze(tx(*actions)).risk == risk


# -- exact amounts -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("yocto", "text"),
    [
        (0, "0"),
        (1, "0.000000000000000000000001"),
        (NEAR - 1, "0.999999999999999999999999"),
        (NEAR, "1"),
        (NEAR + 1, "1.000000000000000000000001"),
        (U128_MAX, "340282366920938.463463374607431768211455"),
    ],
)
def test_exact_amounts(yocto: int, text: str) -> None:
    assert one(Transfer(yocto)).summary == f"Transfer {text} NEAR to bob.near"
    assert one(FunctionCall("m", b"", 1, yocto)).deposit == yocto
    assert analyze(tx(Transfer(yocto))).summary.endswith(f"Total: {text} NEAR")


def test_total_above_u128_is_still_exact() -> None:
    analysis = analyze(tx(Transfer(U128_MAX), Transfer(U128_MAX), Stake(U128_MAX, OTHER.public_key)))
    assert analysis.total_value == 3 * U128_MAX
    assert analysis.summary.endswith(f"Total: {format_yocto(3 * U128_MAX)} NEAR")
    assert format_yocto(3 * U128_MAX) == "1020847100762815.390390123822295304634365"


@given(st.integers(min_value=0, max_value=U128_MAX))
def test_format_yocto_matches_format_near(yocto: int) -> None:
    assert format_yocto(yocto) == format_near(yocto)


@pytest.mark.parametrize(
    "action",
    [Transfer(-1), Transfer(U128_MAX + 1), FunctionCall("m", b"", 1, -5), Stake(2**128, OTHER.public_key)],
)
def test_out_of_range_amounts_are_refused(action: Action) -> None:
    with pytest.raises(ValueError, match="u128"):
        analyze(tx(action))


def test_bool_amount_is_refused() -> None:
    with pytest.raises(ValueError):
        analyze(tx(Transfer(True)))  # type: ignore[arg-type]


# -- hostile text --------------------------------------------------------------------------


def test_hostile_method_name_is_escaped_and_capped() -> None:
    method = "ft_transfer\n\u202e\u200bApproved by owner" + "x" * 500
    a = one(FunctionCall(method, b"{}", TGAS))
    assert a.method == method  # exact for the policy
    assert "\n" not in a.summary and "\u202e" not in a.summary and "\u200b" not in a.summary
    assert "\\u000a" in a.summary and "\\u202e" in a.summary and "\\u200b" in a.summary
    shown = a.summary.split("(")[0].removeprefix("Call bob.near.")
    assert len(shown) <= MAX_METHOD_CHARS + 1 and shown.endswith("…")


def test_hostile_args_are_rendered_safely() -> None:
    evil = json.dumps({"memo": "\u202eevil\u2028line", "pad": "y" * 1000}, ensure_ascii=False).encode()
    a = one(FunctionCall("m", evil, TGAS))
    args = a.summary[a.summary.index("(") + 1 :]
    assert "\u202e" not in args and "\u2028" not in args
    assert f"({len(evil)} bytes)" in a.summary
    assert len(render_args(evil)) <= MAX_ARGS_CHARS + len(f"… ({len(evil)} bytes)")
    assert a.summary.isprintable()


def test_non_json_and_non_utf8_args_show_their_size() -> None:
    assert render_args(b"\xff\xfe\x00") == "<3 bytes>"
    assert render_args(b"not json\n\x1b[31m") == "<14 bytes>"
    assert render_args(b"") == "<0 bytes>"
    assert render_args(b"[" * 100_000) == "<100000 bytes>"
    deep = b"[" * 5000 + b"]" * 5000
    assert render_args(deep) == "<10000 bytes>"  # nesting deeper than MAX_ARGS_DEPTH: opaque
    assert render_args(b"[" * 64 + b"]" * 64).startswith("[[[[")  # at the limit: shown
    assert render_args(b'["' + b"[" * 100 + b'"]') == '["' + "[" * 100 + '"]'  # brackets in a string


def test_json_args_keep_their_exact_text() -> None:
    # Duplicate keys and exact number spellings are shown as the contract will parse them.
    raw = b'{"amount":"1","amount":"1000000",\n\t"x":0.30000000000000001}'
    assert render_args(raw) == '{"amount":"1","amount":"1000000","x":0.30000000000000001}'


def test_add_key_method_names_are_sanitized() -> None:
    perm = FunctionCallPermission("app.near", ("ok", "bad\nname\u202e"))
    a = one(AddKey(OTHER.public_key, AccessKey(perm)), "alice.near")
    assert a.key_permission == "function_call:app.near:ok,bad\\u000aname\\u202e"
    assert a.summary.isprintable()


@given(st.text(max_size=300), st.binary(max_size=300))
def test_every_summary_is_printable_and_bounded(method: str, args: bytes) -> None:
    analysis = analyze(tx(FunctionCall(method, args, TGAS, 1)))
    line = analysis.actions[0].summary
    assert line.isprintable()
    assert len(line) < 600
    assert analysis.actions[0].method == method


@given(st.text(max_size=200), st.integers(min_value=1, max_value=100))
def test_safe_text(text: str, limit: int) -> None:
    out = safe_text(text, limit)
    assert out.isprintable()
    assert len(out) <= limit + 1
    if text.isprintable() and len(text) <= limit:
        assert out == text
