"""Kubernetes resource quantities ("250m", "1.5Gi", "1e3"), exactly, as the API server parses them."""

from __future__ import annotations

import re
from fractions import Fraction

_QUANTITY = re.compile(r"([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[eE][+-]?\d+|[numkMGTPE])?")
_BINARY_SUFFIXES = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL_SUFFIXES = {"n": -9, "u": -6, "m": -3, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(text: str | int | float) -> Fraction:
    """The exact value of a Kubernetes quantity; ValueError if malformed."""
    match = _QUANTITY.fullmatch(str(text).strip())
    if not match:
        raise ValueError(f"invalid quantity {text!r}")
    sign, number, suffix = match.groups()
    value = Fraction(number)
    if suffix in _BINARY_SUFFIXES:
        value *= 1024 ** _BINARY_SUFFIXES[suffix]
    elif suffix in _DECIMAL_SUFFIXES:
        value *= Fraction(10) ** _DECIMAL_SUFFIXES[suffix]
    elif suffix:  # decimal exponent
        value *= Fraction(10) ** int(suffix[1:])
    return -value if sign == "-" else value
