"""An apiserver restart: pods force-deleted while the VK's watch was down must not keep running in
the provider (no DELETED event ever comes for them; kopf relists after 410 Gone)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from tests.conftest import VirtualNode, eventually, pod_manifest, wait_phase
from tests.integration.test_pods import create_pod, pod_path
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]


async def _async(value: bool) -> bool:
    return value


async def test_pods_force_deleted_across_an_apiserver_restart_leave_the_provider(
    admin: Kube, namespace: str, virtual_node: StartNode, cluster: Cluster
) -> None:
    vn = await virtual_node()
    pods = {}
    for name in ("survivor", "doomed-1", "doomed-2"):
        pods[name] = (await create_pod(admin, namespace, pod_manifest(name, vn.name)))["metadata"]["uid"]
    for name in pods:
        await wait_phase(admin, namespace, name, "Running")
    await asyncio.to_thread(cluster.restart_apiserver, 1.0)
    # Right after the restart, before the VK's watch is back: deleted now, it sees no DELETED event.
    for name in ("doomed-1", "doomed-2"):
        await admin.delete(pod_path(namespace, name), {"gracePeriodSeconds": 0})
    started = time.monotonic()
    doomed = {pods["doomed-1"], pods["doomed-2"]}
    await eventually(
        lambda: _async(not doomed & vn.provider_uids()),
        what="force-deleted pods removed from the provider",
        timeout=45,
    )
    print(f"force-deleted pods left the provider {time.monotonic() - started:.1f} s after the restart")
    assert pods["survivor"] in vn.provider_uids()
    await wait_phase(admin, namespace, "survivor", "Running")
    # And the node still serves new pods.
    await create_pod(admin, namespace, pod_manifest("after", vn.name))
    await wait_phase(admin, namespace, "after", "Running", timeout=60)
    created = vn.provider_state()["calls"]["created"]
    assert all(count == 1 for count in created.values()), created  # nothing created twice


async def test_a_relisting_watch_is_followed_by_a_relist_that_finds_deletions(
    admin: Kube, namespace: str, node_name: str
) -> None:
    """What kopf does after 410 Gone: it lists again and reports what it finds (events of type
    None), never what it does not find. The controller runs in-process here, fed by hand like
    kopf's watch, with the periodic relist 10 minutes away: only the relist that follows a
    listing can see the pod force-deleted meanwhile."""
    from providers.mock import MockProvider
    from vk_operator.pods.controller import PodController

    provider = MockProvider(node_name=node_name)
    controller = PodController(
        admin, provider, node_name, "127.0.0.1", resync_interval=600, relist_interval=600, workers=2
    )
    tasks = controller.start()
    try:
        kept = await create_pod(admin, namespace, pod_manifest("kept", node_name))
        gone = await create_pod(admin, namespace, pod_manifest("gone", node_name))
        for pod in (kept, gone):
            controller.observe("ADDED", pod)
        await wait_phase(admin, namespace, "kept", "Running")
        await wait_phase(admin, namespace, "gone", "Running")
        await admin.delete(pod_path(namespace, "gone"), {"gracePeriodSeconds": 0})  # the watch is "down"
        # The watch comes back with a fresh listing: only what still exists is reported.
        current = await admin.get(pod_path(namespace, "kept"))
        controller.observe(None, current)
        await eventually(
            lambda: _async(gone["metadata"]["uid"] not in provider.pods),
            what="the force-deleted pod removed from the provider",
            timeout=30,
        )
        assert kept["metadata"]["uid"] in provider.pods
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
