"""domain.packed: what is packed comes back equal, whatever it looks like, and smaller than JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vk_operator.domain.packed import pack, unpack

TYPICAL_POD = {
    "metadata": {"name": "web-7d4b9c", "namespace": "team-a", "uid": "2b5c1c9e-7f7a-4a0e-9a43-0d1a0c4f3b1e"},
    "spec": {
        "containers": [{"name": "web", "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent"}],
        "restartPolicy": "Always",
        "nodeName": "vk-1",
    },
    "status": {"phase": "Running", "podIP": "10.244.0.7"},
}


@pytest.mark.parametrize(
    "obj",
    [
        TYPICAL_POD,
        {},
        [],
        None,
        "",
        {"metadata": {"annotations": {"note": 'ünïcødé ✓ and "quotes" and \\ and \n'}}},
        {"spec": {"containers": [{"name": f"c{i}", "args": ["x" * 1000]} for i in range(20)]}},
        # Kubernetes' integers are int32/int64: the extremes of int64 round-trip.
        {"numbers": [0, -1, 1.5, 2**63 - 1, -(2**63)], "flags": [True, False, None]},
    ],
    ids=["pod", "empty-dict", "empty-list", "null", "empty-string", "unicode", "large", "scalars"],
)
def test_round_trip(obj: Any) -> None:
    assert unpack(pack(obj)) == obj


def test_each_unpack_is_a_fresh_copy() -> None:
    packed = pack(TYPICAL_POD)
    first = unpack(packed)
    first["metadata"]["name"] = "changed"
    assert unpack(packed)["metadata"]["name"] == "web-7d4b9c"


def test_a_typical_pod_packs_to_a_fraction_of_its_json() -> None:
    assert len(pack(TYPICAL_POD)) * 2 < len(json.dumps(TYPICAL_POD, separators=(",", ":")))
