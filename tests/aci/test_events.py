"""ACI's instanceView events and the mapping's warnings as Kubernetes Events (pure, table-tested)."""

from __future__ import annotations

import datetime

import pytest

from providers.aci import events, mapping
from providers.aci.events import EventLedger, PodEvent
from providers.aci.status import AciEvent

T0 = datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC)
STARTED = PodEvent("Started", "container app: Started container", False)


def _event(
    reason: str = "Started",
    count: int = 1,
    *,
    container: str | None = "app",
    message: str = "Started container",
    first: datetime.datetime | None = T0,
    last: datetime.datetime | None = None,
    kind: str = "Normal",
) -> AciEvent:
    field_path = f"spec.containers{{{container}}}" if container else None
    return AciEvent(container, field_path, kind, reason, message, count, first, last or first)


@pytest.mark.parametrize(
    ("polls", "expected"),
    [
        # Each poll's events (ACI returns every event again); the records each poll makes.
        ([[_event()], [_event()], [_event()]], [[STARTED], [], []]),
        # A repeat (higher count, later lastTimestamp): recorded again for the new occurrences only;
        # the core's correlator makes the repeats one Event with the count raised.
        (
            [[_event(count=1)], [_event(count=3, last=T0.replace(minute=2))], [_event(count=3)]],
            [[STARTED], [STARTED, STARTED], []],
        ),
        # First seen with a count: recorded that many times (at most MAX_REPEATS).
        ([[_event(count=4)]], [[STARTED] * 4]),
        ([[_event(count=500)]], [[STARTED] * events.MAX_REPEATS]),
        # Another firstTimestamp is another event (ACI re-created it).
        ([[_event()], [_event(first=T0.replace(hour=11))]], [[STARTED], [STARTED]]),
        # The group's own event, and a Warning.
        (
            [[_event("FailedMount", container=None, message="mount error(2)", kind="Warning")]],
            [[PodEvent("FailedMount", "mount error(2)", True)]],
        ),
        # Another container's event of the same name is its own.
        (
            [[_event(), _event(container="sidecar")]],
            [[STARTED, PodEvent("Started", "container sidecar: Started container", False)]],
        ),
        # No message: the reason is the message.
        ([[_event("Pulled", message="")]], [[PodEvent("Pulled", "container app: Pulled", False)]]),
    ],
)
def test_events_are_told_once_and_repeats_counted(
    polls: list[list[AciEvent]], expected: list[list[PodEvent]]
) -> None:
    ledger = EventLedger()
    assert [ledger.news("uid", poll) for poll in polls] == expected


@pytest.mark.parametrize(
    ("event", "told"),
    [
        (_event(last=T0 - datetime.timedelta(seconds=1)), False),  # before this instance: told before
        (_event(first=T0 - datetime.timedelta(hours=1), last=T0 + datetime.timedelta(seconds=1)), True),
        (_event(first=None, last=None), True),  # no time: cannot be told apart, so told
        (
            _event(first=datetime.datetime(2026, 12, 1, 9, 0), last=datetime.datetime(2026, 12, 1, 9, 0)),
            False,
        ),
    ],
)
def test_after_a_restart_only_what_happened_since_is_told(event: AciEvent, told: bool) -> None:
    ledger = EventLedger()
    assert bool(ledger.news("uid", [event], since=T0)) is told
    grown = AciEvent(**{**event.__dict__, "count": event.count + 1})
    assert ledger.news("uid", [grown], since=T0) == [events.pod_event(event)]  # a repeat since is told


def test_pods_are_apart_and_forgotten() -> None:
    ledger = EventLedger()
    assert ledger.news("a", [_event()]) == [STARTED]
    assert ledger.news("b", [_event()]) == [STARTED]
    warning = mapping.MappingWarning("spec.containers[0].livenessProbe", "UnsupportedProbe", "no tcpSocket")
    assert ledger.new_warnings("c", [warning, warning]) == [
        PodEvent("UnsupportedProbe", "spec.containers[0].livenessProbe: no tcpSocket", True)
    ]
    assert ledger.new_warnings("c", [warning]) == []  # a retried create
    assert len(ledger) == 3
    ledger.forget("a")
    ledger.keep(["b"])
    assert len(ledger) == 1
    assert ledger.news("a", [_event()]) == [STARTED]  # a new pod of that UID would start afresh
    assert ledger.news("b", [_event()]) == []
