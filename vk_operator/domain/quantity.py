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


def check_quantity(text: str) -> str:
    """``text`` when it is a non-negative quantity, else ValueError saying why (for config models:
    the API server refuses a Node status with a malformed or negative capacity)."""
    value = parse_quantity(text)
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return text


def capacity_problems(resources: dict[str, str]) -> list[str]:
    """What is wrong with a node's capacity (resource -> quantity), one line per resource."""
    problems = []
    for resource, text in resources.items():
        try:
            check_quantity(text)
        except ValueError as exc:
            problems.append(f"{resource}: {exc}")
    return problems
