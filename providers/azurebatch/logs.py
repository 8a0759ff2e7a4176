"""``kubectl logs`` on Batch: the task's output files, read by ranges, and polled for ``-f``.

A container task's output is ``stdout.txt`` and ``stderr.txt`` in the task directory; a wrapped
multi-container task's is ``<container>.log``. Batch keeps no per-line timestamps: history lines
carry the file's last-modified time, followed lines the time they were read (``--timestamps`` and
``--since`` work to that precision). ``tail`` reads only the end of a file: the file's size from its
properties (HEAD), then ranged reads (``ocp-range: bytes=N-``) from further and further back until
enough lines are in. **Follow** polls the sizes every ``interval`` seconds and reads the new bytes;
it ends when the task has completed (or is gone) and a last read found nothing new. ``previous``:
Batch keeps one run's files, so there is no previous run to show (LogsUnavailable).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from vk_operator.provider import LogEntry, LogOptions, LogsUnavailable

FOLLOW_INTERVAL = 1.0
TAIL_CHUNK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class FileInfo:
    size: int
    modified: dt.datetime | None


Properties = Callable[[str], Awaitable[FileInfo | None]]  # None: the file does not exist (yet)
ReadFrom = Callable[[str, int], Awaitable[bytes]]  # the bytes from an offset to the end
Ended = Callable[[], Awaitable[bool]]  # the task has completed or is gone


def _lines(data: bytes) -> list[str]:
    return data.decode("utf-8", errors="replace").split("\n")


async def _history(
    path: str, stream: str, info: FileInfo, read: ReadFrom, tail: int | None
) -> tuple[list[LogEntry], int, bytes]:
    """The complete lines of ``path`` (the last ``tail`` when given), the offset read to, the rest."""
    when = info.modified or dt.datetime.now(dt.UTC)
    start = 0
    data = b""
    if tail is not None:
        chunk = TAIL_CHUNK
        while True:
            start = max(0, info.size - chunk)
            data = (await read(path, start))[: info.size - start] if info.size > start else b""
            if start == 0 or data.count(b"\n") > tail:
                break
            chunk *= 4
    elif info.size:
        data = (await read(path, 0))[: info.size]
    end = start + len(data)
    if start > 0:  # the first line is cut: drop it
        data = data[data.find(b"\n") + 1 :] if b"\n" in data else b""
    complete, _, rest = data.rpartition(b"\n")
    entries = (
        [LogEntry(when, line, stream) for line in _lines(complete)]
        if complete or data.startswith(b"\n")
        else []
    )
    if tail is not None:
        entries = entries[-tail:] if tail else []
    return entries, end, rest


async def read_logs(
    files: Sequence[tuple[str, str]],
    properties: Properties,
    read: ReadFrom,
    ended: Ended,
    options: LogOptions,
    interval: float = FOLLOW_INTERVAL,
) -> AsyncIterator[LogEntry]:
    """The entries of ``files`` ((path, stream) pairs); KeyError while none of them exists."""
    if options.previous:
        raise LogsUnavailable("Batch keeps only the current run's output files: there is no previous run")
    wanted = [(p, s) for p, s in files if options.stream in ("All", s)]
    offsets: dict[str, int] = {}
    partial: dict[str, bytes] = {}
    history: list[LogEntry] = []
    for path, stream in wanted:
        info = await properties(path)
        if info is None:
            continue
        entries, offsets[path], partial[path] = await _history(path, stream, info, read, options.tail_lines)
        history += entries
    if not offsets and not options.follow:
        raise KeyError("the task has not started: it has no output files yet")
    if options.tail_lines is not None:
        history = list(collections.deque(history, maxlen=options.tail_lines))
    for entry in history:
        yield entry
    if not options.follow:
        for path, stream in wanted:
            if partial.get(path):
                yield LogEntry(dt.datetime.now(dt.UTC), _lines(partial[path])[0], stream)
        return
    last_round = False
    while True:
        grew = False
        for path, stream in wanted:
            info = await properties(path)
            if info is None or info.size <= offsets.get(path, 0):
                continue
            data = (
                partial.get(path, b"")
                + (await read(path, offsets.get(path, 0)))[: info.size - offsets.get(path, 0)]
            )
            offsets[path] = info.size
            complete, sep, rest = data.rpartition(b"\n")
            partial[path] = rest if sep else data
            now = dt.datetime.now(dt.UTC)
            if sep:
                grew = True
                for line in _lines(complete):
                    yield LogEntry(now, line, stream)
        if last_round and not grew:
            now = dt.datetime.now(dt.UTC)
            for path, stream in wanted:
                if partial.get(path):
                    yield LogEntry(now, _lines(partial[path])[0], stream)
            return
        last_round = await ended()
        if not last_round:
            await asyncio.sleep(interval)
