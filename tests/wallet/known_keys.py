"""Deterministic test keys and units shared by the wallet tests (seeds 0..31 and 1..32).

Fixed seeds keep failures reproducible and let vectors be compared across test files and
with near-api-js; they are test-only and never used outside `tests/`.
"""

from gateway.wallet.keys import KeyPair

KEY = KeyPair.from_seed(bytes(range(32)))
OTHER = KeyPair.from_seed(bytes(range(1, 33)))
NEAR = 10**24
TGAS = 10**12
