"""PolicyEngine: every rule, both sides of every threshold, the most restrictive verdict wins."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.wallet.amounts import parse_near
from core.wallet.settings import FunctionCallRule, WalletPolicy
from gateway.wallet.analysis import analyze
from gateway.wallet.decision import AUTO, Decision, combine
from gateway.wallet.policy import PolicyEngine, utc_day
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

AUTO_MAX = parse_near("0.1")  # WalletPolicy defaults
WL_MAX = parse_near("1")
DAILY = parse_near("10")


@dataclass(frozen=True, slots=True)
class Perm:
    """Shaped like gateway.wallet.keyinfo.KeyPermission."""

    kind: str = "full_access"
    receiver_id: str | None = None
    method_names: tuple[str, ...] = ()
    allowance: int | None = None


FULL = Perm()


def engine(**policy: object) -> PolicyEngine:
    return PolicyEngine(WalletPolicy(**policy))  # type: ignore[arg-type]


def check(
    eng: PolicyEngine,
    *actions: Action,
    receiver: str = "bob.near",
    group: str = "main",
    key: str = "k",
    perm: Perm = FULL,
    spent: int = 0,
    approved: bool = False,
) -> Decision:
    tx = Transaction("alice.near", KEY.public_key, 1, receiver, bytes(32), actions)
    return eng.decide(
        analyze(tx),
        group=group,
        key_name=key,
        key_permission=perm,
        spent_today=spent,
        owner_approved=approved,
    )


def delegate(*inner: Action, sender: str = "relayed.near") -> Action:
    return DelegateAction(sender, "app.near", inner, 5, 1000, OTHER.public_key).sign(OTHER)


def call(method: str = "go", deposit: int = 0) -> FunctionCall:
    return FunctionCall(method, b"{}", 30 * TGAS, deposit)


DEFAULT = engine()


# -- 1. key access by group ----------------------------------------------------------------


def test_unlisted_key_is_main_only() -> None:
    assert DEFAULT.may_use_key("main", "k")
    assert not DEFAULT.may_use_key("family", "k")
    assert check(DEFAULT, Transfer(1)) == AUTO
    verdict = check(DEFAULT, Transfer(1), group="family")
    assert verdict == Decision("deny", ("group 'family' may not use key 'k'",))


def test_listed_groups_and_star() -> None:
    eng = engine(key_groups={"shared": ["*"], "ops": ["ops", "main"], "solo": ["solo"]})
    assert eng.may_use_key("anyone", "shared") and eng.may_use_key("main", "shared")
    assert eng.may_use_key("ops", "ops") and eng.may_use_key("main", "ops")
    assert not eng.may_use_key("family", "ops")
    assert eng.may_use_key("solo", "solo") and not eng.may_use_key("main", "solo")
    assert check(eng, Transfer(1), group="anyone", key="shared").signs
    assert check(eng, Transfer(1), group="main", key="solo").outcome == "deny"


def test_key_access_survives_owner_approval() -> None:
    verdict = check(DEFAULT, Transfer(5 * NEAR), group="family", approved=True)
    assert verdict.outcome == "deny"
    assert "group 'family' may not use key 'k'" in verdict.reasons


# -- 2. function-call keys -----------------------------------------------------------------

FC_RULE = engine(function_calls=[FunctionCallRule(receiver="app.near", auto_approve=True)])
FC = Perm("function_call", "app.near", ("play", "claim"), NEAR // 4)


def test_function_call_key_signs_its_own_call() -> None:
    assert check(FC_RULE, call("play"), receiver="app.near", perm=FC) == AUTO
    any_method = Perm("function_call", "app.near", ())
    assert check(FC_RULE, call("whatever"), receiver="app.near", perm=any_method) == AUTO


def test_function_call_key_cannot_sign_a_transfer() -> None:
    verdict = check(FC_RULE, Transfer(1), receiver="app.near", perm=FC)
    assert verdict == Decision(
        "deny", ("key 'k' is a function-call key for app.near; it cannot sign Transfer",)
    )


@pytest.mark.parametrize(
    ("actions", "receiver", "reason"),
    [
        ((call("play"), call("play")), "app.near", "can sign only a single function call, not 2 actions"),
        ((), "app.near", "can sign only a single function call, not 0 actions"),
        ((call("play"),), "other.near", "cannot call other.near"),
        ((call("steal"),), "app.near", "cannot call method 'steal' (allowed: play, claim)"),
        ((call("play", 1),), "app.near", "cannot attach a deposit (0.000000000000000000000001 NEAR)"),
        ((DeleteKey(OTHER.public_key),), "app.near", "cannot sign DeleteKey"),
        ((delegate(Transfer(1)),), "app.near", "cannot sign Delegate"),
    ],
)
def test_function_call_key_limits(actions: tuple[Action, ...], receiver: str, reason: str) -> None:
    verdict = check(FC_RULE, *actions, receiver=receiver, perm=FC)
    assert verdict.outcome == "deny"
    assert f"key 'k' is a function-call key for app.near; it {reason}" in verdict.reasons
    # The owner cannot approve what the key physically cannot sign.
    assert check(FC_RULE, *actions, receiver=receiver, perm=FC, approved=True).outcome == "deny"


def test_unknown_key_permission_is_denied() -> None:
    verdict = check(DEFAULT, Transfer(1), perm=Perm("weird"))
    assert verdict.outcome == "deny"


# -- 3. forbidden operations ---------------------------------------------------------------

FULL_ACCESS_OPS: list[Action] = [
    AddKey(OTHER.public_key, AccessKey(FullAccessPermission())),
    DeleteKey(OTHER.public_key),
    DeployContract(b"\0asm"),
]


def test_delete_account_is_denied_by_default() -> None:
    verdict = check(DEFAULT, DeleteAccount("bob.near"), receiver="alice.near", approved=True)
    assert verdict.outcome == "deny"
    assert "deny_delete_account" in verdict.reasons[0]


def test_delete_account_needs_approval_when_allowed() -> None:
    verdict = check(engine(deny_delete_account=False), DeleteAccount("bob.near"), receiver="alice.near")
    assert verdict.outcome == "needs_approval"
    assert verdict.reasons == ("deleting account alice.near (balance to bob.near) needs approval",)


@pytest.mark.parametrize("action", FULL_ACCESS_OPS)
def test_full_access_operations(action: Action) -> None:
    denied = check(DEFAULT, action, receiver="alice.near", approved=True)
    assert denied.outcome == "deny"
    assert "deny_full_access_operations" in denied.reasons[0]
    allowed = engine(deny_full_access_operations=False)
    assert check(allowed, action, receiver="alice.near").outcome == "needs_approval"
    assert check(allowed, action, receiver="alice.near", approved=True).signs


@pytest.mark.parametrize("action", [*FULL_ACCESS_OPS, DeleteAccount("thief.near")])
def test_forbidden_operations_inside_a_delegate(action: Action) -> None:
    verdict = check(DEFAULT, delegate(Transfer(1), action), receiver="relayed.near", approved=True)
    assert verdict.outcome == "deny"
    assert any(r.startswith("inside a meta-transaction from relayed.near: ") for r in verdict.reasons)
    lenient = engine(deny_full_access_operations=False, deny_delete_account=False)
    asked = check(lenient, delegate(action), receiver="relayed.near")
    assert asked.outcome == "needs_approval"
    assert len(asked.reasons) == 2  # the relay itself and the inner operation


# -- 4. the daily limit --------------------------------------------------------------------


def test_daily_limit_exactly_at_vs_one_yocto_above() -> None:
    eng = engine(transfer_whitelist=["bob.near"], whitelist_max="10")
    assert check(eng, Transfer(NEAR), spent=DAILY - NEAR).signs
    verdict = check(eng, Transfer(NEAR + 1), spent=DAILY - NEAR)
    assert verdict == Decision(
        "deny",
        ("today's spend 9 NEAR + this 1.000000000000000000000001 NEAR would exceed the daily limit 10 NEAR",),
    )


def test_daily_limit_binds_owner_approved_spend() -> None:
    assert check(DEFAULT, Transfer(5 * NEAR), spent=5 * NEAR, approved=True).signs
    verdict = check(DEFAULT, Transfer(5 * NEAR + 1), spent=5 * NEAR, approved=True)
    assert verdict.outcome == "deny"
    assert "would exceed the daily limit 10 NEAR" in verdict.reasons[0]


def test_daily_limit_counts_every_value_kind() -> None:
    eng = engine(
        auto_approve_max="100",
        stake_validators=["pool.near"],
        function_calls=[FunctionCallRule(receiver="pool.near", max_deposit="100", auto_approve=True)],
    )
    actions = (Transfer(3 * NEAR), call("deposit_and_stake", 3 * NEAR), Stake(4 * NEAR, OTHER.public_key))
    assert check(eng, *actions, receiver="pool.near").signs
    assert check(eng, *actions, receiver="pool.near", spent=1).outcome == "deny"


def test_total_above_u128_is_denied_with_exact_amounts() -> None:
    huge = 2**128 - 1
    verdict = check(DEFAULT, Transfer(huge), Transfer(huge))
    assert verdict.outcome == "deny"
    assert "this 680564733841876.92692674921486353642291 NEAR" in verdict.reasons[0]


# -- 5. transfers --------------------------------------------------------------------------


def test_transfer_at_auto_max_vs_one_yocto_above() -> None:
    assert check(DEFAULT, Transfer(AUTO_MAX)) == AUTO
    verdict = check(DEFAULT, Transfer(AUTO_MAX + 1))
    assert verdict == Decision(
        "needs_approval",
        ("transfer of 0.100000000000000000000001 NEAR to bob.near exceeds the auto-approve limit 0.1 NEAR",),
    )
    assert check(DEFAULT, Transfer(AUTO_MAX + 1), approved=True).signs


def test_whitelisted_transfer_at_whitelist_max_vs_one_yocto_above() -> None:
    eng = engine(transfer_whitelist=["bob.near"])
    assert check(eng, Transfer(WL_MAX)) == AUTO
    verdict = check(eng, Transfer(WL_MAX + 1))
    assert verdict == Decision(
        "needs_approval",
        (
            "transfer of 1.000000000000000000000001 NEAR to whitelisted bob.near "
            "exceeds the whitelist limit 1 NEAR",
        ),
    )
    # Not whitelisted: the same amount is judged by auto_approve_max.
    assert check(eng, Transfer(WL_MAX), receiver="carol.near").outcome == "needs_approval"


def test_split_whitelisted_transfers_are_judged_by_their_sum() -> None:
    eng = engine(transfer_whitelist=["bob.near"])
    assert check(eng, Transfer(WL_MAX // 2), Transfer(WL_MAX // 2)) == AUTO
    assert check(eng, Transfer(WL_MAX // 2), Transfer(WL_MAX // 2 + 1)).outcome == "needs_approval"


def test_whitelisted_transfer_with_other_value_uses_auto_max() -> None:
    eng = engine(
        transfer_whitelist=["bob.near"],
        function_calls=[FunctionCallRule(receiver="bob.near", max_deposit="1", auto_approve=True)],
    )
    assert check(eng, Transfer(AUTO_MAX // 2), call(deposit=AUTO_MAX // 2)) == AUTO
    verdict = check(eng, Transfer(AUTO_MAX // 2), call(deposit=AUTO_MAX // 2 + 1))
    assert verdict == Decision(
        "needs_approval",
        ("total value 0.100000000000000000000001 NEAR exceeds the auto-approve limit 0.1 NEAR",),
    )


def test_whitelist_is_never_stricter_than_the_auto_max() -> None:
    eng = engine(transfer_whitelist=["bob.near"], whitelist_max="0.01", auto_approve_max="0.1")
    assert check(eng, Transfer(AUTO_MAX)) == AUTO
    assert check(eng, Transfer(AUTO_MAX + 1)).outcome == "needs_approval"


def test_zero_value_transaction_is_auto() -> None:
    assert check(DEFAULT, Transfer(0)) == AUTO


# -- 6. function calls ---------------------------------------------------------------------


def test_function_call_without_rule_needs_approval() -> None:
    verdict = check(DEFAULT, call("claim"), receiver="app.near")
    assert verdict == Decision("needs_approval", ("no function-call rule for app.near.claim",))
    assert check(DEFAULT, call("claim"), receiver="app.near", approved=True).signs
    # A token transfer without an amount the wallet can read: every reason it needs the owner.
    verdict = check(DEFAULT, call("ft_transfer"), receiver="usdt.near")
    assert verdict == Decision(
        "needs_approval",
        (
            "usdt.near.ft_transfer moves an unknown amount of tokens "
            "(amount is missing or not a decimal string)",
            "no function-call rule for usdt.near.ft_transfer",
            "no token limit for usdt.near (token_limits): its token transfers always need approval",
        ),
    )
    assert check(DEFAULT, call("ft_transfer"), receiver="usdt.near", approved=True).signs


def test_function_call_deposit_at_rule_max_vs_one_yocto_above() -> None:
    eng = engine(
        function_calls=[FunctionCallRule(receiver="app.near", max_deposit="0.05", auto_approve=True)]
    )
    limit = parse_near("0.05")
    assert check(eng, call(deposit=limit), receiver="app.near") == AUTO
    verdict = check(eng, call(deposit=limit + 1), receiver="app.near")
    assert verdict == Decision(
        "needs_approval",
        ("deposit 0.050000000000000000000001 NEAR to app.near.go exceeds the rule's max deposit 0.05 NEAR",),
    )


def test_rule_deposit_is_still_bounded_by_auto_max() -> None:
    eng = engine(function_calls=[FunctionCallRule(receiver="app.near", max_deposit="5", auto_approve=True)])
    assert check(eng, call(deposit=AUTO_MAX), receiver="app.near") == AUTO
    verdict = check(eng, call(deposit=AUTO_MAX + 1), receiver="app.near")
    assert verdict.outcome == "needs_approval"
    assert "exceeds the auto-approve limit 0.1 NEAR" in verdict.reasons[0]


def test_rule_without_auto_approve_needs_approval() -> None:
    eng = engine(function_calls=[FunctionCallRule(receiver="app.near")])
    verdict = check(eng, call(), receiver="app.near")
    assert verdict == Decision(
        "needs_approval", ("the function-call rule for app.near.go requires approval",)
    )


def test_first_matching_rule_wins_and_methods_are_matched() -> None:
    eng = engine(
        function_calls=[
            FunctionCallRule(receiver="app.near", methods=["withdraw"]),
            FunctionCallRule(receiver="app.near", auto_approve=True),
        ]
    )
    assert check(eng, call("play"), receiver="app.near") == AUTO
    assert check(eng, call("withdraw"), receiver="app.near").outcome == "needs_approval"
    assert check(eng, call("play"), receiver="other.near").outcome == "needs_approval"


def test_hostile_method_names_do_not_match_and_are_shown_escaped() -> None:
    eng = engine(function_calls=[FunctionCallRule(receiver="app.near", methods=["play"], auto_approve=True)])
    verdict = check(eng, call("play\u200b"), receiver="app.near")
    assert verdict == Decision("needs_approval", ("no function-call rule for app.near.play\\u200b",))


@pytest.mark.parametrize("method", ["deposit_and_stake", "stake", "stake_all"])
def test_staking_calls_only_to_allowed_validators(method: str) -> None:
    eng = engine(
        stake_validators=["good.pool.near"],
        function_calls=[FunctionCallRule(receiver="evil.pool.near", auto_approve=True)],
    )
    verdict = check(eng, call(method), receiver="evil.pool.near", approved=True)
    assert verdict.outcome == "deny"
    assert "evil.pool.near is not an allowed validator" in verdict.reasons[0]
    assert check(eng, call(method), receiver="good.pool.near").outcome == "needs_approval"  # no rule
    ok = engine(
        stake_validators=["good.pool.near"],
        function_calls=[FunctionCallRule(receiver="good.pool.near", max_deposit="1", auto_approve=True)],
    )
    assert check(ok, call(method, AUTO_MAX), receiver="good.pool.near") == AUTO


# -- 7. stake actions ----------------------------------------------------------------------


def test_stake_needs_a_listed_validator_key_or_account() -> None:
    denied = check(DEFAULT, Stake(1, OTHER.public_key), receiver="alice.near", approved=True)
    assert denied.outcome == "deny"
    assert "not an allowed validator" in denied.reasons[0]
    by_key = engine(stake_validators=[str(OTHER.public_key)])
    assert check(by_key, Stake(AUTO_MAX, OTHER.public_key), receiver="alice.near") == AUTO
    by_account = engine(stake_validators=["alice.near"])
    assert check(by_account, Stake(AUTO_MAX, OTHER.public_key), receiver="alice.near") == AUTO
    above = check(by_key, Stake(AUTO_MAX + 1, OTHER.public_key), receiver="alice.near")
    assert above.outcome == "needs_approval"
    assert "total value 0.100000000000000000000001 NEAR" in above.reasons[0]


# -- 8. always ask -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        (CreateAccount(), "creating account bob.near needs approval"),
        (
            AddKey(OTHER.public_key, AccessKey(FunctionCallPermission("app.near"))),
            "adding a function-call key to bob.near needs approval",
        ),
        (
            delegate(),
            "relaying a meta-transaction from relayed.near to app.near (we pay its gas) needs approval",
        ),
    ],
)
def test_operations_that_always_ask(action: Action, reason: str) -> None:
    assert check(DEFAULT, action) == Decision("needs_approval", (reason,))
    approved = check(DEFAULT, action, approved=True)
    assert approved.signs
    assert approved.reasons == (f"approved by the owner: {reason}",)


# -- combination: most restrictive wins, every reason listed ------------------------------


def test_harmless_part_does_not_launder_a_forbidden_part() -> None:
    eng = engine(transfer_whitelist=["bob.near"])
    verdict = check(eng, Transfer(1), DeleteAccount("bob.near"), receiver="bob.near")
    assert verdict.outcome == "deny"
    assert len(verdict.reasons) == 1 and "deleting account bob.near" in verdict.reasons[0]


def test_every_needs_approval_reason_is_listed() -> None:
    verdict = check(DEFAULT, CreateAccount(), Transfer(NEAR), call("init"), receiver="new.alice.near")
    assert verdict.outcome == "needs_approval"
    assert set(verdict.reasons) == {
        "creating account new.alice.near needs approval",
        "no function-call rule for new.alice.near.init",
        "transfer of 1 NEAR to new.alice.near exceeds the auto-approve limit 0.1 NEAR",
    }


def test_deny_shows_only_deny_reasons_but_all_of_them() -> None:
    verdict = check(DEFAULT, CreateAccount(), DeployContract(b"x"), DeleteAccount("bob.near"), group="family")
    assert verdict.outcome == "deny"
    assert len(verdict.reasons) == 3
    assert not any("needs approval" in r for r in verdict.reasons)


ACTION_POOL: list[Action] = [
    Transfer(1),
    Transfer(AUTO_MAX),
    Transfer(3 * NEAR),
    call("go"),
    call("stake", 5),
    CreateAccount(),
    DeployContract(b"x"),
    DeleteKey(OTHER.public_key),
    DeleteAccount("bob.near"),
    Stake(NEAR, OTHER.public_key),
    AddKey(OTHER.public_key, AccessKey(FunctionCallPermission("app.near"))),
    delegate(Transfer(1)),
]
POLICIES = [
    DEFAULT,
    engine(
        transfer_whitelist=["bob.near"],
        deny_delete_account=False,
        deny_full_access_operations=False,
        stake_validators=[str(OTHER.public_key)],
        function_calls=[FunctionCallRule(receiver="bob.near", max_deposit="1", auto_approve=True)],
    ),
]
SEVERITY = {"auto_approve": 0, "needs_approval": 1, "deny": 2}


@given(
    st.lists(st.sampled_from(ACTION_POOL), min_size=1, max_size=5),
    st.sampled_from(POLICIES),
    st.integers(min_value=0, max_value=DAILY),
    st.randoms(use_true_random=False),
)
def test_verdict_is_the_worst_of_its_parts_and_order_independent(
    actions: list[Action], eng: PolicyEngine, spent: int, rnd: object
) -> None:
    whole = check(eng, *actions, spent=spent)
    shuffled = list(actions)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    again = check(eng, *shuffled, spent=spent)
    assert again.outcome == whole.outcome and set(again.reasons) == set(whole.reasons)
    for action in actions:
        part = check(eng, action, spent=spent)
        assert SEVERITY[whole.outcome] >= SEVERITY[part.outcome]
        if part.outcome == whole.outcome == "deny":
            # The daily-limit reason names the amount, which is the part's vs the whole's total.
            limit = "today's spend"
            assert {r for r in part.reasons if not r.startswith(limit)} <= set(whole.reasons)
            if any(r.startswith(limit) for r in part.reasons):
                assert any(r.startswith(limit) for r in whole.reasons)
    approved = check(eng, *actions, spent=spent, approved=True)
    if whole.outcome == "deny":
        assert approved == whole
    else:
        assert approved.signs


# -- combine() -----------------------------------------------------------------------------

decisions = st.builds(
    Decision,
    st.sampled_from(["auto_approve", "needs_approval", "deny"]),
    st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=3).map(tuple),
)


@given(st.lists(decisions, max_size=6), st.randoms(use_true_random=False))
def test_combine_is_order_independent_and_never_less_restrictive(parts: list[Decision], rnd: object) -> None:
    whole = combine(parts)
    shuffled = list(parts)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    again = combine(shuffled)
    assert again.outcome == whole.outcome and set(again.reasons) == set(whole.reasons)
    for part in parts:
        assert SEVERITY[whole.outcome] >= SEVERITY[part.outcome]
    expected = {r for p in parts if p.outcome == whole.outcome for r in p.reasons}
    assert set(whole.reasons) == expected
    assert len(whole.reasons) == len(set(whole.reasons))
    if not parts:
        assert whole == AUTO


# -- NEP-413 messages ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "outcome"), [("auto", "auto_approve"), ("approval", "needs_approval"), ("deny", "deny")]
)
def test_decide_message_follows_sign_messages(mode: str, outcome: str) -> None:
    eng = engine(sign_messages=mode)
    assert eng.decide_message(group="main", key_name="k").outcome == outcome
    assert eng.decide_message(group="family", key_name="k").outcome == "deny"
    fc = eng.decide_message(group="main", key_name="k", key_permission=Perm("function_call", "app.near"))
    assert fc.outcome == "deny"
    assert eng.decide_message(group="main", key_name="k", key_permission=FULL).outcome == outcome


def test_default_message_signing_asks() -> None:
    verdict = DEFAULT.decide_message(group="main", key_name="k")
    assert verdict.outcome == "needs_approval" and "NEP-413" in verdict.reasons[0]


# -- engine plumbing -----------------------------------------------------------------------


def test_replacing_the_policy_refreshes_lookups() -> None:
    eng = engine()
    assert check(eng, Transfer(WL_MAX)).outcome == "needs_approval"
    eng.policy = WalletPolicy(transfer_whitelist=["bob.near"])
    assert check(eng, Transfer(WL_MAX)) == AUTO
    assert eng.policy.transfer_whitelist == ["bob.near"]


# -- UTC day -------------------------------------------------------------------------------


def test_utc_day_boundaries() -> None:
    midnight = datetime(2025, 3, 1, tzinfo=UTC).timestamp()
    assert utc_day(midnight - 0.001) == "2025-02-28"
    assert utc_day(midnight) == "2025-03-01"
    assert utc_day(midnight - 1e-6) == "2025-02-28"
    assert utc_day(midnight - 4e-7) == "2025-02-28"  # datetime.fromtimestamp would round this up
    assert utc_day(0) == "1970-01-01"
    assert utc_day(datetime(2024, 2, 29, 12, tzinfo=UTC).timestamp()) == "2024-02-29"


@given(st.integers(min_value=0, max_value=4_000_000_000))
def test_utc_day_matches_datetime_for_whole_seconds(ts: int) -> None:
    assert utc_day(ts) == datetime.fromtimestamp(ts, UTC).date().isoformat()


def test_every_order_of_three_forbidden_operations_is_denied() -> None:
    actions = [DeployContract(b"x"), DeleteKey(OTHER.public_key), DeleteAccount("bob.near")]
    outcomes = {check(DEFAULT, *order).outcome for order in itertools.permutations(actions)}
    assert outcomes == {"deny"}
