"""The work queue of pod keys.

A key is queued at most once (a burst of events for a pod costs one reconcile), never held by two
workers at once (a key that changes while a worker has it is queued again when the worker is
done), and has at most one retry timer: a retry asked for while one is pending keeps the earlier
one, so failures can never multiply into parallel retry chains. A wake-up (a deadline coming due)
is a timer of its own: it is not a retry, so periodic resyncs still reach the key meanwhile.

Two lanes, taken in the order keys were queued: keys whose pod already runs in the provider
(``status_only``: the reconcile reads its status and writes it to the API), and the others
(creates and deletes: provider writes, which a cloud rate-limits), of which at most
``provider_slots`` are held by workers at once. So in a burst whose creates wait for a backend's
write rate, the pods already started still have their status written on time: the workers kept
free take them past the queued creates.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
from collections.abc import Callable

from vk_operator.domain.pod_meta import Key


class WorkQueue:
    def __init__(
        self, *, status_only: Callable[[Key], bool] = lambda key: False, provider_slots: int | None = None
    ) -> None:
        self._status_only = status_only
        self._provider_slots = provider_slots
        self._status_lane: collections.deque[tuple[int, Key]] = collections.deque()
        self._provider_lane: collections.deque[tuple[int, Key]] = collections.deque()
        self._order = itertools.count()  # queueing order across the lanes
        self._providers_held = 0  # keys of the provider lane held by workers now
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._queued: set[Key] = set()
        self._active: dict[Key, bool] = {}  # held keys: True if taken from the provider lane
        self._dirty: set[Key] = set()
        self._timers: dict[Key, asyncio.TimerHandle] = {}
        self._wakes: dict[Key, asyncio.TimerHandle] = {}

    def add(self, key: Key) -> None:
        if key in self._active:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            lane = self._status_lane if self._status_only(key) else self._provider_lane
            lane.append((next(self._order), key))
            self._wake_one()

    def add_after(self, key: Key, delay: float) -> None:
        loop = asyncio.get_running_loop()
        pending = self._timers.get(key)
        if pending is not None:
            if pending.when() <= loop.time() + delay:
                return
            pending.cancel()
        self._timers[key] = loop.call_later(delay, self._fire, key)

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        self.add(key)

    def wake_after(self, key: Key, delay: float) -> None:
        """Queue ``key`` once ``delay`` seconds have passed (the earliest wake-up asked for wins)."""
        loop = asyncio.get_running_loop()
        pending = self._wakes.get(key)
        if pending is not None:
            if pending.when() <= loop.time() + delay:
                return
            pending.cancel()
        self._wakes[key] = loop.call_later(delay, self._wake, key)

    def _wake(self, key: Key) -> None:
        self._wakes.pop(key, None)
        self.add(key)

    def wake_pending(self, key: Key) -> float | None:
        """Seconds until ``key``'s wake-up (None: none is set)."""
        pending = self._wakes.get(key)
        return None if pending is None else pending.when() - asyncio.get_running_loop().time()

    def retry_pending(self, key: Key) -> bool:
        """Whether a retry of ``key`` is scheduled (a periodic resync leaves such keys alone)."""
        return key in self._timers

    def scheduled(self, key: Key) -> bool:
        """Whether ``key`` will be reconciled anyway: queued, held by a worker (which schedules
        its retry when it fails) or waiting for a retry. A periodic resync leaves such keys alone:
        queueing a held key would run it once more as soon as its worker is done."""
        return key in self._queued or key in self._active or key in self._timers

    def forget(self, key: Key) -> None:
        """Drop a pending retry (the pod is done: gone, or created after all)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()

    def forget_wake(self, key: Key) -> None:
        """Drop a wake-up (no pod of the key is left to wake for)."""
        timer = self._wakes.pop(key, None)
        if timer is not None:
            timer.cancel()

    async def get(self) -> Key:
        while True:
            key = self._take()
            if key is not None:
                return key
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: the wake-up is another worker's
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise

    def _take(self) -> Key | None:
        slot_free = self._provider_slots is None or self._providers_held < self._provider_slots
        provider = bool(self._provider_lane) and slot_free
        if provider and self._status_lane:
            provider = self._provider_lane[0][0] < self._status_lane[0][0]  # the older first
        if provider:
            _, key = self._provider_lane.popleft()
            self._providers_held += 1
        elif self._status_lane:
            _, key = self._status_lane.popleft()
        else:
            return None
        self._queued.discard(key)
        self._active[key] = provider
        return key

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def done(self, key: Key) -> None:
        if self._active.pop(key, False):
            self._providers_held -= 1
            self._wake_one()  # a provider slot is free
        if key in self._dirty:
            self._dirty.discard(key)
            self.add(key)

    @property
    def idle(self) -> bool:
        return not self._queued and not self._active

    @property
    def depth(self) -> int:
        return len(self._status_lane) + len(self._provider_lane)
