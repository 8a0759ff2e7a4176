"""A failed `node up` leaves the host as it found it: the bridge, the iptables rules, containerd and
the kubelet it had already made or started are undone before the error reaches the caller.

Runs before the session's node comes up (files run in name order; one real node per machine)."""

from __future__ import annotations

import pytest

from tests.realnode.conftest import host_snapshot
from vk_operator.devcluster.cluster import Cluster
from vk_operator.devcluster.node import BRIDGE, NodeError, RealNode


def test_a_failed_start_restores_the_host(cluster: Cluster) -> None:
    node = RealNode(cluster.dir)
    node.down()
    before = host_snapshot()
    # Fails at the last step, once the kubelet has been started: no time to become Ready.
    with pytest.raises(NodeError, match="Ready not reached"):
        node.up(ready_timeout=0)
    assert node.entries() == []  # the journal was replayed and removed
    assert node.running() == {}
    assert host_snapshot() == before
    assert BRIDGE not in before["links"]  # type: ignore[operator]
    logs = node.log_dir
    assert (logs / "containerd.log").is_file() and (logs / "kubelet.log").is_file()  # both had started
