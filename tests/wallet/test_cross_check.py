"""Byte-for-byte cross-check against near-api-js (tests/peers/near_vectors.mjs, run with node).

Skipped locally when the npm peer is not installed; a failure under CLAWGATE_REQUIRE_DOCKER=1,
where CI installs it (`npm install --prefix tests/peers`).

Strings are ASCII here: borsh-js 1.0 (used by near-api-js 6) writes a string's UTF-16 code units
truncated to bytes, not UTF-8, so non-ASCII strings differ; borsh and nearcore use UTF-8, which
test_transactions.py::test_strings_are_utf8 pins.
"""

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from gateway.wallet import nep413
from gateway.wallet.base58 import b58encode
from gateway.wallet.keys import KeyPair
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
    SignedDelegate,
    Stake,
    Transaction,
    Transfer,
)

PEERS = Path(__file__).resolve().parents[1] / "peers"
SCRIPT = PEERS / "near_vectors.mjs"


def run_peer(request: dict) -> dict:
    node = shutil.which("node")
    if node is None or not (PEERS / "node_modules" / "@near-js" / "transactions").is_dir():
        msg = "near-api-js peer not installed (npm install --prefix tests/peers)"
        if os.environ.get("CLAWGATE_REQUIRE_DOCKER") == "1":
            pytest.fail(msg + " (CLAWGATE_REQUIRE_DOCKER=1)")
        pytest.skip(msg)
    proc = subprocess.run(
        [node, str(SCRIPT)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def action_json(a, delegate_key_by_pk) -> dict:
    if isinstance(a, CreateAccount):
        return {"type": "create_account"}
    if isinstance(a, DeployContract):
        return {"type": "deploy_contract", "code_hex": a.code.hex()}
    if isinstance(a, FunctionCall):
        return {
            "type": "function_call",
            "method_name": a.method_name,
            "args_hex": a.args.hex(),
            "gas": str(a.gas),
            "deposit": str(a.deposit),
        }
    if isinstance(a, Transfer):
        return {"type": "transfer", "deposit": str(a.deposit)}
    if isinstance(a, Stake):
        return {"type": "stake", "stake": str(a.stake), "public_key": str(a.public_key)}
    if isinstance(a, AddKey):
        p = a.access_key.permission
        if isinstance(p, FullAccessPermission):
            ak = {"permission": "full_access", "nonce": str(a.access_key.nonce)}
        else:
            ak = {
                "permission": "function_call",
                "nonce": str(a.access_key.nonce),
                "receiver_id": p.receiver_id,
                "method_names": list(p.method_names),
                "allowance": None if p.allowance is None else str(p.allowance),
            }
        return {"type": "add_key", "public_key": str(a.public_key), "access_key": ak}
    if isinstance(a, DeleteKey):
        return {"type": "delete_key", "public_key": str(a.public_key)}
    if isinstance(a, DeleteAccount):
        return {"type": "delete_account", "beneficiary_id": a.beneficiary_id}
    if isinstance(a, SignedDelegate):
        da = a.delegate_action
        return {
            "type": "delegate",
            "sender_id": da.sender_id,
            "receiver_id": da.receiver_id,
            "actions": [action_json(x, delegate_key_by_pk) for x in da.actions],
            "nonce": str(da.nonce),
            "max_block_height": str(da.max_block_height),
            "secret_key": delegate_key_by_pk[da.public_key].export_secret(),
        }
    raise AssertionError(a)


def random_actions(rng: random.Random, keys: list[KeyPair], *, delegate: bool):
    pk = rng.choice(keys).public_key
    u128 = lambda: rng.choice([0, 1, 2**128 - 1, rng.getrandbits(128)])  # noqa: E731
    u64 = lambda: rng.choice([0, 1, 2**64 - 1, rng.getrandbits(64)])  # noqa: E731
    methods = tuple(rng.choice(["ft_transfer", "a_b", "", "x" * 50]) for _ in range(rng.randint(0, 3)))
    out = [
        CreateAccount(),
        DeployContract(rng.randbytes(rng.randint(0, 300))),
        FunctionCall(
            rng.choice(["ft_transfer_call", "", "storage_deposit"]),
            rng.randbytes(rng.randint(0, 64)),
            u64(),
            u128(),
        ),
        Transfer(u128()),
        Stake(u128(), pk),
        AddKey(pk, AccessKey(FullAccessPermission(), u64())),
        AddKey(pk, AccessKey(FunctionCallPermission("app.near", methods, rng.choice([None, u128()])), u64())),
        DeleteKey(pk),
        DeleteAccount(rng.choice(["bob.near", "0x" + "ab" * 20, "a" * 64])),
    ]
    if delegate:
        signer = rng.choice(keys)
        inner = tuple(random_actions(rng, keys, delegate=False)[: rng.randint(0, 9)])
        da = DelegateAction("relayed.near", "dapp.testnet", inner, u64(), u64(), signer.public_key)
        out.append(da.sign(signer))
    rng.shuffle(out)
    return out


def test_transactions_match_near_api_js():
    rng = random.Random(413366)
    keys = [KeyPair.from_seed(rng.randbytes(32)) for _ in range(3)]
    by_pk = {k.public_key: k for k in keys}
    txs, requests = [], []
    for i in range(12):
        signer = keys[i % len(keys)]
        actions = random_actions(rng, keys, delegate=True)
        if i < 11:  # every action kind alone, then mixed transactions
            actions = [actions[i % len(actions)]]
        block_hash = rng.randbytes(32) if i else bytes(32)
        tx = Transaction(
            rng.choice(["alice.near", "a" * 64, "x.y-z_w.testnet"]),
            signer.public_key,
            rng.getrandbits(64),
            "receiver.near",
            block_hash,
            tuple(actions),
        )
        txs.append((tx, signer))
        requests.append(
            {
                "secret_key": signer.export_secret(),
                "signer_id": tx.signer_id,
                "receiver_id": tx.receiver_id,
                "nonce": str(tx.nonce),
                "block_hash": b58encode(block_hash),
                "actions": [action_json(a, by_pk) for a in tx.actions],
            }
        )
    # make sure both AddKey permissions, a Delegate and every tag really were covered
    tags = {a.TAG for tx, _ in txs for a in tx.actions}
    assert tags == set(range(9))
    perms = {type(a.access_key.permission) for tx, _ in txs for a in tx.actions if isinstance(a, AddKey)}
    assert perms == {FullAccessPermission, FunctionCallPermission}

    out = run_peer({"transactions": requests, "keys": [k.export_secret() for k in keys]})
    assert out["keys"] == [str(k.public_key) for k in keys]
    for (tx, signer), js in zip(txs, out["transactions"], strict=True):
        signed = tx.sign(signer)
        assert js["public_key"] == str(signer.public_key)
        assert js["tx_hex"] == tx.to_borsh().hex()
        assert js["sha256_hex"] == tx.digest().hex()
        assert js["hash"] == tx.hash
        assert js["signature_hex"] == signed.signature.hex()
        assert js["signed_hex"] == signed.to_borsh().hex()
        assert js["signed_base64"] == signed.to_base64()
        assert signed.verify()


def test_nep413_matches_near_api_js():
    rng = random.Random(413)
    key = KeyPair.from_seed(rng.randbytes(32))
    cases = []
    for message, recipient, cb in [
        ("Hello NEAR!", "myapp.com", None),
        ("", "r.near", "https://example.com/callback?x=1"),
        ("sign in to ~!@#$%^&*() " * 20, "a", ""),
    ]:
        cases.append(
            {
                "secret_key": key.export_secret(),
                "account_id": "alice.near",
                "message": message,
                "recipient": recipient,
                "nonce_hex": rng.randbytes(32).hex(),
                "callback_url": cb,
            }
        )
    out = run_peer({"nep413": cases})
    for case, js in zip(cases, out["nep413"], strict=True):
        nonce = bytes.fromhex(case["nonce_hex"])
        ours = nep413.sign_message(
            key, "alice.near", case["message"], nonce, case["recipient"], case["callback_url"]
        )
        assert ours == js
        assert nep413.verify_message(js, case["message"], nonce, case["recipient"], case["callback_url"])


def test_amount_parsing_matches_near_api_js():
    from core.wallet.amounts import format_near, parse_near

    texts = ["0", "1", "1.5", "0.000000000000000000000001", "123456.789012345678901234", "10.0100"]
    yoctos = [0, 1, 10**24, 10**24 + 1, 2**128 - 1, 123 * 10**21]
    out = run_peer({"parse_near": texts, "format_near": [str(y) for y in yoctos]})
    assert out["parse_near"] == [str(parse_near(t)) for t in texts]
    assert [s.replace(",", "") for s in out["format_near"]] == [format_near(y) for y in yoctos]
