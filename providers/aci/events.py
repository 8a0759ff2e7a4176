"""What the provider tells as Kubernetes Events: ACI's instanceView events, once each, and the
mapping's warnings (pure: the provider hands the results to the core's ``PodEventRecorder``).

**The identity of an ACI event** is :attr:`~providers.aci.status.AciEvent.key`: the group or
container it is about, its type, name, message and ``firstTimestamp``. ACI keeps its events and
returns them in every GET, raising ``count`` and ``lastTimestamp`` when one repeats (a container
started again, another back-off), so:

- the first sight of an event records it once per occurrence ACI counted (at most
  :data:`MAX_REPEATS`), and a later sight with a higher count records it again for the new
  occurrences only. The core's correlator makes every record after the first the *same* Kubernetes
  Event (same reason and message: one object, its ``count`` raised), never a new one; an event
  seen again with the same count records nothing.
- After a restart, the events of a group this instance did not create that happened before it
  started (``lastTimestamp``, else ``firstTimestamp``, earlier than ``since``) were told by the
  instance before: they are taken as told, not posted again. (What happened while no instance
  ran is lost, as on a kubelet that restarts.)

The Kubernetes Event's reason is ACI's event name, its type ACI's (``Warning`` or ``Normal``), and
the message names the container: ``container app: Started container``.

**Mapping warnings** (what ACI cannot express but the pod can run without, e.g. a ``tcpSocket``
probe) are Warning Events with the warning's reason and the pod field in the message, told once
per pod (a retried create does not repeat them).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence

from providers.aci.mapping import MappingWarning
from providers.aci.status import AciEvent

MAX_REPEATS = 10  # records of one event per sight: the count after that is ACI's, not ours to replay

EventKey = tuple[str | None, str, str, str, datetime.datetime | None]


@dataclasses.dataclass(frozen=True)
class PodEvent:
    """A Kubernetes Event to record on a pod."""

    reason: str
    message: str
    warning: bool


def pod_event(event: AciEvent) -> PodEvent:
    message = event.message or event.reason
    if event.container is not None:
        message = f"container {event.container}: {message}"
    return PodEvent(event.reason, message, event.type == "Warning")


def warning_event(warning: MappingWarning) -> PodEvent:
    return PodEvent(warning.reason, str(warning), True)


class EventLedger:
    """Per pod (UID): how many occurrences of each ACI event, and which warnings, were told."""

    def __init__(self) -> None:
        self._told: dict[str, dict[EventKey, int]] = {}
        self._warned: dict[str, set[tuple[str, str]]] = {}

    def news(
        self, uid: str, events: Sequence[AciEvent], *, since: datetime.datetime | None = None
    ) -> list[PodEvent]:
        """The records to make for ``events`` (a GET's, of pod ``uid``); ``since``: events that
        ended before it were told by an earlier instance (None: this instance saw them all)."""
        told = self._told.setdefault(uid, {})
        records: list[PodEvent] = []
        for event in events:
            count = max(1, event.count)
            before = told.get(event.key)
            if before is None and since is not None and _ended_before(event, since):
                told[event.key] = count
                continue
            new = count - (before or 0)
            if new <= 0:
                continue
            told[event.key] = count
            records += [pod_event(event)] * min(new, MAX_REPEATS)
        return records

    def new_warnings(self, uid: str, warnings: Iterable[MappingWarning]) -> list[PodEvent]:
        """The warnings of ``uid`` not told yet."""
        warned = self._warned.setdefault(uid, set())
        records = []
        for warning in warnings:
            told = warning_event(warning)
            if (told.reason, told.message) not in warned:
                warned.add((told.reason, told.message))
                records.append(told)
        return records

    def forget(self, uid: str) -> None:
        self._told.pop(uid, None)
        self._warned.pop(uid, None)

    def keep(self, uids: Iterable[str]) -> None:
        """Forget every pod but ``uids`` (the groups still tracked)."""
        kept = set(uids)
        for book in (self._told, self._warned):
            for uid in [uid for uid in book if uid not in kept]:
                del book[uid]

    def __len__(self) -> int:
        return len(set(self._told) | set(self._warned))


def _ended_before(event: AciEvent, since: datetime.datetime) -> bool:
    when = event.last_time or event.first_time
    if when is None:
        return False
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return when < since
