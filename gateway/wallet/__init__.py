"""NEAR wallet: keys, transactions, NEP-413, policy and signing (signing happens only in the host).

Its settings, account ids and amounts are plain data in `core.wallet`, so the config can hold them.
"""
