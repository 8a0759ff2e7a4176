"""An apiserver restart: pods force-deleted while the VK's watch was down must not keep running in
the provider (no DELETED event ever comes for them; kopf relists after 410 Gone)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import pathlib
import time
import urllib.parse
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
    # Right after the restart. The VK's watch is usually back first and sees the DELETED events; the
    # cut-off test below is the one where the VK cannot see them and only a relist finds the deletions.
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


class CuttableLink:
    """A TCP relay between the VK and the apiserver (TLS passes through untouched). ``cut`` drops
    every connection and refuses new ones, an outage as the VK alone sees it; ``restore`` relays
    again. Other clients (the test's) keep reaching the apiserver directly meanwhile."""

    def __init__(self, server: str) -> None:
        parts = urllib.parse.urlsplit(server)
        assert parts.hostname and parts.port, server
        self._target = (parts.hostname, parts.port)
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self.cut_off = False

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"https://127.0.0.1:{port}"  # the apiserver's certificate is for this IP

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._links -= {writer, up_writer}

    def cut(self) -> None:
        self.cut_off = True
        for writer in list(self._links):
            writer.transport.abort()

    def restore(self) -> None:
        self.cut_off = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _kubeconfig_via(path: pathlib.Path, server: str, out: pathlib.Path) -> pathlib.Path:
    config = json.loads(path.read_text())
    config["clusters"][0]["cluster"]["server"] = server
    out.write_text(json.dumps(config))
    return out


async def test_pods_force_deleted_while_the_vk_is_cut_off_across_an_apiserver_restart_leave_the_provider(
    admin: Kube,
    namespace: str,
    node_name: str,
    virtual_node: StartNode,
    cluster: Cluster,
    tmp_path: pathlib.Path,
) -> None:
    """The outage as the defect had it: the VK cannot reach the API while pods are force-deleted,
    and its watch cannot resume where it was (the restarted apiserver's watch cache starts after
    the VK's resourceVersion: 410 Gone), so kopf lists again and the deleted pods are simply not
    in the listing. No DELETED event ever comes; only a relist of our own finds them."""
    link = CuttableLink(cluster.server)
    kubeconfig = _kubeconfig_via(
        cluster.node_kubeconfig(node_name), await link.start(), tmp_path / "via-link.kubeconfig"
    )
    try:
        vn = await virtual_node(kubeconfig=kubeconfig)
        pods = {}
        for name in ("survivor", "doomed-1", "doomed-2"):
            created = await create_pod(admin, namespace, pod_manifest(name, vn.name))
            pods[name] = created["metadata"]["uid"]
        for name in pods:
            await wait_phase(admin, namespace, name, "Running")
        link.cut()
        # A write the VK cannot see: etcd's revision is now past the VK's, whatever its watch saw.
        await admin.create(
            f"/api/v1/namespaces/{namespace}/configmaps", {"metadata": {"name": "while-cut-off"}}
        )
        await asyncio.to_thread(cluster.restart_apiserver, 1.0)
        for name in ("doomed-1", "doomed-2"):
            await admin.delete(pod_path(namespace, name), {"gracePeriodSeconds": 0})
        link.restore()
        restored = time.monotonic()
        doomed = {pods["doomed-1"], pods["doomed-2"]}
        await eventually(
            lambda: _async(not doomed & vn.provider_uids()),
            what="pods force-deleted while the VK was cut off removed from the provider",
            timeout=45,
        )
        print(
            "pods force-deleted while the VK was cut off left the provider "
            f"{time.monotonic() - restored:.1f} s after the link was restored"
        )
        assert pods["survivor"] in vn.provider_uids()
        await wait_phase(admin, namespace, "survivor", "Running")
        created_calls = vn.provider_state()["calls"]["created"]
        assert all(count == 1 for count in created_calls.values()), created_calls
    finally:
        await link.close()


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
