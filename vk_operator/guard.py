"""The core's guard around every provider call: a timeout, error mapping, throttling, metrics.

``await guard.call("create_pod", provider.create_pod, prepared)``:

* the call is bounded by its timeout (by call kind, ``--provider-timeout-*``); a call that
  outlives it is cancelled and raises :class:`ProviderTimeoutError` (transient);
* an exception that is not a :class:`ProviderError` becomes :class:`UnexpectedProviderError`
  (transient, naming the exception type), so callers handle one family of errors;
* a :class:`ThrottledError` holds back *every* call to the provider until its ``retry_after`` has
  passed (a default pause when the backend does not say): the backend's limit is per account, not
  per pod, and hammering it with the other pods' calls only extends the throttling;
* latency and errors are counted (``vk_provider_call_duration_seconds``, ``..._errors_total``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from vk_operator import metrics
from vk_operator.domain.errors import (
    ProviderError,
    ProviderTimeoutError,
    ThrottledError,
    UnexpectedProviderError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

DEFAULT_THROTTLE_PAUSE = 1.0  # seconds, when a throttled answer gives no Retry-After
MAX_THROTTLE_PAUSE = (
    300.0  # a Retry-After beyond this is taken as this (a bad header must not stall us for hours)
)


@dataclasses.dataclass(frozen=True)
class CallTimeouts:
    """Seconds each kind of provider call may take before it is cut (and retried)."""

    create: float = 120.0
    update: float = 60.0
    delete: float = 120.0  # and never beyond the pod's grace period
    status: float = 30.0  # get_pod_status, get_pod_statuses
    list: float = 60.0
    other: float = 30.0  # capacity, node_conditions, ping, allocate_pod_ip, pod_stats, start

    def of(self, method: str) -> float:
        by_method = {
            "create_pod": self.create,
            "update_pod": self.update,
            "delete_pod": self.delete,
            "get_pod_status": self.status,
            "get_pod_statuses": self.status,
            "list_pods": self.list,
        }
        return by_method.get(method, self.other)


class ProviderGuard:
    def __init__(self, timeouts: CallTimeouts | None = None) -> None:
        self.timeouts = timeouts or CallTimeouts()
        self._resume_at = 0.0  # monotonic time before which no call is made (throttled)
        self.throttled_calls = 0

    @property
    def throttled_for(self) -> float:
        """Seconds left until calls may go out again (0 when not throttled)."""
        return max(0.0, self._resume_at - time.monotonic())

    def throttle(self, retry_after: float | None) -> None:
        pause = (
            DEFAULT_THROTTLE_PAUSE if retry_after is None else min(max(retry_after, 0.0), MAX_THROTTLE_PAUSE)
        )
        self._resume_at = max(self._resume_at, time.monotonic() + pause)

    async def _wait_unthrottled(self) -> None:
        # A loop, not one sleep: another call may be throttled (and extend the pause) meanwhile.
        while (left := self.throttled_for) > 0:  # noqa: ASYNC110
            await asyncio.sleep(left)

    async def call(
        self,
        method: str,
        fn: Callable[P, Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """``await fn(*args)`` under the guard; ``timeout=`` (keyword) overrides the call kind's."""
        await self._wait_unthrottled()
        seconds = self.timeouts.of(method)
        started = time.perf_counter()
        try:
            async with asyncio.timeout(seconds):
                return await fn(*args, **kwargs)
        except ThrottledError as exc:
            self.throttled_calls += 1
            self.throttle(exc.retry_after)
            metrics.PROVIDER_CALL_ERRORS.labels(method).inc()
            metrics.PROVIDER_THROTTLED.inc()
            log.warning(
                "provider throttled (%s): pausing calls for %.1fs: %s", method, self.throttled_for, exc
            )
            raise
        except ProviderError:
            metrics.PROVIDER_CALL_ERRORS.labels(method).inc()
            raise
        except TimeoutError as exc:
            metrics.PROVIDER_CALL_ERRORS.labels(method).inc()
            raise ProviderTimeoutError(f"provider call {method} timed out after {seconds:g}s") from exc
        except Exception as exc:  # the provider's bug or an SDK error it did not map: transient
            metrics.PROVIDER_CALL_ERRORS.labels(method).inc()
            log.warning("provider call %s raised %s: %s", method, type(exc).__name__, exc)
            log.debug("provider call %s raised", method, exc_info=exc)
            raise UnexpectedProviderError(f"{method}: unexpected {type(exc).__name__}: {exc}") from exc
        finally:
            metrics.PROVIDER_CALL_SECONDS.labels(method).observe(time.perf_counter() - started)
