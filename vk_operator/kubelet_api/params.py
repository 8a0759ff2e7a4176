"""Query parameters of the kubelet API, parsed and validated like the kubelet's PodLogOptions.

Pure: a bad value raises :class:`BadRequest` with a message naming the parameter, which the server
returns as 400 (the kubelet answers 400 for undecodable queries and 422 for invalid ones; the
message is what matters to a user reading ``kubectl logs`` output).

Integers are decimal int64s, as the kubelet decodes them (Go's ``strconv.ParseInt``): an optional
sign and ASCII digits, at most 2^63 - 1. Python's ``int()`` would also take ``1_000``, Unicode digits
and numbers of any size (``tailLines=2**63`` answered 200 with an empty body: the history selection
overflowed once the response had started). A ``sinceSeconds`` reaching back further than
:data:`SINCE_FOREVER` asks for every line the container ever wrote, so it is dropped rather than
turned into a time before year 1 (which ``datetime`` cannot represent, and cloud log APIs refuse).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping

from vk_operator.domain.logs import STREAMS, LogOptions

INT64_MAX = 2**63 - 1
SINCE_FOREVER = 100 * 366 * 24 * 3600  # seconds: older than any container
_DECIMAL = re.compile(r"[+-]?[0-9]+")
_DIGITS = len(str(INT64_MAX))

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"0", "f", "false", "n", "no", "off"})


class BadRequest(Exception):
    """The request is malformed; the message says which part and why."""


def _bool(query: Mapping[str, str], name: str) -> bool:
    raw = query.get(name)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _TRUE or value == "":  # `?follow` alone means true, as in Go's query decoding
        return True
    if value in _FALSE:
        return False
    raise BadRequest(f"invalid value for {name}: {raw!r} (expected true or false)")


def _shown(raw: str) -> str:
    return repr(raw) if len(raw) <= 40 else repr(raw[:40] + "...")


def _int(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    text = raw.strip()
    if not _DECIMAL.fullmatch(text):
        raise BadRequest(f"invalid value for {name}: {_shown(raw)} (expected an integer)")
    if len(text.lstrip("+-").lstrip("0")) > _DIGITS:  # no int() of a megabyte of digits
        bound = f">= {minimum}" if text.startswith("-") else f"<= {INT64_MAX}"
        raise BadRequest(f"invalid value for {name}: {_shown(raw)} (must be {bound})")
    value = int(text)
    if value < minimum:
        raise BadRequest(f"invalid value for {name}: {value} (must be >= {minimum})")
    if value > INT64_MAX:
        raise BadRequest(f"invalid value for {name}: {value} (must be <= {INT64_MAX})")
    return value


def parse_time(raw: str) -> datetime.datetime:
    """RFC 3339 (``2024-01-02T03:04:05Z``, fractions and offsets allowed); always timezone-aware."""
    text = raw.strip()
    if "T" not in text and "t" not in text:
        raise ValueError("not an RFC 3339 time")
    parsed = datetime.datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("an RFC 3339 time needs Z or an offset")
    return parsed


def parse_log_options(query: Mapping[str, str]) -> LogOptions:
    """PodLogOptions from ``/containerLogs`` query parameters (``tail`` is the legacy ``tailLines``)."""
    tail_raw = query.get("tail")
    if tail_raw is not None and query.get("tailLines") is None:
        query = {**query, "tailLines": tail_raw} if tail_raw != "all" else query
    since_time = None
    if (raw := query.get("sinceTime")) is not None:
        try:
            since_time = parse_time(raw)
        except ValueError:
            raise BadRequest(f"invalid value for sinceTime: {raw!r} (expected RFC 3339)") from None
    since_seconds = _int(query, "sinceSeconds", 1)
    if since_time is not None and since_seconds is not None:
        raise BadRequest("at most one of sinceTime or sinceSeconds may be specified")
    if since_seconds is not None and since_seconds > SINCE_FOREVER:
        since_seconds = None  # since before any container existed: everything
    stream = query.get("stream", "All")
    if stream not in STREAMS:
        raise BadRequest(f"invalid value for stream: {stream!r} (expected one of {', '.join(STREAMS)})")
    tail_lines = _int(query, "tailLines", 0)
    if tail_lines is not None and stream != "All":
        raise BadRequest("tailLines is only supported with stream=All")
    return LogOptions(
        follow=_bool(query, "follow"),
        previous=_bool(query, "previous"),
        timestamps=_bool(query, "timestamps"),
        tail_lines=tail_lines,
        limit_bytes=_int(query, "limitBytes", 1),
        since_seconds=since_seconds,
        since_time=since_time,
        stream=stream,
    )
