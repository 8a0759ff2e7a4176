"""Which groups the bulk status reads with a GET, and in which order (pure: StatusTracker)."""

from __future__ import annotations

import pytest

from providers.aci import bulk
from providers.aci.bulk import StatusTracker, Tracked
from vk_operator.provider import ContainerPhase, ContainerStatus, PodPhase, PodRef, ProviderPodStatus

NOW = 1000.0
RUNNING = ProviderPodStatus(PodPhase.RUNNING, (ContainerStatus("app", "busybox", ContainerPhase.RUNNING),))
STARTING = ProviderPodStatus(PodPhase.PENDING, (ContainerStatus("app", "busybox", ContainerPhase.WAITING),))
DONE = ProviderPodStatus(PodPhase.SUCCEEDED, (ContainerStatus("app", "busybox", ContainerPhase.TERMINATED),))


def _tracked(
    name: str,
    full: ProviderPodStatus | None = RUNNING,
    *,
    provisioning: str = "Succeeded",
    full_provisioning: str = "Succeeded",
    policy: str = "Always",
    fetched_at: float = NOW - 10,
) -> Tracked:
    return Tracked(
        name,
        PodRef("default", name, f"uid-{name}"),
        provisioning=provisioning,
        full=full,
        full_provisioning=full_provisioning if full is not None else None,
        fetched_at=fetched_at if full is not None else None,
        restart_policy=policy,
    )


@pytest.mark.parametrize(
    ("tracked", "rank"),
    [
        (_tracked("adopted", None), bulk.NEVER_READ),
        (_tracked("job", policy="Never"), bulk.MAY_END),
        # A Job just created (its PUT said Creating, the list says Succeeded): its end comes next.
        (_tracked("new-job", STARTING, full_provisioning="Creating", policy="OnFailure"), bulk.MAY_END),
        (_tracked("job-done", DONE, policy="Never"), None),  # ended: nothing more to learn
        (_tracked("started", STARTING, full_provisioning="Creating"), bulk.PROVISIONING_CHANGED),
        (
            _tracked("starting", STARTING, provisioning="Creating", full_provisioning="Creating"),
            bulk.IN_TRANSITION,
        ),
        (_tracked("steady"), None),
        (_tracked("stale", fetched_at=NOW - 301), bulk.REFRESH),
        (_tracked("done", DONE, fetched_at=NOW - 301), bulk.REFRESH),
    ],
)
def test_the_rank_of_a_group(tracked: Tracked, rank: int | None) -> None:
    tracker = StatusTracker("vk", 300.0, lambda: NOW)
    tracker.groups[tracked.name] = tracked
    assert [r for r, _ in tracker.ranked()] == ([] if rank is None else [rank])


def test_jobs_come_before_groups_that_only_need_their_start_confirmed() -> None:
    """After a burst, hundreds of groups wait for their confirming GET: a running Job goes first."""
    tracker = StatusTracker("vk", 300.0, lambda: NOW)
    for i in range(50):
        name = f"burst-{i:02d}"
        tracker.groups[name] = _tracked(
            name, STARTING, full_provisioning="Creating", fetched_at=NOW - 100 + i
        )
    tracker.groups["job"] = _tracked("job", policy="Never", fetched_at=NOW - 1)
    assert [t.name for t in tracker.due(3)] == ["job", "burst-00", "burst-01"]  # then the stalest first
    assert tracker.due(0) == []
