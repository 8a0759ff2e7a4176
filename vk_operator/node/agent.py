"""Keeps the Node registered, its Lease fresh and its status current."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from vk_operator.domain import node as node_domain
from vk_operator.domain.clock import utcnow
from vk_operator.domain.errors import PermanentError, ProviderError
from vk_operator.domain.model import Capacity
from vk_operator.domain.quantity import capacity_problems
from vk_operator.guard import ProviderGuard
from vk_operator.kube import ApiError, Kube
from vk_operator.kube.client import MERGE_PATCH
from vk_operator.provider import Provider

log = logging.getLogger(__name__)


class NodeAgent:
    def __init__(
        self,
        kube: Kube,
        provider: Provider,
        identity: node_domain.NodeIdentity,
        *,
        lease_duration: int = 40,
        lease_renew_interval: float = 10.0,
        status_interval: float = 60.0,
        guard: ProviderGuard | None = None,
    ) -> None:
        self.kube = kube
        self.provider = provider
        self.guard = guard or ProviderGuard()
        self.identity = identity
        self.lease_duration = lease_duration
        self.lease_renew_interval = lease_renew_interval
        self.status_interval = status_interval
        self.node_uid: str | None = None
        self.last_heartbeat: float | None = None  # loop time of the last successful lease renewal
        self._capacity: Capacity | None = None
        self._refresh = asyncio.Event()
        self.on_reconnected: Callable[[], None] = lambda: None

    @property
    def path(self) -> str:
        return f"/api/v1/nodes/{self.identity.name}"

    @property
    def lease_path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.identity.name}"

    async def _wanted_conditions(self) -> list[dict[str, str]]:
        conditions = node_domain.default_conditions()
        extra = {
            c["type"]: c for c in await self.guard.call("node_conditions", self.provider.node_conditions)
        }
        return [extra.pop(c["type"], c) for c in conditions] + list(extra.values())

    async def _read_capacity(self) -> Capacity:
        """The provider's capacity, cached for everyone else (pods read ``allocatable``); on a
        failed call after start-up the last value stands."""
        try:
            capacity = await self.guard.call("capacity", self.provider.capacity)
            problems = capacity_problems(capacity.as_resources())
            if problems:  # the API server would refuse every Node status write with it (422)
                raise PermanentError(
                    f"provider {self.provider.name} reports an invalid capacity: {'; '.join(problems)}"
                )
            self._capacity = capacity
        except ProviderError as exc:
            if self._capacity is None:
                raise
            log.warning("cannot read the provider's capacity; keeping the last value: %s", exc)
        return self._capacity

    def allocatable(self) -> Mapping[str, str]:
        """The node's allocatable resources as last read (empty before registration)."""
        return self._capacity.as_resources() if self._capacity is not None else {}

    async def register(self) -> dict[str, Any]:
        """Create the Node, or bring an existing one up to date; returns the Node."""
        capacity = await self._read_capacity()
        conditions = node_domain.merge_conditions([], await self._wanted_conditions(), utcnow())
        try:
            existing = await self.kube.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            created = await self._create(node_domain.new_node(self.identity, capacity, conditions))
            self.node_uid = created["metadata"]["uid"]
            log.info("registered node %s", self.identity.name)
            return created
        self.node_uid = existing["metadata"]["uid"]
        await self._reconcile_metadata(existing)
        updated = await self.update_status(existing)
        log.info("node %s already registered; updated", self.identity.name)
        return updated

    async def _reconcile_metadata(self, existing: dict[str, Any]) -> None:
        """Bring labels and our taint up to date, writing only what differs.

        NodeRestriction forbids a node identity to change taints of an existing Node and some
        labels at all, so an unconditional patch would fail every restart.
        """
        labels = node_domain.node_labels(self.identity)
        labels = {k: v for k, v in labels.items() if k not in node_domain.restricted_labels(labels)}
        current_labels = existing["metadata"].get("labels") or {}
        patch: dict[str, Any] = {}
        if any(current_labels.get(k) != v for k, v in labels.items()):
            patch["metadata"] = {"labels": labels}
        taints = existing.get("spec", {}).get("taints") or []
        ours = node_domain.node_taints(self.identity)
        if any(t not in taints for t in ours):
            # Keep taints others added (an admin, the node-lifecycle controller).
            patch["spec"] = {"taints": [t for t in taints if t.get("key") != self.identity.taint] + ours}
        if not patch:
            return
        try:
            await self.kube.patch(self.path, patch, MERGE_PATCH)
        except ApiError as exc:
            if exc.status != 403:
                raise
            log.warning(
                "cannot update the labels/taints of the existing node %s: %s", self.identity.name, exc
            )

    async def _create(self, node: dict[str, Any]) -> dict[str, Any]:
        try:
            created: dict[str, Any] = await self.kube.create("/api/v1/nodes", node)
            return created
        except ApiError as exc:
            if exc.status != 403 or "not allowed to set the following labels" not in exc.message:
                raise
        # We run as a node identity under NodeRestriction: drop what it forbids and say so.
        labels = node["metadata"]["labels"]
        dropped = node_domain.restricted_labels(labels)
        log.warning(
            "NodeRestriction forbids node identities these labels; registering without them: %s",
            ", ".join(sorted(dropped)),
        )
        node["metadata"]["labels"] = {k: v for k, v in labels.items() if k not in dropped}
        retried: dict[str, Any] = await self.kube.create("/api/v1/nodes", node)
        return retried

    async def update_status(self, current: dict[str, Any] | None = None) -> dict[str, Any]:
        if current is None:
            current = await self.kube.get(self.path)
        capacity = await self._read_capacity()
        previous = (current.get("status") or {}).get("conditions") or []
        conditions = node_domain.merge_conditions(previous, await self._wanted_conditions(), utcnow())
        status = node_domain.node_status(self.identity, capacity, conditions)
        # Strategic merge: conditions and addresses merge by type, so others' entries survive.
        patched: dict[str, Any] = await self.kube.patch(self.path + "/status", {"status": status})
        return patched

    async def renew_lease(self) -> None:
        assert self.node_uid is not None
        body = node_domain.lease(self.identity.name, self.node_uid, self.lease_duration, utcnow())
        try:
            await self.kube.patch(self.lease_path, body, MERGE_PATCH)
        except ApiError as exc:
            if not exc.not_found:
                raise
            await self.kube.create("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body)
        self.last_heartbeat = asyncio.get_running_loop().time()

    async def heartbeat(self) -> None:
        """One tick: re-register if the Node vanished, then renew the Lease."""
        try:
            node = await self.kube.get(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
            log.warning("node %s was deleted; registering it again", self.identity.name)
            node = await self.register()
        if node["metadata"]["uid"] != self.node_uid:
            self.node_uid = node["metadata"]["uid"]
        # A lease owned by a previous incarnation of the Node would be garbage-collected.
        await self.renew_lease()

    def request_status_refresh(self) -> None:
        self._refresh.set()

    async def run_heartbeat(self) -> None:
        """Renew the Lease every interval. An outage is one WARNING line when it starts and one INFO
        line when it ends (then ``on_reconnected`` runs: watch events may have been lost)."""
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if failing_since is None:
                    failing_since = loop.time()
                    log.warning("node heartbeat failed (API server unreachable?): %s", exc)
                else:
                    log.debug("node heartbeat still failing: %s", exc)
            else:
                if failing_since is not None:
                    log.info("node heartbeat renewed again after %.0f s", loop.time() - failing_since)
                    failing_since = None
                    self.on_reconnected()
            await asyncio.sleep(self.lease_renew_interval)

    async def run_status(self) -> None:
        while True:
            # asyncio.timeout, not wait_for: wait_for spawns a task, which kopf would wait for at exit.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.status_interval):
                    await self._refresh.wait()
            self._refresh.clear()
            try:
                await self.update_status()
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.not_found:
                    continue  # the heartbeat re-registers it
                log.warning("node status update failed: %s", exc)
            except Exception as exc:
                log.warning("node status update failed: %s", exc)

    async def may_deregister(self) -> tuple[bool, str]:
        """Whether this identity may delete its Node (a SelfSubjectAccessReview), and the
        authorizer's reason. ``system:node`` identities may not: NodeRestriction aside, the Node
        authorizer grants no ``delete nodes``."""
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {
                "resourceAttributes": {"verb": "delete", "resource": "nodes", "name": self.identity.name}
            },
        }
        answer = await self.kube.create("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review)
        status = answer.get("status") or {}
        return bool(status.get("allowed")), str(status.get("reason") or status.get("evaluationError") or "")

    async def deregister(self) -> None:
        try:
            await self.kube.delete(self.path)
        except ApiError as exc:
            if not exc.not_found:
                raise
