"""Counts with SI suffixes: MACs and parameters are written 150M, 1.2G or plain integers."""
from __future__ import annotations

from pruningnet.errors import UserError

import math

_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
MAX_COUNT = 10**15  # far above any network; keeps int64 cost arithmetic exact


def parse_count(text: str | int, what: str = "value") -> int:
    """``"150M"`` -> 150_000_000; ``"1.2G"`` -> 1_200_000_000; plain integers pass through."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        s = str(text).strip().upper().replace("_", "").replace(",", "")
        suffix = s[-1] if s and s[-1] in _SUFFIX else ""
        try:
            number = float(s[: len(s) - len(suffix)]) * _SUFFIX[suffix]
            if math.isnan(number):
                raise ValueError(s)
        except ValueError:
            raise UserError(f"{what}={text!r} is not a count; accepted: an integer or a number with "
                            "K, M, G or T (e.g. 150M, 1.2G)") from None
        if not math.isfinite(number) or abs(number) > MAX_COUNT:
            raise UserError(f"{what}={text!r} is not accepted; accepted: a finite count up to 1000T")
        value = int(round(number))
    if value <= 0:
        raise UserError(f"{what}={text!r} must be positive")
    if value > MAX_COUNT:
        raise UserError(f"{what}={text!r} is not accepted; accepted: a finite count up to 1000T")
    return value


def format_count(n: float) -> str:
    """1_234_567 -> '1.23M'."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{suffix}"
    return str(int(n))
