"""ARM's request limits, seen from the client: spacing, 429 pauses, the status read budget.

ARM limits reads (GET) and writes (PUT, PATCH, DELETE, POST) per subscription with token buckets
and says how many calls are left in every response (``x-ms-ratelimit-remaining-subscription-reads``
/ ``-writes``); an empty bucket answers 429 with ``Retry-After``. Three things here:

- :class:`ArmRateGate` remembers the latest remaining counts and every 429, and makes calls wait
  their turn: while more than :data:`LOW_WATERMARK` calls remain, calls go at once; below it,
  calls of that kind are spaced (up to :data:`MAX_SPACING` seconds apart when none remain), so a
  busy node slows down *before* ARM refuses it, and after a 429 no call of that kind leaves before
  ``Retry-After`` has passed. It raises nothing: the 429 itself is raised by the provider as
  ``ThrottledError``, which makes the core hold back every call.
- :class:`RateLimitPolicy` is the azure-core pipeline policy that applies the gate to every HTTP
  attempt the SDK makes (after the retry policy, so retries are spaced and counted too).
- :class:`ArmRetryPolicy` is azure-core's retry policy minus what the core decides better: it
  never retries a 429 nor a 4xx (the core pauses, backs off and shows the reason on the pod), and
  it retries a 5xx only a couple of times, never waiting longer than :data:`MAX_RETRY_WAIT`.
- :class:`TokenBucket` spreads a share of the ``status_poll.calls_per_minute`` budget over the
  minute (the provider gives lists and GETs one each), so that a burst of pods does not spend the
  minute's budget in its first seconds and then wait a minute; :class:`CallBudget` counts the
  calls of the last (sliding) minute.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import email.utils
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy

READS = "reads"
WRITES = "writes"
KINDS = (READS, WRITES)
REMAINING_HEADER = "x-ms-ratelimit-remaining-subscription-{kind}"
LOW_WATERMARK = 50  # remaining calls below which calls of that kind are spaced
MAX_SPACING = 1.0  # seconds between two calls of a kind when ARM says none remain
DEFAULT_RETRY_AFTER = 1.0  # a 429 without Retry-After
MAX_PAUSE = 300.0  # never hold calls back longer than this, whatever ARM says
MAX_RETRY_WAIT = 5.0  # the SDK retries a 5xx only when it need not wait longer than this
RETRY_TOTAL = 2  # SDK-level retries of a 5xx or a connection error; the core retries beyond


def kind_of(method: str) -> str:
    return READS if method.upper() in ("GET", "HEAD") else WRITES


def retry_after_seconds(headers: Mapping[str, str] | None) -> float | None:
    """``Retry-After`` (seconds or an HTTP date) in seconds; None when absent or unreadable."""
    if not headers:
        return None
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


class ArmRateGate:
    """What ARM said about the subscription's limits, and the turn of the next call of each kind."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        low_watermark: int = LOW_WATERMARK,
        max_spacing: float = MAX_SPACING,
    ) -> None:
        self.clock = clock
        self.sleep = sleep
        self.low_watermark = low_watermark
        self.max_spacing = max_spacing
        self.remaining: dict[str, int | None] = dict.fromkeys(KINDS)
        self.paused_until: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self._next: dict[str, float] = dict.fromkeys(KINDS, 0.0)
        self.calls: collections.Counter[str] = collections.Counter()  # HTTP attempts by kind
        self.throttled: collections.Counter[str] = collections.Counter()  # 429s by kind
        self.waited = 0.0  # seconds calls spent waiting for their turn
        self.last_response_at: float | None = None  # ARM answered (any status below 500)

    def spacing(self, kind: str) -> float:
        """Seconds between calls of ``kind`` now: 0 while enough remain."""
        remaining = self.remaining.get(kind)
        if remaining is None or remaining >= self.low_watermark:
            return 0.0
        return self.max_spacing * (self.low_watermark - max(remaining, 0)) / self.low_watermark

    async def wait_turn(self, kind: str) -> None:
        """Wait until a call of ``kind`` may leave (spacing, a 429's Retry-After), and take the turn."""
        now = self.clock()
        spacing = self.spacing(kind)
        start = max(now, self.paused_until[kind], self._next[kind] if spacing else now)
        self._next[kind] = start + spacing
        self.calls[kind] += 1
        if start > now:
            self.waited += start - now
            await self.sleep(start - now)

    def observe(self, kind: str, status: int, headers: Mapping[str, str]) -> None:
        """Read a response: the remaining-calls headers, and a 429's pause."""
        now = self.clock()
        lowered = {k.lower(): v for k, v in headers.items()}
        for each in KINDS:
            value = lowered.get(REMAINING_HEADER.format(kind=each))
            if value is not None:
                with contextlib.suppress(ValueError):
                    self.remaining[each] = int(value.strip())
        if status < 500:
            self.last_response_at = now
        if status == 429:
            self.throttled[kind] += 1
            pause = retry_after_seconds(headers)
            pause = DEFAULT_RETRY_AFTER if pause is None else min(pause, MAX_PAUSE)
            self.paused_until[kind] = max(self.paused_until[kind], now + pause)


class RateLimitPolicy(AsyncHTTPPolicy[Any, Any]):
    """Applies an :class:`ArmRateGate` to every HTTP attempt (a per-retry policy)."""

    def __init__(self, gate: ArmRateGate) -> None:
        super().__init__()
        self.gate = gate

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        kind = kind_of(request.http_request.method)
        await self.gate.wait_turn(kind)
        response = await self.next.send(request)
        http = response.http_response
        self.gate.observe(kind, http.status_code, http.headers)
        return response


class ArmRetryPolicy(AsyncRetryPolicy[Any, Any]):
    """azure-core's retry policy for 5xx and connection errors only, briefly (see the module)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("retry_total", RETRY_TOTAL)
        kwargs.setdefault("retry_connect", RETRY_TOTAL)
        kwargs.setdefault("retry_read", RETRY_TOTAL)
        kwargs.setdefault("retry_status", RETRY_TOTAL)
        kwargs.setdefault("retry_backoff_factor", 0.5)
        kwargs.setdefault("retry_backoff_max", MAX_RETRY_WAIT)
        super().__init__(**kwargs)

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        status = response.http_response.status_code
        if status < 500 and status != 408:
            return False  # 429 and the other 4xx: the core decides (pause, backoff, pod status)
        wait = retry_after_seconds(response.http_response.headers)
        if wait is not None and wait > MAX_RETRY_WAIT:
            return False
        return bool(super().is_retry(settings, response))


class CallBudget:
    """At most ``per_minute`` calls in any sliding minute; ``spend`` records, ``available`` tells."""

    WINDOW = 60.0

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._spent: collections.deque[float] = collections.deque()
        self.total = 0

    def _trim(self, now: float) -> None:
        while self._spent and self._spent[0] <= now - self.WINDOW:
            self._spent.popleft()

    def available(self) -> int:
        now = self.clock()
        self._trim(now)
        return max(0, self.per_minute - len(self._spent))

    def spend(self, calls: int = 1) -> None:
        now = self.clock()
        self._trim(now)
        self._spent.extend([now] * calls)
        self.total += calls

    def spent_last_minute(self) -> int:
        self._trim(self.clock())
        return len(self._spent)


class TokenBucket:
    """Calls spread over the minute: ``per_minute`` a minute, refilled continuously, at most
    ``capacity()`` at once. A spend beyond what is there (a read that had to be made) is paid back
    before the next one."""

    def __init__(
        self, per_minute: float, capacity: Callable[[], float], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.per_minute = per_minute
        self.capacity = capacity
        self.clock = clock
        self._at = clock()
        self._tokens = capacity()

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(self.capacity(), self._tokens + (now - self._at) * self.per_minute / 60.0)
        self._at = now

    def available(self) -> int:
        self._refill()
        return max(0, int(self._tokens))

    def spend(self, calls: int = 1) -> None:
        self._refill()
        self._tokens -= calls
