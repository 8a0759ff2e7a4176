"""The AWS side: botocore's failures as the core's errors, RunTask's rate, the status call budget."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from vk_operator.provider import PermanentError, ProviderError, ThrottledError, TransientError

THROTTLE_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "RequestThrottled",
        "RequestThrottledException",
        "SlowDown",
        "PriorRequestNotComplete",
    }
)
PERMANENT_CODES = frozenset(
    {
        "AccessDeniedException",
        "AccessDenied",
        "UnauthorizedOperation",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "InvalidParameterException",
        "ClientException",
        "ValidationException",
        "ClusterNotFoundException",
        "PlatformUnknownException",
        "PlatformTaskDefinitionIncompatibilityException",
        "UnsupportedFeatureException",
        "InvalidRequestException",
        "LimitExceededException",
    }
)
THROTTLE_RETRY_AFTER = 1.0  # seconds: AWS gives no Retry-After; botocore already backed off


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code") or "")


def error_message(exc: ClientError) -> str:
    error = exc.response.get("Error", {})
    return str(error.get("Message") or error.get("Code") or exc)


def http_status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def is_throttle(exc: ClientError) -> bool:
    return error_code(exc) in THROTTLE_CODES or "rate exceeded" in error_message(exc).lower()


def mapped(exc: Exception, what: str) -> ProviderError:
    """A botocore failure of ``what`` as the core's error (throttles hold back every call)."""
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, ClientError):
        code, message = error_code(exc), error_message(exc)
        text = f"{what}: {code or http_status(exc)}: {message}"
        if is_throttle(exc):
            return ThrottledError(text, retry_after=THROTTLE_RETRY_AFTER)
        if code in PERMANENT_CODES or 400 <= http_status(exc) < 500:
            reason = "AccessDenied" if "AccessDenied" in code or "Unauthorized" in code else "FargateRefused"
            return PermanentError(text, reason=reason)
        return TransientError(text, reason="FargateUnavailable")
    if isinstance(exc, EndpointConnectionError | BotoCoreError):
        return TransientError(f"{what}: {exc}", reason="FargateUnreachable")
    return TransientError(f"{what}: {type(exc).__name__}: {exc}", reason="FargateUnavailable")


class TokenBucket:
    """RunTask's client-side rate: ``burst`` at once, then ``per_second`` (callers wait their turn)."""

    def __init__(
        self,
        per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        self.per_second = per_second
        self.burst = burst
        self.clock = clock
        self.sleep = sleep
        self._tokens = float(burst)
        self._at = clock()
        self.waited = 0.0

    def _refill(self) -> None:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.per_second)
        self._at = now

    async def take(self) -> None:
        self._refill()
        self._tokens -= 1.0  # reserve now, so concurrent callers queue behind each other
        if self._tokens < 0:
            wait = -self._tokens / self.per_second
            self.waited += wait
            await self.sleep(wait)


class CallBudget:
    """At most ``per_minute`` calls in any sliding minute; ``spend`` records, ``available`` tells."""

    WINDOW = 60.0

    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._spent: collections.deque[float] = collections.deque()

    def _trim(self) -> None:
        now = self.clock()
        while self._spent and self._spent[0] <= now - self.WINDOW:
            self._spent.popleft()

    def available(self) -> int:
        self._trim()
        return max(0, self.per_minute - len(self._spent))

    def spend(self, calls: int = 1) -> None:
        self._trim()
        self._spent.extend([self.clock()] * calls)
