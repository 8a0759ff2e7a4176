"""Operational metrics of the virtual kubelet (prometheus-client), served on ``--metrics-port``.

Two kinds:

* event metrics that code increments where things happen: :func:`provider_call` (latency and
  errors of provider calls), :func:`api_write` (writes to the Kubernetes API), the kubelet API's
  request counter;
* state metrics read at scrape time from the live objects (pods by phase, queue depth, heartbeat
  age, API requests sent): :class:`StateCollector`, registered by the wiring for one process.

Everything lives in :data:`REGISTRY`, not prometheus-client's global one, so tests and embedders can
run several virtual kubelets in one process.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry()
ProcessCollector(registry=REGISTRY)

PROVIDER_CALL_SECONDS = Histogram(
    "vk_provider_call_duration_seconds",
    "Latency of provider calls, by method",
    ["method"],
    registry=REGISTRY,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
PROVIDER_CALL_ERRORS = Counter(
    "vk_provider_call_errors_total", "Provider calls that raised, by method", ["method"], registry=REGISTRY
)
PROVIDER_THROTTLED = Counter(
    "vk_provider_throttled_total",
    "Provider calls answered with a throttling error (every call then waits for its retry-after)",
    registry=REGISTRY,
)
API_WRITES = Counter(
    "vk_api_writes_total",
    "Writes to the Kubernetes API, by verb, resource and HTTP status code",
    ["verb", "resource", "code"],
    registry=REGISTRY,
)
EVENTS_DROPPED = Counter(
    "vk_events_dropped_total",
    "Events not posted because the queue of Events waiting to be posted was full",
    registry=REGISTRY,
)
KUBELET_API_REQUESTS = Counter(
    "vk_kubelet_api_requests_total",
    "Requests to the kubelet API, by route and HTTP status code",
    ["route", "code"],
    registry=REGISTRY,
)


@contextlib.contextmanager
def provider_call(method: str) -> Iterator[None]:
    """Time a provider call (``with metrics.provider_call("create_pod"): await ...``); count errors."""
    started = time.perf_counter()
    try:
        yield
    except Exception:  # cancellation is not the provider's error
        PROVIDER_CALL_ERRORS.labels(method).inc()
        raise
    finally:
        PROVIDER_CALL_SECONDS.labels(method).observe(time.perf_counter() - started)


def resource_of(path: str) -> str:
    """The resource (and subresource) of an API path: .../namespaces/n/pods/p/status -> pods/status."""
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    parts = parts[2:] if parts[:1] == ["api"] else parts[3:]  # drop /api/v1 or /apis/GROUP/VERSION
    if len(parts) >= 2 and parts[0] == "namespaces" and len(parts) != 2:
        parts = parts[2:]  # drop namespaces/NAME (but /namespaces/NAME itself is the resource)
    if not parts:
        return ""
    return parts[0] if len(parts) < 3 else f"{parts[0]}/{parts[2]}"


def api_write(verb: str, resource: str, code: int) -> None:
    """Count one write (create/update/patch/delete) to the API and its outcome."""
    API_WRITES.labels(verb, resource, str(code)).inc()


def pods_by_phase(pods: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: collections.Counter[str] = collections.Counter(
        (p.get("status") or {}).get("phase") or "Unknown" for p in pods
    )
    return dict(counts)


class StateCollector(Collector):
    """Reads the state of one running virtual kubelet at scrape time (nothing to call elsewhere)."""

    PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")

    def __init__(
        self,
        *,
        phase_counts: Callable[[], Mapping[str, int]],
        queue_depth: Callable[[], int],
        heartbeat_age: Callable[[], float | None],
        api_requests: Callable[[], int],
        tracked_pods: Callable[[], int] | None = None,
        events_pending: Callable[[], int] | None = None,
    ) -> None:
        self._phase_counts = phase_counts
        self._queue_depth = queue_depth
        self._heartbeat_age = heartbeat_age
        self._api_requests = api_requests
        self._tracked = tracked_pods
        self._events_pending = events_pending

    def collect(self) -> Iterable[Metric]:
        phases = GaugeMetricFamily("vk_pods", "Pods bound to this node, by phase", labels=["phase"])
        counts = self._phase_counts()
        for phase in (*self.PHASES, *sorted(set(counts) - set(self.PHASES))):
            phases.add_metric([phase], counts.get(phase, 0))
        yield phases
        yield GaugeMetricFamily(
            "vk_pod_queue_depth", "Pods waiting for a reconciler", value=self._queue_depth()
        )
        if self._tracked is not None:
            yield GaugeMetricFamily(
                "vk_provider_pods", "Pods this node tracks in the provider", value=self._tracked()
            )
        if self._events_pending is not None:
            yield GaugeMetricFamily(
                "vk_events_pending", "Events recorded, not yet posted", value=self._events_pending()
            )
        age = self._heartbeat_age()
        yield GaugeMetricFamily(
            "vk_node_heartbeat_age_seconds",
            "Seconds since the node Lease was last renewed (NaN before the first renewal)",
            value=float("nan") if age is None else age,
        )
        yield CounterMetricFamily(
            "vk_api_requests", "Requests sent to the Kubernetes API", value=self._api_requests()
        )


_registered: list[Collector] = []


def register_state(collector: StateCollector) -> None:
    """Make ``collector`` the one this process reports (replacing any earlier one)."""
    unregister_state()
    REGISTRY.register(collector)
    _registered.append(collector)


def unregister_state() -> None:
    while _registered:
        with contextlib.suppress(KeyError):
            REGISTRY.unregister(_registered.pop())
