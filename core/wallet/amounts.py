"""Exact yoctoNEAR <-> NEAR conversion (1 NEAR = 10^24 yoctoNEAR); never floats."""

from __future__ import annotations

import re
from decimal import Decimal

YOCTO_PER_NEAR = 10**24
U128_MAX = 2**128 - 1
_NEAR_RE = re.compile(r"(\d+)(?:\.(\d{0,24}))?")


def parse_near(amount: str | int | Decimal) -> int:
    """NEAR (``"1.5"``, ``2``, ``Decimal("0.000001")``) -> yoctoNEAR int, exactly.

    More than 24 fractional digits, negatives, floats and non-numbers are ValueError.
    """
    if isinstance(amount, (bool, float)):
        raise ValueError("NEAR amounts must be str, int or Decimal, not float/bool")
    if isinstance(amount, int):
        text = str(amount)
    elif isinstance(amount, Decimal):
        if not amount.is_finite():
            raise ValueError("NEAR amount must be finite")
        text = format(amount, "f")
    elif isinstance(amount, str):
        text = amount.strip().replace("_", "")
    else:
        raise ValueError("NEAR amounts must be str, int or Decimal")
    m = _NEAR_RE.fullmatch(text)
    if m is None:
        if isinstance(amount, Decimal) and "." in text:
            whole, frac = text.split(".")
            if len(frac.rstrip("0")) <= 24:
                return parse_near(f"{whole}.{frac.rstrip('0')}")
        raise ValueError(f"invalid NEAR amount {amount!r} (non-negative, at most 24 decimals)")
    whole, frac = m.group(1), m.group(2) or ""
    yocto = int(whole) * YOCTO_PER_NEAR + int(frac.ljust(24, "0") or "0")
    return check_u128(yocto)


def format_near(yocto: int, *, min_decimals: int = 0) -> str:
    """yoctoNEAR int -> NEAR string with every significant digit (``"0.000000000000000000000001"``)."""
    check_u128(yocto)
    whole, frac = divmod(yocto, YOCTO_PER_NEAR)
    frac_s = f"{frac:024d}".rstrip("0")
    if len(frac_s) < min_decimals:
        frac_s = frac_s.ljust(min_decimals, "0")
    return f"{whole}.{frac_s}" if frac_s else str(whole)


def yocto_to_near(yocto: int) -> Decimal:
    """Exact Decimal NEAR value of a yoctoNEAR amount."""
    check_u128(yocto)
    return Decimal(format_near(yocto))


def near_to_yocto(near: str | int | Decimal) -> int:
    return parse_near(near)


def check_u128(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError("amount must be an int of yoctoNEAR")
    if not 0 <= value <= U128_MAX:
        raise ValueError("amount out of u128 range")
    return value
