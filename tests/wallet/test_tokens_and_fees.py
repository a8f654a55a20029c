"""What a call moves in tokens (NEP-141/171/245, the unknown), and what a transaction can burn.

The fee bound is checked against the node's own accounting: whatever the fake node (which
burns what the test tells it, like nearcore reports `tokens_burnt`) burns within NEAR's real
per-action costs must fit under `max_fee`.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.wallet.amounts import U128_MAX
from core.wallet.settings import FunctionCallRule, TokenLimit, WalletPolicy
from gateway.store import MIGRATIONS, Store
from gateway.wallet.analysis import analyze
from gateway.wallet.fees import MIN_GAS_PRICE, PRICE_FACTOR, max_fee, max_gas, tokens_burnt
from gateway.wallet.policy import PolicyEngine
from gateway.wallet.tokens import UNBOUNDED_CHARGE, TokenMove, ledger_charges, token_move
from gateway.wallet.transactions import (
    DelegateAction,
    DeployContract,
    FunctionCall,
    Transaction,
    Transfer,
)
from tests.wallet.known_keys import KEY, OTHER, TGAS


def move(method: str, args: object, deposit: int = 1, contract: str = "tok.near") -> TokenMove | None:
    raw = args if isinstance(args, bytes) else json.dumps(args).encode()
    return token_move(contract, method, raw, deposit)


# -- which calls move tokens, and how many ---------------------------------------------------


@pytest.mark.parametrize("method", ["ft_transfer", "ft_transfer_call", "near_withdraw"])
def test_nep141_amount_is_read_exactly(method: str) -> None:
    args = {"receiver_id": "bob.near", "amount": str(U128_MAX), "msg": ""}
    assert move(method, args) == TokenMove("tok.near", method, "NEP-141", U128_MAX, "bob.near")
    assert move(method, {**args, "amount": "0007"}).amount == 7  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["nft_transfer", "nft_transfer_call", "nft_approve"])
def test_an_nft_is_one_unit_and_an_approval_hands_it_over(method: str) -> None:
    found = move(method, {"token_id": "42", "account_id": "bob.near"}, deposit=0)
    assert found == TokenMove("tok.near", method, "NEP-171", 1, "bob.near")
    assert move(method, {"token_id": 42}).amount is None  # type: ignore[union-attr]


def test_nep245_single_and_batch_amounts() -> None:
    one = move("mt_transfer", {"receiver_id": "bob.near", "token_id": "a", "amount": "5"})
    assert one == TokenMove("tok.near", "mt_transfer", "NEP-245", 5, "bob.near")
    batch = {"receiver_id": "bob.near", "token_ids": ["a", "b"], "amounts": ["5", "7"]}
    for method in ("mt_batch_transfer", "mt_batch_transfer_call", "mt_approve"):
        assert move(method, batch).amount == 12  # type: ignore[union-attr]
    assert move("mt_batch_transfer", {**batch, "amounts": ["5"]}).amount is None  # type: ignore[union-attr]
    assert move("mt_batch_transfer", {**batch, "amounts": ["5", 7]}).amount is None  # type: ignore[union-attr]
    assert move("mt_transfer", {"receiver_id": "bob.near", "amount": "5"}).amount is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "args",
    [
        b'{"receiver_id":"b.near","amount":"1","amount":"9"}',
        b'{"receiver_id":"b.near","amount":"1","x":{"y":1,"y":2}}',  # a duplicate anywhere
        b'{"receiver_id":"b.near","amount":9}',
        b'{"receiver_id":"b.near","amount":"9.5"}',
        b'{"receiver_id":"b.near","amount":"-9"}',
        b'{"receiver_id":"b.near","amount":" 9"}',
        b'{"receiver_id":"b.near","amount":"340282366920938463463374607431768211456"}',
        b"[]",
        b"",
        b"\xff",
        b"[" * 100_000,
    ],
)
def test_an_amount_that_cannot_be_read_exactly_is_unbounded(args: bytes) -> None:
    found = move("ft_transfer", args)
    assert found is not None and found.amount is None and found.why


KEYS = ["receiver_id", "account_id", "amount", "amounts", "token_id", "token_ids", "msg"]
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=45)
    | st.from_regex(r"[0-9]{1,40}", fullmatch=True),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    method=st.sampled_from(
        ["ft_transfer", "nft_transfer", "mt_transfer", "mt_batch_transfer", "near_withdraw"]
    ),
    args=st.one_of(st.binary(max_size=200), JSON_VALUES.map(lambda v: json.dumps(v).encode())),
)
def test_hostile_arguments_never_crash_and_never_understate(method: str, args: bytes) -> None:
    """Whatever an agent sends, the reading is exact (what the contract would parse) or unbounded."""
    found = token_move("tok.near", method, args, 1)
    assert found is not None
    if found.amount is None:
        assert found.why
        return
    obj = json.loads(args)
    if method == "nft_transfer":
        assert found.amount == 1 and isinstance(obj["token_id"], str)
    elif method == "mt_batch_transfer":
        assert found.amount == sum(int(a) for a in obj["amounts"]) and len(obj["amounts"]) == len(
            obj["token_ids"]
        )
    else:
        assert found.amount == int(obj["amount"]) <= U128_MAX and isinstance(obj["amount"], str)


def test_the_escaped_digit_is_still_an_exact_amount() -> None:
    # JSON "\u0039" is the string "9" for every parser; reading it as 9 is exact, not a guess.
    assert move("ft_transfer", b'{"receiver_id":"b.near","amount":"\\u0039"}').amount == 9  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("method", "deposit", "moves"),
    [
        ("storage_unregister", 1, True),  # force=true burns the balance
        ("withdraw", 0, True),
        ("Send_Everything", 0, True),
        ("unwrap_and_drain", 0, True),
        ("claim", 1, True),  # the NEP-141 1-yocto mark of an asset-moving call
        ("claim", 0, False),
        ("storage_deposit", 10**22, False),  # its NEAR deposit is counted as NEAR
        ("play", 2, False),
    ],
)
def test_unknown_calls_that_may_move_assets(method: str, deposit: int, moves: bool) -> None:
    found = move(method, {}, deposit=deposit)
    assert (found is not None) == moves
    if found is not None:
        assert (found.standard, found.amount) == ("unknown", None)


def test_ledger_charges_sum_per_contract_and_unbounded_uses_any_limit() -> None:
    moves = [
        TokenMove("a.near", "ft_transfer", "NEP-141", 5),
        TokenMove("a.near", "ft_transfer", "NEP-141", 7),
        TokenMove("b.near", "ft_transfer", "NEP-141", None, why="x"),
        TokenMove("b.near", "ft_transfer", "NEP-141", 3),
    ]
    assert ledger_charges(moves) == {"a.near": 12, "b.near": UNBOUNDED_CHARGE}


def test_analysis_counts_our_own_delegates_tokens_but_not_a_relayed_one() -> None:
    ft = FunctionCall("ft_transfer", b'{"receiver_id":"m.near","amount":"5"}', 30 * TGAS, 1)
    ours = DelegateAction("alice.near", "tok.near", (ft,), 5, 1000, OTHER.public_key).sign(OTHER)
    theirs = DelegateAction("relayed.near", "tok.near", (ft,), 5, 1000, OTHER.public_key).sign(OTHER)
    own = analyze(Transaction("alice.near", KEY.public_key, 1, "alice.near", bytes(32), (ours,)))
    assert [(m.contract, m.amount) for m in own.token_moves] == [("tok.near", 5)]
    assert own.summary.endswith("Tokens of tok.near: 5")
    relayed = analyze(Transaction("alice.near", KEY.public_key, 1, "relayed.near", bytes(32), (theirs,)))
    assert relayed.token_moves == ()


# -- the policy on token limits ----------------------------------------------------------------

RULE = FunctionCallRule(receiver="tok.near", methods=["ft_transfer"], max_deposit=1, auto_approve=True)


def decide(amount: str, spent: int = 0, limits: dict[str, TokenLimit] | None = None, approved: bool = False):  # type: ignore[no-untyped-def]
    policy = WalletPolicy(function_calls=[RULE], token_limits=limits if limits is not None else LIMITS)
    args = json.dumps({"receiver_id": "m.near", "amount": amount}).encode()
    tx = Transaction(
        "alice.near", KEY.public_key, 1, "tok.near", bytes(32), (FunctionCall("ft_transfer", args, TGAS, 1),)
    )

    class Full:
        kind = "full_access"
        receiver_id = None
        method_names = ()
        allowance = None

    return PolicyEngine(policy).decide(
        analyze(tx),
        group="main",
        key_name="k",
        key_permission=Full(),
        spent_today=0,
        tokens_spent_today={"tok.near": spent},
        owner_approved=approved,
    )


LIMITS = {"tok.near": TokenLimit(daily_limit="100", auto_approve_max="10")}


def test_token_auto_limit_exactly_at_vs_one_above() -> None:
    assert decide("10").signs
    above = decide("11")
    assert above.outcome == "needs_approval"
    assert above.reasons == ("11 tok.near tokens exceed the token auto-approve limit 10",)
    assert decide("11", approved=True).signs


def test_token_daily_limit_exactly_at_vs_one_above_even_when_approved() -> None:
    assert decide("10", spent=90).signs
    over = decide("10", spent=91, approved=True)
    assert over.outcome == "deny"
    assert over.reasons == ("tok.near tokens: today's 91 + this 10 would exceed the daily token limit 100",)
    exhausted = decide("1", spent=UNBOUNDED_CHARGE)
    assert exhausted.outcome == "deny" and "unbounded amount" in exhausted.reasons[0]


def test_without_a_token_limit_it_always_asks() -> None:
    verdict = decide("1", limits={})
    assert verdict.outcome == "needs_approval"
    assert verdict.reasons == (
        "no token limit for tok.near (token_limits): its token transfers always need approval",
    )


# -- fees ----------------------------------------------------------------------------------------


def test_max_fee_bounds_what_nearcore_charges_for_each_action_kind() -> None:
    # nearcore's fees (send + execution, not-sir, in gas): transfer ~0.23 Tgas, function call
    # ~4.64 Tgas + 4.47 Mgas/byte + attached gas, deploy ~0.37 Tgas + 71.4 Mgas/byte, receipt ~0.22 Tgas.
    code = bytes(200_000)
    call = FunctionCall("m" * 200, bytes(60_000), 300 * TGAS, 0)
    tx = Transaction(
        "a.near", KEY.public_key, 1, "b.near", bytes(32), (Transfer(1), call, DeployContract(code))
    )
    nearcore = (
        216_119_000_000  # action receipt creation
        + 230_246_125_000  # transfer
        + 4_639_723_000_000
        + 4_471_868 * (200 + 60_000)
        + 300 * TGAS  # function call
        + 369_531_500_000
        + 71_385_943 * len(code)  # deploy
    )
    assert max_gas(tx) >= nearcore
    assert (
        max_fee(tx, 0) == max_gas(tx) * MIN_GAS_PRICE * PRICE_FACTOR
    )  # a price below NEAR's floor is not believed
    assert max_fee(tx, 10**9) == max_gas(tx) * 10**9 * PRICE_FACTOR


def test_tokens_burnt_sums_the_transaction_and_every_receipt() -> None:
    raw = {
        "transaction_outcome": {"outcome": {"tokens_burnt": "100"}},
        "receipts_outcome": [{"outcome": {"tokens_burnt": "20"}}, {"outcome": {"tokens_burnt": "0"}}],
    }
    assert tokens_burnt(raw) == 120
    for broken in (
        {**raw, "receipts_outcome": None},
        {**raw, "transaction_outcome": {}},
        {**raw, "receipts_outcome": [{"outcome": {"tokens_burnt": 20}}]},
        {**raw, "receipts_outcome": [{"outcome": {"tokens_burnt": "-5"}}]},
    ):
        assert tokens_burnt(broken) is None  # keep the reservation rather than undercount


# -- the ledger migration ---------------------------------------------------------------------------


async def test_upgrading_counts_failures_that_ran_and_releases_those_the_node_rejected(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(";".join(MIGRATIONS[:4]) + ";PRAGMA user_version=4;")
    columns = (
        "created_at, group_folder, key_name, signer_id, receiver_id, kind, summary, value, outcome, "
        "state, spend_day, error, updated_at"
    )
    rows = [
        ("submitted", None, str(10**24)),
        ("failed", "action 0 failed: FunctionCallError: ExecutionError: panicked", str(2 * 10**24)),
        (
            "failed",
            "transaction rejected: nonce 1 is not greater than the access key's nonce 5",
            str(4 * 10**24),
        ),
    ]
    for state, error, value in rows:
        db.execute(
            f"INSERT INTO wallet_requests ({columns}) VALUES "
            "(0, 'g', 'k', 'a.near', 'b.near', 'transaction', 's', ?, 'auto_approve', ?, '2025-06-01', ?, 0)",
            (value, state, error),
        )
    db.close()
    store = await Store.open(path)
    try:
        assert await store.wallet_spent("2025-06-01") == 3 * 10**24  # the executed failure counts now
        records = await store.wallet_requests()
        assert [(r.state, r.spend_day, r.fee, dict(r.tokens)) for r in reversed(records)] == [
            ("submitted", "2025-06-01", 0, {}),
            ("failed", "2025-06-01", 0, {}),
            ("failed", None, 0, {}),
        ]
    finally:
        await store.close()
