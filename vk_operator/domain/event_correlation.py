"""Event correlation, as client-go's ``EventCorrelator`` (``tools/record/events_cache.go``) does it.

Every Event the kubelet records goes through three steps before it reaches the API server; we do
the same, in the same order, with the same defaults:

1. **Aggregation.** Events about one object with the same source, type and reason but different
   messages: from the ``max_events``-th (10) distinct message within ``max_interval`` (600 s, a
   sliding window: each similar event extends it), they are collapsed into one Event whose message is
   ``"(combined from similar events): <latest message>"``.
2. **De-duplication** (client-go's ``eventLogger``). An Event with the same source, involved object
   (kind, namespace, name, uid, apiVersion), type, reason and message as one already recorded is not
   a new object: it is the same Event again, with ``count + 1`` and a new ``lastTimestamp`` (the
   caller PATCHes it under the name it was first created with).
3. **Spam filter.** A token bucket per source, object, type and reason (burst 25, then one event
   per 5 minutes): events beyond it are skipped. A skipped repeat is still counted, so the next
   Event that passes carries the true count. Type and reason are part of the key as in client-go
   since kubernetes/kubernetes#124747 (keyed by object only, a pod that had failed 25 times lost
   its later events, kubernetes/kubernetes#67887): a pod that retried a missing ConfigMap still gets
   its ``ProviderCreateSuccess`` once it can start.

Pure: no I/O and no clock of its own (the caller passes ``now``). Memory is bounded: each of the
three caches is an LRU of ``cache_entries`` (4096, as client-go) and keeps digests, not messages.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
from collections import OrderedDict
from typing import Generic, TypeVar

CACHE_ENTRIES = 4096
AGGREGATE_MAX_EVENTS = 10
AGGREGATE_INTERVAL_SECONDS = 600.0
SPAM_BURST = 25
SPAM_QPS = 1.0 / 300.0
COMBINED_PREFIX = "(combined from similar events): "

K = TypeVar("K")
V = TypeVar("V")


@dataclasses.dataclass(frozen=True, slots=True)
class EventSpec:
    """The fields that identify an Event (client-go's ``getEventKey``)."""

    component: str
    host: str
    kind: str
    namespace: str
    name: str
    uid: str
    api_version: str
    type: str
    reason: str
    message: str

    def _object_fields(self) -> tuple[str, ...]:
        return (self.component, self.host, self.kind, self.namespace, self.name, self.uid, self.api_version)

    def spam_key(self) -> bytes:
        """Source, object, type and reason: what one token bucket of the spam filter limits."""
        return _digest("spam", *self._object_fields(), self.type, self.reason)

    def aggregate_key(self) -> bytes:
        """Source, object, type and reason: what the aggregator groups (all messages)."""
        return _digest("aggregate", *self._object_fields(), self.type, self.reason)

    def event_key(self) -> bytes:
        """Everything, the message included: what makes two Events the same Event."""
        return _digest("event", *self._object_fields(), self.type, self.reason, self.message)


class Action(enum.Enum):
    CREATE = "create"  # a new Event object
    PATCH = "patch"  # the Event ``name`` again: count and lastTimestamp (and message) change
    SKIP = "skip"  # dropped by the spam filter


@dataclasses.dataclass(frozen=True, slots=True)
class Correlated:
    """What to write for one recorded event."""

    action: Action
    key: bytes  # the correlation cache key (the event's, or its aggregate's)
    name: str  # the Event object's name: new for a first occurrence, else the one it was created with
    message: str  # the message to write (prefixed when aggregated)
    count: int
    first_timestamp: datetime.datetime
    last_timestamp: datetime.datetime
    aggregated: bool = False

    @property
    def first(self) -> bool:
        """The first occurrence of this Event (callers log it at its level, repeats quietly)."""
        return self.count == 1


class LRU(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("an LRU cache needs room for one entry at least")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries


@dataclasses.dataclass(slots=True)
class TokenBucket:
    """client-go's ``flowcontrol`` token bucket, ``TryAccept`` only; starts full."""

    burst: int
    qps: float
    tokens: float
    updated: float  # seconds (any origin, as long as the caller keeps to one)

    @classmethod
    def full(cls, burst: int, qps: float, now: float) -> TokenBucket:
        return cls(burst, qps, float(burst), now)

    def try_accept(self, now: float) -> bool:
        elapsed = max(0.0, now - self.updated)  # a clock stepped back refills nothing
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.qps)
        self.updated = max(self.updated, now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclasses.dataclass(slots=True)
class _Aggregate:
    messages: dict[bytes, None]  # digests of the distinct messages seen, oldest first
    last: datetime.datetime


@dataclasses.dataclass(frozen=True, slots=True)
class _Observation:
    count: int
    first_timestamp: datetime.datetime
    name: str


class EventCorrelator:
    """Aggregates, de-duplicates and spam-filters Events, with client-go's defaults."""

    def __init__(
        self,
        *,
        cache_entries: int = CACHE_ENTRIES,
        max_events: int = AGGREGATE_MAX_EVENTS,
        max_interval_seconds: float = AGGREGATE_INTERVAL_SECONDS,
        spam_burst: int = SPAM_BURST,
        spam_qps: float = SPAM_QPS,
    ) -> None:
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self.max_interval = datetime.timedelta(seconds=max_interval_seconds)
        self.spam_burst = spam_burst
        self.spam_qps = spam_qps
        self._aggregates: LRU[bytes, _Aggregate] = LRU(cache_entries)
        self._observations: LRU[bytes, _Observation] = LRU(cache_entries)
        self._buckets: LRU[bytes, TokenBucket] = LRU(cache_entries)

    def correlate(self, spec: EventSpec, now: datetime.datetime, new_name: str) -> Correlated:
        """What to do with ``spec`` recorded at ``now``; ``new_name`` names it if it is a new Event."""
        message, key, aggregated = self._aggregate(spec, now)
        observation = self._observe(key, now, new_name)
        passed = self._admit(spec.spam_key(), now)
        if not passed:
            action = Action.SKIP
        elif observation.count == 1:
            action = Action.CREATE
        else:
            action = Action.PATCH
        return Correlated(
            action=action,
            key=key,
            name=observation.name,
            message=message,
            count=observation.count,
            first_timestamp=observation.first_timestamp,
            last_timestamp=now,
            aggregated=aggregated,
        )

    # -- the three steps -----------------------------------------------------------------------------
    def _aggregate(self, spec: EventSpec, now: datetime.datetime) -> tuple[str, bytes, bool]:
        aggregate_key = spec.aggregate_key()
        record = self._aggregates.get(aggregate_key)
        if record is None or now - record.last > self.max_interval:
            record = _Aggregate({}, now)
        record.messages[_digest("message", spec.message)] = None
        record.last = now
        self._aggregates.put(aggregate_key, record)
        if len(record.messages) < self.max_events:
            return spec.message, spec.event_key(), False
        del record.messages[next(iter(record.messages))]  # do not grow past max_events
        return COMBINED_PREFIX + spec.message, aggregate_key, True

    def _observe(self, key: bytes, now: datetime.datetime, new_name: str) -> _Observation:
        last = self._observations.get(key)
        if last is None:
            observation = _Observation(1, now, new_name)
        else:
            observation = _Observation(last.count + 1, last.first_timestamp, last.name)
        self._observations.put(key, observation)
        return observation

    def _admit(self, spam_key: bytes, now: datetime.datetime) -> bool:
        seconds = now.timestamp()
        bucket = self._buckets.get(spam_key)
        if bucket is None:
            bucket = TokenBucket.full(self.spam_burst, self.spam_qps, seconds)
        accepted = bucket.try_accept(seconds)
        self._buckets.put(spam_key, bucket)
        return accepted


def _digest(*parts: str) -> bytes:
    """A short, collision-safe key: the caches hold 16 bytes per key instead of whole messages."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=16).digest()
