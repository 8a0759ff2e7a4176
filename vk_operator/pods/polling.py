"""Status polling for providers that cannot push status changes.

Per pod (``get_pod_status``): every in-provider pod is reconciled every ``interval``.

Bulk (:class:`~vk_operator.provider.BulkStatusProvider`): one ``get_pod_statuses`` call reports
on every pod; pods whose status changed are reconciled from it, with no call of their own. The
poll runs every ``fast`` seconds while any pod is in transition (just created, Pending, stopping,
its reported phase differs from the API's, or it runs to an end of its own, as a Job's pod does) and
every ``slow`` seconds when all are steady, and
never more often than ``budget`` calls a minute: the call rate does not grow with the pod count.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from vk_operator.domain.errors import ProviderError
from vk_operator.guard import ProviderGuard
from vk_operator.pods.queue import WorkQueue
from vk_operator.pods.store import PodRecord, PodStore
from vk_operator.provider import BulkStatusProvider

log = logging.getLogger(__name__)


async def poll_each(store: PodStore, queue: WorkQueue, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        for record in store:
            if record.in_provider:
                queue.add(record.key)


def _in_transition(record: PodRecord) -> bool:
    if not record.polled or record.terminating or record.phase in (None, "Pending"):
        return True
    reported = record.reported
    return reported is None or reported.phase.value != record.phase or _ends_by_itself(record)


def _ends_by_itself(record: PodRecord) -> bool:
    """A running pod that will end without being asked (a Job's: restartPolicy Never or OnFailure):
    its end is news a Job controller waits for, not a steady state to check every ``slow`` seconds."""
    pod = record.api_pod
    policy = (pod.get("spec") or {}).get("restartPolicy", "Always") if pod is not None else "Always"
    return record.phase == "Running" and policy != "Always"


class BulkStatusPoller:
    def __init__(
        self,
        provider: BulkStatusProvider,
        guard: ProviderGuard,
        store: PodStore,
        queue: WorkQueue,
        *,
        fast: float = 2.0,
        slow: float = 30.0,
        budget: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        self.guard = guard
        self.store = store
        self.queue = queue
        self.fast = fast
        self.slow = slow
        self.min_interval = 60.0 / budget
        self.clock = clock
        self.polls = 0
        self._poked = asyncio.Event()

    def poke(self) -> None:
        """A pod was just created: poll soon (within the budget) rather than at the slow pace."""
        self._poked.set()

    def interval(self) -> float:
        tracked = [r for r in self.store if r.in_provider]
        busy = any(_in_transition(r) for r in tracked)
        return max(self.fast if busy else self.slow, self.min_interval)

    async def poll_once(self) -> None:
        started = self.clock()
        self.polls += 1
        statuses = await self.guard.call("get_pod_statuses", self.provider.get_pod_statuses)
        for record in self.store:
            if not record.in_provider or record.stopping:
                continue
            if record.created_at is not None and record.created_at > started:
                continue  # created after the backend answered: its absence means nothing yet
            reported = statuses.get(record.ref.uid)
            if not record.polled or reported != record.reported:
                record.polled = True
                record.reported = reported
                self.queue.add(record.key)

    async def run(self) -> None:
        last = -float("inf")
        while True:
            try:
                await self.poll_once()
            except ProviderError as exc:
                log.warning("bulk status poll failed: %s", exc)
            last = self.clock()
            self._poked.clear()
            wait = self.interval()
            try:
                async with asyncio.timeout(wait):
                    await self._poked.wait()
            except TimeoutError:
                continue
            # Poked: poll as soon as the budget allows.
            await asyncio.sleep(max(0.0, last + self.min_interval - self.clock()))
