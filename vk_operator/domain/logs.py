"""Container logs: the options a reader asks for, the entries a provider yields, and how they render.

Pure: the kubelet API parses the query into :class:`LogOptions`, a provider yields
:class:`LogEntry` values, and the helpers here apply ``sinceTime``/``tailLines``/``limitBytes`` and
format ``timestamps`` the way the kubelet does (RFC 3339 with nanoseconds, a space, the line).
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
from collections.abc import Iterable

STREAMS = ("All", "Stdout", "Stderr")


@dataclasses.dataclass(frozen=True)
class LogOptions:
    """What ``GET /containerLogs`` asks for (PodLogOptions, validated)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_seconds: int | None = None
    since_time: datetime.datetime | None = None
    stream: str = "All"

    def since(self, now: datetime.datetime) -> datetime.datetime | None:
        """The earliest entry time wanted, from sinceTime or sinceSeconds (never both)."""
        if self.since_time is not None:
            return self.since_time
        if self.since_seconds is not None:
            return now - datetime.timedelta(seconds=self.since_seconds)
        return None


@dataclasses.dataclass(frozen=True)
class LogEntry:
    """One line of a container's output; ``text`` has no trailing newline."""

    time: datetime.datetime
    text: str
    stream: str = "Stdout"


def rfc3339_nano(moment: datetime.datetime) -> str:
    """``2006-01-02T15:04:05.999999999Z`` as the kubelet writes it (fixed 9 digits, UTC)."""
    utc = moment.astimezone(datetime.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond * 1000:09d}Z"


def format_entry(entry: LogEntry, timestamps: bool) -> bytes:
    text = f"{rfc3339_nano(entry.time)} {entry.text}" if timestamps else entry.text
    return (text + "\n").encode()


def wanted(entry: LogEntry, options: LogOptions, since: datetime.datetime | None) -> bool:
    if since is not None and entry.time < since:
        return False
    return options.stream == "All" or entry.stream == options.stream


def select_history(
    entries: Iterable[LogEntry], options: LogOptions, now: datetime.datetime
) -> list[LogEntry]:
    """Apply since*, stream and tailLines to a finite history (what a non-follow read returns)."""
    since = options.since(now)
    kept = (e for e in entries if wanted(e, options, since))
    if options.tail_lines is None:
        return list(kept)
    if options.tail_lines == 0:
        return []
    return list(collections.deque(kept, maxlen=options.tail_lines))


class ByteLimit:
    """limitBytes: pass output through until the budget is spent, cutting the last chunk exactly."""

    def __init__(self, limit: int | None) -> None:
        self.remaining = limit

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0

    def take(self, data: bytes) -> bytes:
        if self.remaining is None:
            return data
        data = data[: max(self.remaining, 0)]
        self.remaining -= len(data)
        return data
