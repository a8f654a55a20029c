import base64
import hashlib

import pytest

from gateway.wallet import nep413
from gateway.wallet.base58 import b58encode
from gateway.wallet.transactions import (
    AccessKey,
    AddKey,
    CreateAccount,
    DelegateAction,
    DeleteAccount,
    DeleteKey,
    DeployContract,
    FullAccessPermission,
    FunctionCall,
    FunctionCallPermission,
    SignedTransaction,
    Stake,
    Transaction,
    Transfer,
)
from tests.wallet.known_keys import KEY, OTHER


def all_actions(key=KEY, other=OTHER):
    inner = (Transfer(7), FunctionCall("m", b"{}", 10**12, 1))
    delegate = DelegateAction("relayed.near", "app.near", inner, 5, 1000, other.public_key).sign(other)
    return (
        CreateAccount(),
        DeployContract(b"\0asm\x01\0\0\0"),
        FunctionCall("ft_transfer", b'{"a":1}', 30 * 10**12, 1),
        Transfer(10**24),
        Stake(5 * 10**24, other.public_key),
        AddKey(other.public_key, AccessKey(FullAccessPermission(), 0)),
        AddKey(other.public_key, AccessKey(FunctionCallPermission("app.near", ("a", "b"), 10**20), 3)),
        AddKey(other.public_key, AccessKey(FunctionCallPermission("app.near", (), None))),
        DeleteKey(other.public_key),
        DeleteAccount("bob.near"),
        delegate,
    )


def test_transfer_layout_by_hand():
    tx = Transaction("a.near", KEY.public_key, 1, "b.near", bytes(32), (Transfer(2),))
    expected = (
        b"\x06\0\0\0a.near"
        + b"\0"
        + KEY.public_key.data
        + (1).to_bytes(8, "little")
        + b"\x06\0\0\0b.near"
        + bytes(32)
        + b"\x01\0\0\0"
        + b"\x03"
        + (2).to_bytes(16, "little")
    )
    assert tx.to_borsh() == expected
    assert tx.digest() == hashlib.sha256(expected).digest()
    assert tx.hash == b58encode(hashlib.sha256(expected).digest())
    signed = tx.sign(KEY)
    assert signed.to_borsh() == expected + b"\0" + signed.signature
    assert base64.b64decode(signed.to_base64()) == signed.to_borsh()


def test_every_action_roundtrips_and_verifies():
    tx = Transaction("alice.near", KEY.public_key, 2**64 - 1, "alice.near", bytes(range(32)), all_actions())
    signed = tx.sign(KEY)
    assert signed.verify()
    again = SignedTransaction.from_base64(signed.to_base64())
    assert again == signed
    assert [a.TAG for a in tx.actions] == [0, 1, 2, 3, 4, 5, 5, 5, 6, 7, 8]
    assert tx.actions[-1].verify()


def test_tampering_fails_verification():
    tx = Transaction("alice.near", KEY.public_key, 1, "bob.near", bytes(32), (Transfer(1),))
    signed = tx.sign(KEY)
    forged = SignedTransaction(
        Transaction("alice.near", KEY.public_key, 1, "bob.near", bytes(32), (Transfer(2),)), signed.signature
    )
    assert not forged.verify()


def test_delegate_signing_prefix():
    da = DelegateAction("s.near", "r.near", (Transfer(1),), 1, 2, OTHER.public_key)
    msg = (2**30 + 366).to_bytes(4, "little") + da.to_borsh()
    sd = da.sign(OTHER)
    assert OTHER.public_key.verify(hashlib.sha256(msg).digest(), sd.signature)
    with pytest.raises(ValueError):
        da.sign(KEY)


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        Transaction("Alice", KEY.public_key, 1, "bob.near", bytes(32), ())
    with pytest.raises(ValueError):
        Transaction("alice.near", KEY.public_key, 1, "bob.near", bytes(31), ())
    with pytest.raises(ValueError):
        Transaction("alice.near", KEY.public_key, 2**64, "bob.near", bytes(32), ()).to_borsh()
    with pytest.raises(ValueError):
        Transaction("alice.near", KEY.public_key, 1, "b.near", bytes(32), (Transfer(2**128),)).to_borsh()
    with pytest.raises(ValueError):
        Transaction("alice.near", KEY.public_key, 1, "b.near", bytes(32), ()).sign(OTHER)
    sd = DelegateAction("s.near", "r.near", (), 1, 2, OTHER.public_key).sign(OTHER)
    with pytest.raises(ValueError):
        DelegateAction("s.near", "r.near", (sd,), 1, 2, OTHER.public_key)
    with pytest.raises(TypeError):
        Transaction("alice.near", KEY.public_key, 1, "b.near", bytes(32), ("transfer",)).to_borsh()
    good = Transaction("a.near", KEY.public_key, 1, "b.near", bytes(32), (Transfer(1),)).sign(KEY).to_borsh()
    for bad in (good[:-1], good + b"\0", good[:-65] + b"\x01" + good[-64:]):
        with pytest.raises(ValueError):
            SignedTransaction.from_borsh(bad)


def test_nep413_sign_and_verify():
    nonce = bytes(range(32))
    out = nep413.sign_message(KEY, "alice.near", "hi", nonce, "app.example", None)
    assert set(out) == {"accountId", "publicKey", "signature"}
    assert out["publicKey"] == str(KEY.public_key)
    assert nep413.verify_message(out, "hi", nonce, "app.example")
    assert not nep413.verify_message(out, "hi", nonce, "app.example", "https://cb")
    assert not nep413.verify_message(out, "hi!", nonce, "app.example")
    assert not nep413.verify_message({**out, "signature": "!!"}, "hi", nonce, "app.example")
    # the payload layout, spelled out from the spec
    payload = nep413.payload_bytes("hi", nonce, "app.example", "https://cb")
    assert payload == (
        (2**31 + 413).to_bytes(4, "little")
        + b"\x02\0\0\0hi"
        + nonce
        + b"\x0b\0\0\0app.example"
        + b"\x01\x0a\0\0\0https://cb"
    )
    with pytest.raises(ValueError):
        nep413.payload_bytes("hi", bytes(31), "r")


def test_strings_are_utf8():
    tx = Transaction("a.near", KEY.public_key, 1, "b.near", bytes(32), (FunctionCall("é", b"", 0, 0),))
    assert b"\x02\x00\x00\x00\xc3\xa9" in tx.to_borsh()
    assert nep413.payload_bytes("✓", bytes(32), "r")[4:11] == b"\x03\0\0\0\xe2\x9c\x93"
