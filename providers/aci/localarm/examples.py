"""Helpers around the spec's stored examples: comparing shapes, turning responses into requests."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from providers.swagger import READONLY_MARK, compile_definition, strip_marked

from .spec import load_spec


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def shape_differences(
    expected: Any,
    actual: Any,
    *,
    compare_values: Callable[[str], bool] | None = None,
    ignore: Iterable[str] = (),
) -> list[str]:
    """How ``actual`` differs in structure from ``expected`` (an example body).

    Reports ``missing <path>``, ``extra <path>``, ``type <path> ...``, ``length <path> ...`` and,
    where ``compare_values(path)`` is true, ``value <path> ...``. Paths are ``/``-joined keys and list
    indexes (``properties/containers/0/name``); a path matching one of the ``ignore`` fnmatch
    patterns is skipped with everything under it.
    """
    patterns = list(ignore)
    out: list[str] = []

    def skipped(path: str) -> bool:
        return any(fnmatch.fnmatchcase(path, p) for p in patterns)

    def walk(exp: Any, act: Any, path: str) -> None:
        if path and skipped(path):
            return
        if _kind(exp) != _kind(act):
            out.append(f"type {path or '<root>'}: expected {_kind(exp)}, got {_kind(act)}")
            return
        if isinstance(exp, dict):
            for key in exp:
                sub = f"{path}/{key}" if path else key
                if key not in act:
                    if not skipped(sub):
                        out.append(f"missing {sub}")
                else:
                    walk(exp[key], act[key], sub)
            for key in act:
                sub = f"{path}/{key}" if path else key
                if key not in exp and not skipped(sub):
                    out.append(f"extra {sub}")
        elif isinstance(exp, list):
            if len(exp) != len(act):
                out.append(f"length {path or '<root>'}: expected {len(exp)}, got {len(act)}")
            for i, (e, a) in enumerate(zip(exp, act, strict=False)):
                walk(e, a, f"{path}/{i}" if path else str(i))
        elif compare_values is not None and compare_values(path) and exp != act:
            out.append(f"value {path}: expected {exp!r}, got {act!r}")

    walk(expected, actual, "")
    return out


def request_body_from_response(body: dict[str, Any], definition: str = "ContainerGroup") -> dict[str, Any]:
    """A response body without its read-only properties: what a client could PUT to get it."""
    schema = compile_definition(load_spec(), definition, "response")
    stripped: dict[str, Any] = strip_marked(body, schema, READONLY_MARK)
    return stripped
