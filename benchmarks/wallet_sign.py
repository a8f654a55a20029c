"""Wallet signing benchmark: analyze + policy-check + sign NEAR transactions, next to bare ed25519.

Every transaction an agent asks for is analyzed and policy-checked before it is signed
(invariant 5, docs/ARCHITECTURE.md); this measures what that costs on top of the signature itself.

- near_sign_per_s: per transaction `analyze(tx)`, `PolicyEngine.decide(...)` and a signature
  the way the gateway makes it: `KeyStore.signer()` decrypts the key from the real encrypted
  store (AES-256-GCM under the master key) and wipes it after `tx.sign(key)` (borsh encoding,
  sha256, ed25519) — over a fixed mix of Transfer and FunctionCall transactions built up front.
- near_sign_baseline_nacl_per_s: PyNaCl `SigningKey.sign` of the same sha256 digests with
  the same seed, in the same run (the floor: nothing but the signature).

The two are measured in alternating rounds so both see the same machine noise; each
reports its best round. Single-threaded, so the number is per core.
Run alone: `python -m benchmarks.wallet_sign` (prints JSON).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from nacl.signing import SigningKey  # noqa: E402

from core.wallet.settings import FunctionCallRule, TokenLimit, WalletPolicy  # noqa: E402
from gateway.wallet.analysis import analyze  # noqa: E402
from gateway.wallet.keys import KeyPair  # noqa: E402
from gateway.wallet.keystore import KeyStore  # noqa: E402
from gateway.wallet.policy import PolicyEngine  # noqa: E402
from gateway.wallet.transactions import FunctionCall, Transaction, Transfer  # noqa: E402

ROUNDS = 4
MIX = 64  # distinct transactions cycled through


def _transactions(key: KeyPair) -> list[Transaction]:
    """Half transfers (whitelisted and not), half NEP-141 style calls with JSON args."""
    txs: list[Transaction] = []
    for i in range(MIX):
        if i % 2:
            receiver, actions = ("bob.near" if i % 4 == 1 else "carol.near"), (Transfer(10**21 * (i + 1)),)
        else:
            args = json.dumps({"receiver_id": "bob.near", "amount": str(10**6 * (i + 1)), "memo": None})
            receiver = "usdt.tether-token.near"
            actions = (FunctionCall("ft_transfer", args.encode(), 30 * 10**12, 1),)
        txs.append(Transaction("alice.near", key.public_key, 1000 + i, receiver, os.urandom(32), actions))
    return txs


def _rate(step: Callable[[int], object], seconds: float) -> float:
    """Calls of `step(i)` per second over about `seconds` (checked every 64 calls)."""
    done = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for i in range(done, done + 64):
            step(i)
        done += 64
        now = time.perf_counter()
        if now >= deadline:
            return done / (now - start)


def run(seconds: float = 2.0) -> dict[str, int]:
    """Best-round rates over `seconds` in total (split evenly between the two measurements)."""
    with tempfile.TemporaryDirectory() as config_dir:
        return _run(seconds, KeyStore(Path(config_dir)))


def _run(seconds: float, store: KeyStore) -> dict[str, int]:
    seed = os.urandom(32)
    key = KeyPair.from_seed(seed)
    nacl_key = SigningKey(seed)
    info = store.import_key("bench", key.export_secret(), network="mainnet", account_id="alice.near")
    engine = PolicyEngine(
        WalletPolicy(
            auto_approve_max="1",
            daily_limit="1000000",
            transfer_whitelist=["bob.near"],
            function_calls=[
                FunctionCallRule(
                    receiver="usdt.tether-token.near",
                    max_deposit="0.000000000000000000000001",
                    auto_approve=True,
                )
            ],
            # token transfers sign without asking only within limits for their contract
            token_limits={"usdt.tether-token.near": TokenLimit(daily_limit=str(10**15))},
        )
    )
    permission = info.permission
    txs = _transactions(key)
    digests = [tx.digest() for tx in txs]
    for tx in txs:  # the mix must be signable without asking, or the benchmark measures the wrong path
        verdict = engine.decide(
            analyze(tx), group="main", key_name="bench", key_permission=permission, spent_today=0
        )
        assert verdict.signs, verdict

    def near(i: int) -> object:
        tx = txs[i % MIX]
        engine.decide(analyze(tx), group="main", key_name="bench", key_permission=permission, spent_today=0)
        with store.signer("bench") as pair:
            return tx.sign(pair)

    def bare(i: int) -> object:
        return nacl_key.sign(digests[i % MIX])

    share = seconds / (2 * ROUNDS)
    near_rates, nacl_rates = [], []
    for _ in range(ROUNDS):
        near_rates.append(_rate(near, share))
        nacl_rates.append(_rate(bare, share))
    key.wipe()
    return {"near_sign_per_s": int(max(near_rates)), "near_sign_baseline_nacl_per_s": int(max(nacl_rates))}


if __name__ == "__main__":
    print(json.dumps(run(float(sys.argv[1]) if len(sys.argv) > 1 else 2.0)))
