"""The virtual kubelet under a UID that has no passwd entry, as in an image without one (issue 15).

The chart runs the container as UID 65532; the first image had no passwd entry for it, and the
process registered its node and then crash-looped: kopf's peering identity called
``getpass.getuser()`` -> ``KeyError: 'getpwuid(): uid not found: 65532'``. Here the process runs as
such a user (a user namespace) with a container's environment (no USER or LOGNAME; HOME=/, which runc
sets for a user it cannot look up), on the real control plane.
"""

from __future__ import annotations

import pwd
import shutil
from collections.abc import Callable

from tests.conftest import VirtualKubeletProcess, pod_manifest, wait_node_ready, wait_phase
from tests.integration.test_pods import create_pod
from vk_operator.devcluster.cluster import Cluster, free_port
from vk_operator.kube import Kube

CHART_UID = 65532  # the chart's runAsUser


def _has_no_passwd_entry(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return True
    return False


async def test_the_virtual_kubelet_runs_under_a_uid_without_a_passwd_entry(
    cluster: Cluster,
    admin: Kube,
    namespace: str,
    node_name: str,
    tmp_path: object,
    start_vk: Callable[..., VirtualKubeletProcess],
) -> None:
    assert shutil.which("unshare"), "util-linux's unshare runs the process under another UID"
    assert _has_no_passwd_entry(CHART_UID), "the test needs a UID without a passwd entry"
    vk = start_vk(
        "--provider",
        "mock",
        "--nodename",
        node_name,
        "--kubeconfig",
        str(cluster.node_kubeconfig(node_name)),
        "--kubelet-port",
        str(free_port()),
        "--lease-renew-interval",
        "2",
        uid=CHART_UID,
        clean_env=True,
        env={"HOME": "/"},
    )

    await wait_node_ready(admin, node_name, vk, timeout=60)
    # Past the point where kopf starts its watches (where it used to die): a pod runs on the node.
    await create_pod(admin, namespace, pod_manifest("web", node_name))
    await wait_phase(admin, namespace, "web", "Running", timeout=60)
    assert vk.proc.poll() is None, vk.log()
    assert "getpwuid" not in vk.log()
