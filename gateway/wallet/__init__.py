"""NEAR wallet: keys, account ids, transactions, NEP-413 and amounts (signing happens only in the host)."""
