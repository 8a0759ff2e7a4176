"""The Node object a virtual kubelet registers, and how its status evolves."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vk_operator.domain.model import Capacity

TAINT_KEY = "virtual-kubelet.io/provider"


@dataclasses.dataclass(frozen=True)
class NodeIdentity:
    name: str
    provider: str
    operating_system: str = "linux"
    architecture: str = "amd64"
    internal_ip: str = "127.0.0.1"
    kubelet_port: int = 10250
    kubelet_version: str = "v1.37.0-vk"
    taint: str | None = TAINT_KEY  # None: no taint


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_labels(identity: NodeIdentity) -> dict[str, str]:
    return {
        "type": "virtual-kubelet",
        "kubernetes.io/role": "agent",
        "kubernetes.io/hostname": identity.name,
        "kubernetes.io/os": identity.operating_system,
        "kubernetes.io/arch": identity.architecture,
        "node.kubernetes.io/exclude-from-external-load-balancers": "true",
    }


# Labels a kubelet may set on its own Node under the NodeRestriction admission plugin; other
# labels in the kubernetes.io / k8s.io namespaces are refused for node identities.
_KUBELET_LABELS = frozenset(
    {
        "kubernetes.io/hostname",
        "kubernetes.io/os",
        "kubernetes.io/arch",
        "beta.kubernetes.io/os",
        "beta.kubernetes.io/arch",
        "beta.kubernetes.io/instance-type",
        "node.kubernetes.io/instance-type",
        "topology.kubernetes.io/region",
        "topology.kubernetes.io/zone",
        "failure-domain.beta.kubernetes.io/region",
        "failure-domain.beta.kubernetes.io/zone",
    }
)


def restricted_labels(labels: Mapping[str, str]) -> set[str]:
    """Labels NodeRestriction refuses to a node identity (kubernetes.io/role, for one)."""
    restricted = set()
    for key in labels:
        domain = key.split("/", 1)[0] if "/" in key else ""
        protected = any(domain == d or domain.endswith("." + d) for d in ("kubernetes.io", "k8s.io"))
        kubelet_namespace = any(
            domain == d or domain.endswith("." + d) for d in ("kubelet.kubernetes.io", "node.kubernetes.io")
        )
        if protected and not kubelet_namespace and key not in _KUBELET_LABELS:
            restricted.add(key)
    return restricted


def node_taints(identity: NodeIdentity) -> list[dict[str, str]]:
    if not identity.taint:
        return []
    return [{"key": identity.taint, "value": identity.provider, "effect": "NoSchedule"}]


def default_conditions(ready: bool = True) -> list[dict[str, str]]:
    """A healthy node's conditions: Ready plus the four pressure/network conditions at False."""
    rows = [
        ("Ready", "True" if ready else "False", "KubeletReady", "virtual kubelet is ready"),
        ("MemoryPressure", "False", "KubeletHasSufficientMemory", "provider has sufficient memory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "provider has no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "provider has sufficient PIDs"),
        ("NetworkUnavailable", "False", "RouteCreated", "provider network is available"),
    ]
    return [{"type": t, "status": s, "reason": r, "message": m} for t, s, r, m in rows]


def merge_conditions(
    previous: Sequence[Mapping[str, Any]], wanted: Iterable[Mapping[str, str]], now: datetime.datetime
) -> list[dict[str, Any]]:
    """Our conditions with a fresh heartbeat; lastTransitionTime moves only when status changes.

    Conditions of types we do not own (written by others) are kept as they are.
    """
    before = {c.get("type"): c for c in previous}
    stamp = rfc3339(now)
    merged: list[dict[str, Any]] = []
    owned = set()
    for condition in wanted:
        owned.add(condition["type"])
        old = before.get(condition["type"])
        transition = (
            old["lastTransitionTime"]
            if old and old.get("status") == condition["status"] and old.get("lastTransitionTime")
            else stamp
        )
        merged.append({**condition, "lastHeartbeatTime": stamp, "lastTransitionTime": transition})
    merged += [dict(c) for c in previous if c.get("type") not in owned]
    return merged


def node_status(
    identity: NodeIdentity,
    capacity: Capacity,
    conditions: list[dict[str, Any]],
) -> dict[str, Any]:
    resources = capacity.as_resources()
    return {
        "capacity": resources,
        "allocatable": dict(resources),
        "conditions": conditions,
        "addresses": [
            {"type": "InternalIP", "address": identity.internal_ip},
            {"type": "Hostname", "address": identity.name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": identity.kubelet_port}},
        "nodeInfo": {
            "operatingSystem": identity.operating_system,
            "architecture": identity.architecture,
            "kubeletVersion": identity.kubelet_version,
            "kubeProxyVersion": "",
            "machineID": "",
            "systemUUID": "",
            "bootID": "",
            "kernelVersion": "",
            "osImage": "",
            "containerRuntimeVersion": f"{identity.provider}://virtual-kubelet",
        },
    }


def new_node(identity: NodeIdentity, capacity: Capacity, conditions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": identity.name, "labels": node_labels(identity)},
        "spec": {"taints": node_taints(identity)},
        "status": node_status(identity, capacity, conditions),
    }


def lease(node_name: str, node_uid: str, duration_seconds: int, now: datetime.datetime) -> dict[str, Any]:
    """The node's heartbeat Lease, owned by the Node so it is collected with it."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": node_name,
            "namespace": "kube-node-lease",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": node_name, "uid": node_uid}],
        },
        "spec": {
            "holderIdentity": node_name,
            "leaseDurationSeconds": duration_seconds,
            "renewTime": now.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        },
    }
