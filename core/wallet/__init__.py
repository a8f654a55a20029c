"""NEAR wallet settings and the pure validation they need (account ids, amounts); no keys, no I/O."""
