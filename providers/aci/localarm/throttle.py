"""ARM-like request throttling: token buckets per subscription, reads and writes apart."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Decision:
    allowed: bool
    remaining: int  # whole tokens left after this request (x-ms-ratelimit-remaining-subscription-*)
    retry_after: int  # seconds until a token is there again (when not allowed)


class TokenBucket:
    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.updated = now
        self.rate = rate
        self.burst = burst

    def take(self, now: float, rate: float, burst: int) -> Decision:
        self.rate, self.burst = rate, burst
        self.tokens = min(float(burst), self.tokens + max(0.0, now - self.updated) * rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return Decision(True, int(self.tokens), 0)
        wait = math.inf if rate <= 0 else (1.0 - self.tokens) / rate
        return Decision(False, 0, max(1, math.ceil(wait)) if math.isfinite(wait) else 3600)


class Throttler:
    """``admit(scope, "read"|"write", rate, burst)``; buckets are created full on first use."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self.throttled: dict[str, int] = {"read": 0, "write": 0}

    def admit(self, scope: str, kind: str, rate: float, burst: int) -> Decision:
        now = self._clock()
        bucket = self._buckets.get((scope, kind))
        if bucket is None:
            bucket = self._buckets[(scope, kind)] = TokenBucket(rate, burst, now)
        decision = bucket.take(now, rate, burst)
        if not decision.allowed:
            self.throttled[kind] = self.throttled.get(kind, 0) + 1
        return decision

    def reset(self) -> None:
        self._buckets.clear()
