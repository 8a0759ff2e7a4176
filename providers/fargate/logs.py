"""``kubectl logs`` from CloudWatch Logs: the awslogs stream of the container's task.

The stream is ``<prefix>/<container>/<task id>`` (what the awslogs driver writes). History is read
from the head (``startTime`` = since, when given) page by page until ``nextForwardToken`` stops
changing, and ``tailLines`` keeps the last lines. **Follow** polls ``GetLogEvents`` with the last
``nextForwardToken`` every :data:`FOLLOW_INTERVAL` seconds and returns once the task has stopped
(checked every :data:`STATUS_EVERY` polls) and one more read found nothing new.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from vk_operator.provider import LogEntry, LogOptions, LogsUnavailable

FOLLOW_INTERVAL = 1.0
STATUS_EVERY = 3

Read = Callable[..., Awaitable[dict[str, Any]]]  # GetLogEvents(**kwargs)
Stopped = Callable[[], Awaitable[bool]]  # whether the task has stopped

__all__ = ["FOLLOW_INTERVAL", "LogsUnavailable", "StreamMissing", "entries", "read_logs"]


class StreamMissing(Exception):
    """The task's log stream does not exist (yet)."""


def entries(events: list[dict[str, Any]]) -> list[LogEntry]:
    found = []
    for event in events:
        millis = event.get("timestamp")
        when = datetime.datetime.fromtimestamp((millis or 0) / 1000, datetime.UTC)
        text = str(event.get("message") or "").rstrip("\n")
        for line in text.split("\n") if text else [""]:
            found.append(LogEntry(when, line))
    return found


async def read_logs(
    read: Read,
    stopped: Stopped,
    options: LogOptions,
    *,
    follow: bool,
    interval: float = FOLLOW_INTERVAL,
    clock: Callable[[], datetime.datetime] = lambda: datetime.datetime.now(datetime.UTC),
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
) -> AsyncIterator[LogEntry]:
    since = options.since(clock())
    start: dict[str, Any] = {"startFromHead": True}
    if since is not None:
        start["startTime"] = int(since.timestamp() * 1000)
    token: str | None = None
    history: list[LogEntry] = []
    missing = False
    try:
        while True:
            page = await read(**start, **({"nextToken": token} if token else {}))
            history += entries(page.get("events") or [])
            following = page.get("nextForwardToken")
            if not following or following == token:
                break
            token = following
    except StreamMissing:
        missing = True
        if not follow or await stopped():
            raise LogsUnavailable(
                "the container has written no logs (its log stream does not exist)"
            ) from None
    if options.tail_lines is not None:
        history = list(collections.deque(history, maxlen=options.tail_lines)) if options.tail_lines else []
    for entry in history:
        yield entry
    if not follow:
        return
    polls = 0
    ending = False
    while True:
        await sleep(interval)
        polls += 1
        if not ending and polls % STATUS_EVERY == 0:
            ending = await stopped()
        try:
            page = await read(**({"nextToken": token} if token and not missing else {"startFromHead": True}))
            missing = False
        except StreamMissing:
            if ending:
                return
            continue
        fresh = entries(page.get("events") or [])
        for entry in fresh:
            yield entry
        following = page.get("nextForwardToken")
        if following:
            token = following
        if ending and not fresh:
            return
