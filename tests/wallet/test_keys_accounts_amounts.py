from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.wallet import accounts, amounts
from gateway.wallet.base58 import b58decode, b58encode
from gateway.wallet.keys import InvalidKey, KeyPair, PublicKey, signature_from_string, signature_to_string

# --- base58 / keys -----------------------------------------------------------------------


@given(st.binary(max_size=80))
def test_base58_roundtrip(data):
    assert b58decode(b58encode(data)) == data


def test_base58_rejects_bad_alphabet():
    for bad in ("0", "O", "I", "l", "+"):
        with pytest.raises(ValueError):
            b58decode("abc" + bad)


def test_generate_parse_sign_verify():
    kp = KeyPair.generate()
    pk_str = str(kp.public_key)
    assert pk_str.startswith("ed25519:")
    assert PublicKey.from_string(pk_str) == kp.public_key
    again = KeyPair.from_string(kp.export_secret())
    assert again.public_key == kp.public_key
    sig = kp.sign(b"msg")
    assert len(sig) == 64 and sig == again.sign(b"msg")  # ed25519 is deterministic
    assert kp.public_key.verify(b"msg", sig)
    assert not kp.public_key.verify(b"msG", sig)
    assert not kp.public_key.verify(b"msg", sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not kp.public_key.verify(b"msg", sig[:63])
    assert signature_from_string(signature_to_string(sig)) == sig


def test_secret_never_in_repr_and_wiped():
    kp = KeyPair.generate()
    secret = kp.export_secret()
    body = secret.split(":")[1]
    for text in (repr(kp), str(kp), f"{kp}"):
        assert body not in text and "hidden" in text
    with kp:
        kp.sign(b"x")
    assert kp.wiped
    with pytest.raises(RuntimeError):
        kp.sign(b"x")
    with pytest.raises(RuntimeError):
        kp.export_secret()
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(kp)


def test_from_seed_zeroes_bytearray_seed():
    seed = bytearray(range(32))
    kp = KeyPair.from_seed(seed)
    assert seed == bytearray(32)
    assert kp.public_key == KeyPair.from_seed(bytes(range(32))).public_key


def test_strict_parsing():
    kp = KeyPair.generate()
    good_pk, good_sk = str(kp.public_key), kp.export_secret()
    raw_sk = b58decode(good_sk[8:])
    other = KeyPair.generate()
    bad_pk = [
        good_pk[8:],  # no prefix
        "secp256k1:" + good_pk[8:],
        "ed25519:",
        "ed25519:" + b58encode(kp.public_key.data + b"\x01"),  # 33 bytes
        "ed25519:" + b58encode(kp.public_key.data[:31]),
        good_pk[:-1] + "0",  # not in the alphabet
    ]
    for text in bad_pk:
        with pytest.raises(InvalidKey):
            PublicKey.from_string(text)
    bad_sk = [
        good_sk[8:],
        "ed25519:" + b58encode(raw_sk[:32]),  # seed only
        "ed25519:" + b58encode(raw_sk[:32] + other.public_key.data),  # mismatched public half
        good_sk[:-1] + "l",
    ]
    for text in bad_sk:
        with pytest.raises(InvalidKey):
            KeyPair.from_string(text)
    with pytest.raises(InvalidKey, match="does not match") as info:
        KeyPair.from_string(bad_sk[2])
    assert good_sk[8:] not in str(info.value)


# --- account ids -------------------------------------------------------------------------

VALID = [
    "aa",
    "a-a",
    "a-aa",
    "100",
    "0o",
    "com",
    "near",
    "bowen",
    "b-o_w_e-n",
    "b.owen",
    "bro.wen",
    "a.ha",
    "a.b-a.ra",
    "system",
    "over.9000",
    "google.com",
    "illia.cheapaccounts.near",
    "0o0ooo00oo00o",
    "alex-skidanov",
    "10-4.8-2",
    "b-o_w_e-n",
    "no_lols",
    "0123456789012345678901234567890123456789012345678901234567890123",
    "near.a",
    "a" * 64,
    "0x" + "a" * 40,
]
INVALID = [
    "",
    "a",
    "A",
    "Abc",
    "-near",
    "near-",
    "-near-",
    "near.",
    ".near",
    "near@",
    "@near",
    "неар",
    "@@@@@",
    "0__0",
    "0_-_0",
    "0_-_0",
    "..",
    "a..near",
    "nEar",
    "_bowen",
    "hello world",
    "abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz.abcdefghijklmnopqrstuvwxyz",
    "01234567890123456789012345678901234567890123456789012345678901234",
    "a" * 65,
    "near\n",
    "near ",
]


@pytest.mark.parametrize("aid", VALID)
def test_valid_account_ids(aid):
    assert accounts.is_valid_account_id(aid)
    assert accounts.validate_account_id(aid) == aid


@pytest.mark.parametrize("aid", INVALID)
def test_invalid_account_ids(aid):
    assert not accounts.is_valid_account_id(aid)
    with pytest.raises(accounts.InvalidAccountId):
        accounts.validate_account_id(aid)


def test_account_kinds():
    pk = KeyPair.generate().public_key
    implicit = accounts.implicit_account_id(pk.data)
    assert len(implicit) == 64 and accounts.account_kind(implicit) == "near-implicit"
    assert accounts.account_kind("0x" + "ab" * 20) == "eth-implicit"
    assert accounts.account_kind("near") == "top-level"
    assert accounts.account_kind("alice.near") == "sub-account"
    assert not accounts.is_near_implicit("A" * 64)
    assert not accounts.is_valid_account_id(None)


_part = st.from_regex(r"\A([a-z0-9]+[-_])*[a-z0-9]+\Z")


@given(st.lists(_part, min_size=1, max_size=4).map(".".join))
def test_property_generated_ids(aid):
    assert accounts.is_valid_account_id(aid) == (2 <= len(aid) <= 64)


@given(st.text(max_size=70))
def test_property_any_text_matches_reference(aid):
    # A reference implementation of nearcore's char-by-char validator (near-account-id crate).
    def reference(s: str) -> bool:
        if not 2 <= len(s) <= 64:
            return False
        last_separator = True  # the start behaves like after a separator
        for c in s:
            if c in "abcdefghijklmnopqrstuvwxyz0123456789":
                last_separator = False
            elif c in "-_.":
                if last_separator:
                    return False
                last_separator = True
            else:
                return False
        return not last_separator

    assert accounts.is_valid_account_id(aid) == reference(aid)


@given(st.text(alphabet="abc0-_.", max_size=70))
def test_property_dense_alphabet_matches_reference(aid):
    test_property_any_text_matches_reference.hypothesis.inner_test(aid)


# --- amounts -----------------------------------------------------------------------------


def test_amount_conversions_exact():
    assert amounts.parse_near("1") == 10**24
    assert amounts.parse_near("1.5") == 15 * 10**23
    assert amounts.parse_near("0.000000000000000000000001") == 1
    assert amounts.parse_near(Decimal("0.1")) == 10**23
    assert amounts.parse_near(Decimal("1.000000000000000000000000000")) == 10**24
    assert amounts.parse_near(3) == 3 * 10**24
    assert amounts.parse_near("1_000") == 1000 * 10**24
    assert amounts.format_near(1) == "0.000000000000000000000001"
    assert amounts.format_near(10**24) == "1"
    assert amounts.format_near(123456789 * 10**24 + 1) == "123456789.000000000000000000000001"
    assert amounts.format_near(10**24, min_decimals=2) == "1.00"
    assert amounts.yocto_to_near(15 * 10**23) == Decimal("1.5")
    assert amounts.format_near(amounts.U128_MAX) == "340282366920938.463463374607431768211455"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "-1",
        "1.0000000000000000000000001",
        "1e3",
        "abc",
        "1.2.3",
        1.5,
        True,
        Decimal("NaN"),
        Decimal("1E-25"),
        "340282366920939",
    ],
)
def test_amount_rejects(bad):
    with pytest.raises(ValueError):
        amounts.parse_near(bad)


def test_format_rejects_out_of_range():
    for bad in (-1, 2**128, 1.0):
        with pytest.raises(ValueError):
            amounts.format_near(bad)


@given(st.integers(min_value=0, max_value=amounts.U128_MAX))
def test_property_amount_roundtrip(yocto):
    assert amounts.parse_near(amounts.format_near(yocto)) == yocto
    assert amounts.parse_near(amounts.yocto_to_near(yocto)) == yocto
