"""``kubectl logs`` on ACI: ``containers.list_logs`` read, parsed and, for ``-f``, polled.

ACI keeps the output of a container's current run (up to 4 MB) and gives it with timestamps
(``timestamps=True``: RFC 3339 with nanoseconds, a space, the line). :func:`parse_logs` turns that
into :class:`LogEntry` values; ``tail`` goes to ACI, ``since`` is applied here (and again by the
core, with ``limitBytes`` and ``timestamps``). ``previous`` has no ACI equivalent: LogsUnavailable.

**Follow** (azure-aci has none): after the history, :func:`follow` polls ``list_logs`` every
:data:`FOLLOW_INTERVAL` seconds for the last :data:`FOLLOW_TAIL` lines and yields only the entries
newer than the last one yielded (by timestamp, then by text among lines of the same timestamp). If
the whole tail is new, lines may have been missed, and it reads the full log once; if the whole
log is newer than the last line seen, ACI replaced it with a new run's (the container restarted):
the follow ends there. Every
:data:`STATUS_INTERVAL` seconds it reads the container's state with a GET and returns when the
container instance it started on has ended: the group is gone, the container is no longer running,
or its restart count changed; before returning it reads the log once more, so the last lines of a
container that exited are yielded. When the container restarted, ACI has replaced the old run's log
by the new one's: what the old run wrote after the last poll (at most ``FOLLOW_INTERVAL`` seconds of
output) cannot be read any more.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime
import re
from collections.abc import AsyncIterator, Awaitable, Callable

from vk_operator.provider import LogEntry, LogOptions, LogsUnavailable

FOLLOW_INTERVAL = 1.0  # seconds between list_logs polls while following
STATUS_INTERVAL = 3.0  # seconds between GETs checking whether the container instance ended
FOLLOW_TAIL = 500  # lines asked for on each follow poll

_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:[.,](\d+))?(Z|[+-]\d\d:?\d\d)? ?(.*)$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Instance:
    """What a GET says about the container whose logs are read."""

    running: bool
    restart_count: int
    ever_ran: bool  # it runs, ran before, or has ended
    previous_finished_at: datetime.datetime | None = None  # the end of its previous run


Fetch = Callable[[int | None], Awaitable[str]]  # list_logs(tail) -> content (KeyError: no such container)
Inspect = Callable[[], Awaitable[Instance | None]]  # the container's state; None: the group is gone


def parse_time(stamp: str, fraction: str | None, zone: str | None) -> datetime.datetime:
    micros = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if zone in (None, "Z") else zone
    if offset and ":" not in offset:
        offset = offset[:3] + ":" + offset[3:]
    return datetime.datetime.fromisoformat(f"{stamp}.{micros}{offset}")


def parse_logs(content: str, now: datetime.datetime) -> list[LogEntry]:
    """ACI's ``timestamps=True`` log text as entries; a line without a timestamp gets ``now``
    (or the previous line's time, which keeps the order)."""
    entries: list[LogEntry] = []
    lines = content.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for raw in lines:
        line = raw[:-1] if raw.endswith("\r") else raw
        match = _LINE.match(line)
        when: datetime.datetime | None = None
        text = line
        if match:
            try:
                when = parse_time(match.group(1), match.group(2), match.group(3))
                text = match.group(4)
            except ValueError:
                when = None
        if when is None:
            when = entries[-1].time if entries else now
        entries.append(LogEntry(when, text))
    return entries


def since_filter(entries: list[LogEntry], since: datetime.datetime | None) -> list[LogEntry]:
    if since is None:
        return entries
    return [e for e in entries if e.time >= since]


class NewLines:
    """What is new in each read of the log tail (see the module docstring)."""

    def __init__(self) -> None:
        self.last: datetime.datetime | None = None
        self._at_last: collections.Counter[str] = collections.Counter()

    def overlaps(self, entries: list[LogEntry]) -> bool:
        """Whether ``entries`` reach back to what was seen (else lines may have been missed)."""
        return self.last is None or not entries or entries[0].time <= self.last

    def take(self, entries: list[LogEntry]) -> list[LogEntry]:
        fresh: list[LogEntry] = []
        seen = collections.Counter(self._at_last)
        for entry in entries:
            if self.last is not None and entry.time < self.last:
                continue
            if self.last is not None and entry.time == self.last and seen[entry.text] > 0:
                seen[entry.text] -= 1
                continue
            fresh.append(entry)
        if entries:
            newest = max(e.time for e in entries)
            if self.last is None or newest >= self.last:
                self.last = newest
                self._at_last = collections.Counter(e.text for e in entries if e.time == newest)
        return fresh


async def read_logs(
    fetch: Fetch,
    inspect: Inspect,
    options: LogOptions,
    *,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    follow_interval: float = FOLLOW_INTERVAL,
    status_interval: float = STATUS_INTERVAL,
) -> AsyncIterator[LogEntry]:
    """The entries ``options`` asks for, following until the container instance ends."""
    if options.previous:
        raise LogsUnavailable("ACI keeps the logs of a container's current run only (no --previous)")
    instance: Instance | None = None
    if options.follow:
        instance = await inspect()
        if instance is None:
            raise KeyError("the container group is gone")
        if not instance.ever_ran:
            raise LogsUnavailable("the container is waiting to start")
    tail = options.tail_lines
    content = await fetch(max(tail, 1) if tail is not None else None)
    history = parse_logs(content, clock())
    seen = NewLines()
    seen.take(history)
    if tail == 0:
        history = []
    for entry in since_filter(history, options.since(clock())):
        yield entry
    if not options.follow or instance is None or not instance.running:
        return
    async for entry in follow(fetch, inspect, instance, seen, clock, sleep, follow_interval, status_interval):
        yield entry


async def follow(
    fetch: Fetch,
    inspect: Inspect,
    started: Instance,
    seen: NewLines,
    clock: Callable[[], datetime.datetime],
    sleep: Callable[[float], Awaitable[object]],
    follow_interval: float,
    status_interval: float,
) -> AsyncIterator[LogEntry]:
    since_status = 0.0
    while True:
        await sleep(follow_interval)
        since_status += follow_interval
        ended: Instance | None = started
        if since_status >= status_interval:
            since_status = 0.0
            ended = await inspect()
        finished = ended is None or not ended.running or ended.restart_count != started.restart_count
        if ended is None:
            return  # the group is gone: nothing more to read
        try:
            batch = parse_logs(await fetch(FOLLOW_TAIL), clock())
            if len(batch) >= FOLLOW_TAIL and not seen.overlaps(batch):
                batch = parse_logs(await fetch(None), clock())
        except KeyError:
            return
        if len(batch) < FOLLOW_TAIL and not seen.overlaps(batch):
            return  # the whole log is newer than what was seen: a new run replaced it (a restart)
        fresh = seen.take(batch)
        if finished and ended.restart_count != started.restart_count and ended.previous_finished_at:
            fresh = [e for e in fresh if e.time <= ended.previous_finished_at]  # the run that ended
        for entry in fresh:
            yield entry
        if finished:
            return
