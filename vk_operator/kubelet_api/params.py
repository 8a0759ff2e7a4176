"""Query parameters of the kubelet API, parsed and validated like the kubelet's PodLogOptions.

Pure: a bad value raises :class:`BadRequest` with a message naming the parameter, which the server
returns as 400 (the kubelet answers 400 for undecodable queries and 422 for invalid ones; the
message is what matters to a user reading ``kubectl logs`` output).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from vk_operator.domain.logs import STREAMS, LogOptions

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


def _int(query: Mapping[str, str], name: str, minimum: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise BadRequest(f"invalid value for {name}: {raw!r} (expected an integer)") from None
    if value < minimum:
        raise BadRequest(f"invalid value for {name}: {value} (must be >= {minimum})")
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
