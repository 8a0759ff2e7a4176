"""The OData subset Batch list operations take: ``$filter`` expressions and ``$select`` projections.

``$filter``: comparisons ``<property> eq|ne|gt|ge|lt|le <literal>`` and ``startswith(<property>,
'<prefix>')``, combined with ``and``, ``or``, ``not`` and parentheses. Literals are ``'text'``
(``''`` escapes a quote), ``datetime'<RFC 3339>'``, integers, ``true`` and ``false``. Properties are
``/``-paths into the listed object (``executionInfo/exitCode``). Each list operation allows only
the properties the service documents for it (learn.microsoft.com, "OData filters in Batch"); any
other property, or a malformed clause, is an :class:`ODataError` (the service's 400).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_TOKEN = re.compile(
    r"\s*(?:(?P<datetime>datetime'[^']*')|(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+)"
    r"|(?P<punct>[(),])|(?P<word>[A-Za-z_$][\w/$.]*))"
)
_OPERATORS = ("eq", "ne", "gt", "ge", "lt", "le")


class ODataError(ValueError):
    pass


def _parse_time(text: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ODataError(f"{text!r} is not a datetime") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


def _tokens(text: str) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        found = _TOKEN.match(text, pos)
        if found is None:
            raise ODataError(f"unexpected text at {pos}: {text[pos : pos + 20]!r}")
        pos = found.end()
        kind = found.lastgroup
        value = found.group(kind or "")
        if kind == "datetime":
            out.append(("literal", _parse_time(value[len("datetime'") : -1])))
        elif kind == "string":
            out.append(("literal", value[1:-1].replace("''", "'")))
        elif kind == "number":
            out.append(("literal", int(value)))
        elif kind == "punct":
            out.append((value, value))
        elif value in ("true", "false"):
            out.append(("literal", value == "true"))
        else:
            out.append(("word", value))
    return out


def _value(item: Mapping[str, Any], path: str) -> Any:
    current: Any = item
    for part in path.split("/"):
        if not isinstance(current, Mapping) or part not in current:
            return None
        current = current[part]
    if isinstance(current, str) and re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", current):
        return _parse_time(current)
    return current


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or type(left) is not type(right):
        return False
    return bool({"gt": left > right, "ge": left >= right, "lt": left < right, "le": left <= right}[op])


class _Parser:
    def __init__(self, text: str, allowed: Collection[str]) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.allowed = allowed

    def peek(self) -> tuple[str, Any] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self, kind: str | None = None) -> tuple[str, Any]:
        token = self.peek()
        if token is None or (kind is not None and token[0] != kind):
            raise ODataError(f"expected {kind or 'more'} at token {self.pos}")
        self.pos += 1
        return token

    def word(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token[0] == "word" and token[1] in words:
            self.pos += 1
            return True
        return False

    def prop(self) -> str:
        name = str(self.take("word")[1])
        if name not in self.allowed:
            raise ODataError(f"property {name!r} cannot be filtered on here")
        return name

    def expression(self) -> Predicate:
        left = self.term()
        while self.word("or"):
            right = self.term()
            left = (lambda a, b: lambda item: a(item) or b(item))(left, right)
        return left

    def term(self) -> Predicate:
        left = self.factor()
        while self.word("and"):
            right = self.factor()
            left = (lambda a, b: lambda item: a(item) and b(item))(left, right)
        return left

    def factor(self) -> Predicate:
        if self.word("not"):
            inner = self.factor()
            return lambda item: not inner(item)
        token = self.peek()
        if token is not None and token[0] == "(":
            self.take("(")
            inner = self.expression()
            self.take(")")
            return inner
        if self.word("startswith"):
            self.take("(")
            path = self.prop()
            self.take(",")
            prefix = self.take("literal")[1]
            self.take(")")
            if not isinstance(prefix, str):
                raise ODataError("startswith takes a string")
            return lambda item: str(_value(item, path) or "").startswith(prefix)
        path = self.prop()
        op = str(self.take("word")[1])
        if op not in _OPERATORS:
            raise ODataError(f"unknown operator {op!r}")
        literal = self.take("literal")[1]
        return lambda item: _compare(op, _value(item, path), literal)


def parse_filter(text: str, allowed: Collection[str]) -> Predicate:
    parser = _Parser(text, allowed)
    predicate = parser.expression()
    if parser.peek() is not None:
        raise ODataError(f"unexpected {parser.peek()[1]!r} after the expression")  # type: ignore[index]
    return predicate


def select(item: Mapping[str, Any], properties: Collection[str], known: Collection[str]) -> dict[str, Any]:
    """``item`` with only the top-level ``properties`` (each must be one of ``known``)."""
    for name in properties:
        if name not in known:
            raise ODataError(f"$select property {name!r} is not a property of the listed object")
    return {k: v for k, v in item.items() if k in properties}


# What the service lets each list filter on (learn.microsoft.com, "OData filters in Batch").
TASK_FILTER = frozenset(
    {
        "id",
        "state",
        "creationTime",
        "stateTransitionTime",
        "previousState",
        "previousStateTransitionTime",
        "executionInfo/startTime",
        "executionInfo/endTime",
        "executionInfo/exitCode",
        "executionInfo/retryCount",
        "executionInfo/requeueCount",
        "executionInfo/result",
        "nodeInfo/nodeId",
        "nodeInfo/poolId",
    }
)
JOB_FILTER = frozenset({"id", "state", "creationTime", "stateTransitionTime", "priority", "poolInfo/poolId"})
POOL_FILTER = frozenset({"id", "state", "allocationState", "vmSize", "creationTime"})
NODE_FILTER = frozenset({"id", "state", "schedulingState", "isDedicated"})
