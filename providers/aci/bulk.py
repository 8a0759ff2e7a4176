"""The bulk status of a node's container groups: one list, and GETs only where they tell something.

ARM's list of a resource group's container groups has no instance view: it gives each group's
``provisioningState`` (and its spec, tags and IP), not the containers' states, exit codes and
restarts, which only a GET has. :class:`StatusTracker` keeps, per group of this node, the status of
its last GET (or of the create's PUT response) and decides after each list which groups to GET:

1. groups never read with a GET (adopted after a restart, or created and not read since), first;
2. groups of run-to-completion containers (restartPolicy Never or OnFailure: Jobs) not known to
   have ended, at every poll: their end is their next change, and a list cannot show it (the
   group stays provisioned). They come before the groups that only need their start confirmed:
   after a burst of 1,000 pods those take the GETs' share for many minutes (a list already shows
   them Running), and a Job's end would wait behind them;
3. groups whose ``provisioningState`` changed since their last GET;
4. groups in transition: provisioning not finished, or a last status that is not steady (Pending,
   a container waiting or restarting...);
5. steady groups not read for ``status_poll.refresh_seconds`` (a list cannot show a restart or a
   container that ended while the group stays provisioned), the stalest first;

as many as the GETs' share of the ``status_poll.calls_per_minute`` budget allows (the provider
gives lists and GETs half each, spread over the minute, so neither starves the other).
Within a rank, the group read longest ago comes first. Steady groups answer from the cache, so
once every group is steady (and no Job runs) a poll costs the list alone: one call per 100 groups
(ARM's page), and never more than the budget, whatever the pod count. A steady status is a terminal
pod, or a running one whose containers all run.

Until its first GET, a group the list shows provisioned (``Succeeded``: ACI deployed and started
it) is reported Running with its containers running, so that a restarted virtual kubelet does not
flap its adopted pods to not-ready while their GETs wait for budget; those GETs are first in line.
A group this instance created is kept for :data:`LIST_GRACE_SECONDS` even if a list does not show
it yet (ARM lists can lag behind a PUT): the core would otherwise count it as lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from azure.mgmt.containerinstance.models import ContainerGroup

from providers.aci import naming, status
from vk_operator.provider import (
    ContainerPhase,
    ContainerStatus,
    PodPhase,
    PodRef,
    ProviderPodStatus,
)

TERMINAL_PROVISIONING = frozenset({"Succeeded", "Failed", "Canceled"})
LIST_GRACE_SECONDS = 120.0
NEVER_READ = 0  # the ranks of ``StatusTracker.ranked`` (see the module docstring)
MAY_END = 1
PROVISIONING_CHANGED = 2
IN_TRANSITION = 3
REFRESH = 4
ENDING_POLICIES = frozenset({"Never", "OnFailure"})


@dataclasses.dataclass
class Tracked:
    name: str  # the container group
    ref: PodRef
    provisioning: str | None = None  # the latest provisioningState seen (list, GET or PUT)
    full: ProviderPodStatus | None = None  # from the last GET (or the create's PUT response)
    full_provisioning: str | None = None  # the provisioningState of that answer
    listed: ProviderPodStatus | None = None  # from the latest list item (no instance view)
    fetched_at: float | None = None  # when ``full`` was read
    created_at: float | None = None  # when this instance created it
    seen_in_list: bool = False
    restart_policy: str | None = None

    def may_end(self) -> bool:
        """A group of run-to-completion containers not known to have ended: its end is the next
        change, and a list does not show it (the group stays provisioned)."""
        full = self.full
        ended = full is not None and full.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED)
        return self.restart_policy in ENDING_POLICIES and not ended

    def status(self) -> ProviderPodStatus:
        if self.full is not None and self.provisioning == self.full_provisioning:
            return self.full
        if self.listed is not None:
            return self.listed
        if self.full is not None:
            return self.full
        return ProviderPodStatus(PodPhase.PENDING, reason=self.provisioning or None)

    def steady(self) -> bool:
        full = self.full
        if full is None or self.full_provisioning != self.provisioning:
            return False
        if self.provisioning not in TERMINAL_PROVISIONING:
            return False
        if full.phase in (PodPhase.SUCCEEDED, PodPhase.FAILED):
            return True
        return (
            full.phase is PodPhase.RUNNING
            and bool(full.containers)
            and all(c.phase is ContainerPhase.RUNNING for c in full.containers)
        )


def listed_status(group: ContainerGroup) -> ProviderPodStatus:
    """The status a list item tells (see the module docstring for a provisioned group)."""
    told = status.pod_status(group)
    if group.provisioning_state == "Succeeded" and told.phase is PodPhase.RUNNING and not told.containers:
        running = tuple(
            ContainerStatus(
                c.name, c.image or "", ContainerPhase.RUNNING, container_id=status.container_id(group, c.name)
            )
            for c in group.containers or []
        )
        told = dataclasses.replace(told, containers=running)
    return told


class StatusTracker:
    """The per-group cache behind ``get_pod_statuses`` (pure: the provider does the calls)."""

    def __init__(self, node_name: str, refresh_seconds: float, clock: Callable[[], float]) -> None:
        self.node_name = node_name
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.groups: dict[str, Tracked] = {}  # by group name
        self.listed_once = False

    def owned_ref(self, group: ContainerGroup) -> PodRef | None:
        tags: Mapping[str, str] | None = group.tags
        if not naming.owned_by(tags, self.node_name):
            return None
        return naming.ref_from_tags(tags)

    # -- what calls tell -------------------------------------------------------------------------
    def absorb_list(self, groups: Iterable[ContainerGroup]) -> None:
        """A complete list of the resource group: adopt, update, and forget what is gone."""
        now = self.clock()
        seen: set[str] = set()
        for group in groups:
            ref = self.owned_ref(group)
            if ref is None or not group.name:
                continue
            seen.add(group.name)
            tracked = self.groups.get(group.name)
            if tracked is None or tracked.ref.uid != ref.uid:
                tracked = self.groups[group.name] = Tracked(group.name, ref)
            tracked.provisioning = group.provisioning_state
            tracked.restart_policy = group.restart_policy or tracked.restart_policy
            tracked.listed = listed_status(group)
            tracked.seen_in_list = True
        for name, tracked in list(self.groups.items()):
            if name in seen:
                continue
            recent = tracked.created_at is not None and now - tracked.created_at < LIST_GRACE_SECONDS
            if not (recent and not tracked.seen_in_list):
                del self.groups[name]
        self.listed_once = True

    def absorb_group(self, group: ContainerGroup, *, created: bool = False) -> Tracked | None:
        """A GET's (or a PUT's) answer; None when the group is not this node's."""
        ref = self.owned_ref(group)
        if ref is None or not group.name:
            return None
        now = self.clock()
        tracked = self.groups.get(group.name)
        if tracked is None or tracked.ref.uid != ref.uid:
            tracked = self.groups[group.name] = Tracked(group.name, ref)
        if created:
            tracked.created_at = now
        tracked.provisioning = group.provisioning_state
        tracked.restart_policy = group.restart_policy or tracked.restart_policy
        tracked.full = status.pod_status(group)
        tracked.full_provisioning = group.provisioning_state
        tracked.fetched_at = now
        return tracked

    def forget(self, name: str, uid: str | None = None) -> None:
        tracked = self.groups.get(name)
        if tracked is not None and (uid is None or tracked.ref.uid == uid):
            del self.groups[name]

    # -- what to read ----------------------------------------------------------------------------
    def ranked(self) -> list[tuple[int, Tracked]]:
        """Groups worth a GET now with their rank (0-4, see the module docstring), most needed first."""
        now = self.clock()
        ranked: list[tuple[int, float, str, Tracked]] = []
        for name, tracked in self.groups.items():
            if tracked.full is None:
                rank = NEVER_READ
            elif tracked.may_end():
                rank = MAY_END
            elif tracked.provisioning != tracked.full_provisioning:
                rank = PROVISIONING_CHANGED
            elif not tracked.steady():
                rank = IN_TRANSITION
            elif tracked.fetched_at is None or now - tracked.fetched_at >= self.refresh_seconds:
                rank = REFRESH
            else:
                continue
            ranked.append((rank, tracked.fetched_at or 0.0, name, tracked))
        ranked.sort(key=lambda item: item[:3])
        return [(item[0], item[3]) for item in ranked]

    def due(self, room: int, reserve: int = 0) -> list[Tracked]:
        """What to GET with ``room`` calls, leaving ``reserve`` of them for the next list (which
        finds the changes of every group at once, a GET those of one): the most needed first."""
        return [tracked for _, tracked in self.ranked()[: max(0, room - reserve)]]

    def statuses(self) -> dict[str, ProviderPodStatus]:
        """Every tracked pod's status by UID."""
        return {t.ref.uid: t.status() for t in self.groups.values()}

    def summary(self) -> dict[str, Any]:
        steady = sum(1 for t in self.groups.values() if t.steady())
        return {"groups": len(self.groups), "steady": steady}
