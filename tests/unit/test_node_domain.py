from __future__ import annotations

import datetime

import pytest

from vk_operator.domain import node
from vk_operator.domain.model import Capacity

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(minutes=1)


@pytest.mark.parametrize(
    ("previous_status", "wanted_status", "expected_transition"),
    [
        (None, "True", "2026-01-01T00:01:00Z"),  # new condition: transition now
        ("True", "True", "2026-01-01T00:00:00Z"),  # unchanged: transition kept
        ("False", "True", "2026-01-01T00:01:00Z"),  # flipped: transition now
    ],
)
def test_last_transition_time_moves_only_on_transitions(
    previous_status: str | None, wanted_status: str, expected_transition: str
) -> None:
    previous = (
        []
        if previous_status is None
        else [{"type": "Ready", "status": previous_status, "lastTransitionTime": node.rfc3339(T0)}]
    )
    merged = node.merge_conditions(previous, [{"type": "Ready", "status": wanted_status}], T1)
    assert merged == [
        {
            "type": "Ready",
            "status": wanted_status,
            "lastHeartbeatTime": "2026-01-01T00:01:00Z",
            "lastTransitionTime": expected_transition,
        }
    ]


def test_conditions_written_by_others_are_kept() -> None:
    foreign = {"type": "example.com/Healthy", "status": "True", "lastTransitionTime": "x"}
    merged = node.merge_conditions([foreign], node.default_conditions(), T0)
    assert foreign in merged
    assert [c["type"] for c in merged[:5]] == [
        "Ready",
        "MemoryPressure",
        "DiskPressure",
        "PIDPressure",
        "NetworkUnavailable",
    ]


@pytest.mark.parametrize(
    ("taint", "expected"),
    [
        (
            "virtual-kubelet.io/provider",
            [{"key": "virtual-kubelet.io/provider", "value": "mock", "effect": "NoSchedule"}],
        ),
        (None, []),
    ],
)
def test_taint(taint: str | None, expected: list[dict[str, str]]) -> None:
    identity = node.NodeIdentity(name="n", provider="mock", taint=taint)
    assert node.node_taints(identity) == expected


def test_new_node_carries_capacity_address_and_kubelet_port() -> None:
    identity = node.NodeIdentity(name="vk", provider="mock", internal_ip="10.1.2.3", kubelet_port=12345)
    obj = node.new_node(identity, Capacity(cpu="4", memory="8Gi", pods="10", gpu="1"), [])
    status = obj["status"]
    assert status["capacity"] == {"cpu": "4", "memory": "8Gi", "pods": "10", "nvidia.com/gpu": "1"}
    assert status["allocatable"] == status["capacity"]
    assert status["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 12345}}
    assert {"type": "InternalIP", "address": "10.1.2.3"} in status["addresses"]
    assert obj["metadata"]["labels"]["kubernetes.io/hostname"] == "vk"
    assert obj["metadata"]["labels"]["type"] == "virtual-kubelet"


def test_lease_is_owned_by_the_node() -> None:
    lease = node.lease("vk", "uid-1", 40, T0)
    assert lease["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Node", "name": "vk", "uid": "uid-1"}
    ]
    assert lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["spec"]["holderIdentity"] == "vk"
    assert lease["spec"]["renewTime"] == "2026-01-01T00:00:00.000000Z"


@pytest.mark.parametrize(
    ("label", "restricted"),
    [
        ("kubernetes.io/role", True),
        ("node-role.kubernetes.io/agent", True),
        ("example.k8s.io/x", True),
        ("kubernetes.io/hostname", False),
        ("kubernetes.io/os", False),
        ("node.kubernetes.io/exclude-from-external-load-balancers", False),
        ("kubelet.kubernetes.io/anything", False),
        ("type", False),
        ("example.com/team", False),
    ],
)
def test_labels_node_restriction_refuses(label: str, restricted: bool) -> None:
    assert (label in node.restricted_labels({label: "v"})) is restricted
