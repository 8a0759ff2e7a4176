"""The real node: one kubelet on containerd beside the session's control plane, up once per session
(its host changes undone at the end, also after a failed start), and the project's image in it."""

from __future__ import annotations

import atexit
import os
import pathlib
import subprocess
from collections.abc import Callable, Iterator

import pytest

from vk_operator.devcluster import image
from vk_operator.devcluster import node as realnode
from vk_operator.devcluster.build import HELM
from vk_operator.devcluster.cluster import Cluster
from vk_operator.devcluster.node import RealNode

Helm = Callable[..., subprocess.CompletedProcess[str]]


def host_snapshot() -> dict[str, object]:
    """What a real node changes on the host, read independently of its journal."""
    tables = realnode.nft_tables()  # before iptables -S, which creates tables
    return {
        "nft tables": tables,
        "iptables": {family: realnode.iptables_rules(family) for family in realnode.IPTABLES},
        "sysctls": {key: realnode.sysctl_path(key).read_text().strip() for key in realnode.SYSCTLS},
        "links": sorted(p.name for p in pathlib.Path("/sys/class/net").iterdir()),
        "mounts": sorted(realnode.mountpoints()),
        "netns": realnode.netns_names(),
        "cgroups": realnode.kubepods_cgroups(),
        "paths": [p for p in realnode.DEFAULT_PATHS if os.path.lexists(p)],
    }


@pytest.fixture(scope="session")
def real_node(cluster: Cluster) -> Iterator[RealNode]:
    """The node, and at the end the host exactly as before it (checked, not just hoped for)."""
    node = RealNode(cluster.dir)
    node.down()  # a node a crashed session left (VK_TEST_CLUSTER_DIR): its changes are not "before"
    before = host_snapshot()
    node.up()
    atexit.register(node.down)  # also on Ctrl-C or a crash of the session
    try:
        yield node
    finally:
        node.down()
    assert host_snapshot() == before


@pytest.fixture(scope="session")
def vk_image(real_node: RealNode) -> str:
    """The image `make image` builds (cached), imported into the node's containerd."""
    real_node.import_image(image.ensure_image())
    return image.IMAGE


@pytest.fixture(scope="session")
def helm(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Helm:
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(cluster.admin_kubeconfig),
    }
    binary = HELM.directory() / "helm"
    if not binary.is_file():
        pytest.fail(f"helm is not built at {binary}: run `python -m vk_operator.devcluster build`")

    def run(*args: str | pathlib.Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(binary), *map(str, args)], capture_output=True, text=True, env=env, timeout=180
        )
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(map(str, args))} failed:\n{out.stderr}")
        return out

    return run
