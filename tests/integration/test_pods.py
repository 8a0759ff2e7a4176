"""The whole pod lifecycle on the real control plane, through `virtual-kubelet` on the mock provider."""

from __future__ import annotations

import asyncio
import datetime
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import (
    VirtualNode,
    events_for,
    eventually,
    pod_manifest,
    pod_phase,
    wait_event,
    wait_phase,
)
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube
from vk_operator.kube.client import MERGE_PATCH

StartNode = Callable[..., Awaitable[VirtualNode]]
MOCK = "mock.vk-operator.io/"


async def create_pod(admin: Kube, namespace: str, manifest: dict[str, Any]) -> dict[str, Any]:
    return await admin.create(f"/api/v1/namespaces/{namespace}/pods", manifest)  # type: ignore[no-any-return]


def pod_path(namespace: str, name: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods/{name}"


async def gone(admin: Kube, namespace: str, name: str) -> bool:
    return await pod_phase(admin, namespace, name) is None and not await _exists(admin, namespace, name)


async def _exists(admin: Kube, namespace: str, name: str) -> bool:
    try:
        await admin.get(pod_path(namespace, name))
    except ApiError as exc:
        if exc.not_found:
            return False
        raise
    return True


@pytest.fixture(params=["node-identity", "serviceaccount-rbac"])
async def identity_node(
    request: pytest.FixtureRequest,
    virtual_node: StartNode,
    rbac_kubeconfig: Callable[..., Awaitable[Any]],
    node_name: str,
) -> VirtualNode:
    """The same behaviour under the kubelet's identity (Node authorizer) and under the chart's RBAC."""
    if request.param == "node-identity":
        return await virtual_node()
    return await virtual_node(kubeconfig=await rbac_kubeconfig(f"vk-{node_name}"))


async def test_pod_runs_with_full_status_and_events(
    admin: Kube, namespace: str, identity_node: VirtualNode
) -> None:
    manifest = pod_manifest("web", identity_node.name)
    manifest["spec"]["containers"].append({"name": "sidecar", "image": "busybox:1.36"})
    created = await create_pod(admin, namespace, manifest)
    pod = await wait_phase(admin, namespace, "web", "Running")
    status = pod["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "PodScheduled": "True",
        "Initialized": "True",
        "ContainersReady": "True",
        "Ready": "True",
    }
    assert [c["name"] for c in status["containerStatuses"]] == ["app", "sidecar"]
    for container in status["containerStatuses"]:
        assert container["ready"] is True and container["started"] is True
        assert "running" in container["state"] and container["containerID"].startswith("mock://")
    assert status["podIP"].startswith("10.244.") and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["hostIP"] == "127.0.0.1"
    assert status["startTime"]
    await wait_event(admin, namespace, "web", "ProviderCreateSuccess")
    assert created["metadata"]["uid"] in identity_node.provider_uids()
    assert not pod["metadata"].get("finalizers")
    assert not [a for a in pod["metadata"].get("annotations") or {} if "kopf" in a]


async def test_status_is_written_only_on_change(admin: Kube, namespace: str, virtual_node: StartNode) -> None:
    vn = await virtual_node("--resync-interval", "1", "--relist-interval", "1")
    await create_pod(admin, namespace, pod_manifest("quiet", vn.name))
    pod = await wait_phase(admin, namespace, "quiet", "Running")
    # Several resyncs happen in 4 s; none may produce a write (each write would bump resourceVersion).
    events = []
    async for event in admin.watch(
        f"/api/v1/namespaces/{namespace}/pods",
        fieldSelector="metadata.name=quiet",
        resourceVersion=pod["metadata"]["resourceVersion"],
        timeoutSeconds=4,
    ):
        if event["type"] != "BOOKMARK":
            events.append(event["type"])
    assert events == []


async def test_spec_update_reaches_the_provider_or_says_why_not(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    created = await create_pod(admin, namespace, pod_manifest("upd", vn.name, activeDeadlineSeconds=600))
    await wait_phase(admin, namespace, "upd", "Running")
    uid = created["metadata"]["uid"]
    await admin.patch(
        pod_path(namespace, "upd"), {"spec": {"containers": [{"name": "app", "image": "nginx:1.28"}]}}
    )
    await wait_event(admin, namespace, "upd", "ProviderUpdateSuccess")

    async def provider_image() -> str | None:
        image = vn.provider_state()["pods"][uid]["pod"]["spec"]["containers"][0]["image"]
        return image if image == "nginx:1.28" else None

    await eventually(provider_image, what="new image in the provider")
    # The mock cannot change activeDeadlineSeconds after creation: a Warning event says so.
    await admin.patch(pod_path(namespace, "upd"), {"spec": {"activeDeadlineSeconds": 300}}, MERGE_PATCH)
    event = await wait_event(admin, namespace, "upd", "ProviderUpdateFailed")
    assert event["type"] == "Warning" and "activeDeadlineSeconds" in event["message"]
    assert await pod_phase(admin, namespace, "upd") == "Running"


async def test_a_pod_past_its_active_deadline_is_failed_and_stopped_in_the_provider(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    """activeDeadlineSeconds is the kubelet's to enforce, so ours, whatever the provider can do: the
    mock refuses to change it after creation, and a lowered deadline is enforced all the same."""
    vn = await virtual_node()
    short = await create_pod(admin, namespace, pod_manifest("short", vn.name, activeDeadlineSeconds=3))
    lowered = await create_pod(admin, namespace, pod_manifest("lowered", vn.name, activeDeadlineSeconds=600))
    await wait_phase(admin, namespace, "lowered", "Running")
    await admin.patch(pod_path(namespace, "lowered"), {"spec": {"activeDeadlineSeconds": 2}}, MERGE_PATCH)

    for pod in (short, lowered):
        name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
        failed = await wait_phase(admin, namespace, name, "Failed", timeout=60)
        status = failed["status"]
        assert (status["reason"], status["message"]) == (
            "DeadlineExceeded",
            "Pod was active on the node longer than the specified deadline",
        )
        [container] = status["containerStatuses"]
        assert container["state"]["terminated"]["reason"] == "DeadlineExceeded"
        assert container["state"]["terminated"]["exitCode"] == 137
        event = await wait_event(admin, namespace, name, "DeadlineExceeded")
        assert event["type"] == "Normal"
        await eventually(
            lambda uid=uid: _async(uid not in vn.provider_uids()),
            what=f"{name} gone from the provider",
        )
        # Ran at least its deadline: the deadline counts from startTime, as the kubelet's.
        started = datetime.datetime.fromisoformat(status["startTime"].replace("Z", "+00:00"))
        ended = datetime.datetime.fromisoformat(
            container["state"]["terminated"]["finishedAt"].replace("Z", "+00:00")
        )
        assert (ended - started).total_seconds() >= 2
    assert vn.provider_state()["calls"]["create"] == {
        short["metadata"]["uid"]: 1,
        lowered["metadata"]["uid"]: 1,
    }


async def test_graceful_delete_finishes_as_soon_as_the_provider_stops(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node(config="stop_latency_seconds: 0.3\n")
    created = await create_pod(admin, namespace, pod_manifest("quick", vn.name))
    running = await wait_phase(admin, namespace, "quick", "Running")
    seen: list[tuple[str, dict[str, Any]]] = []

    async def watch_until_deleted() -> None:
        async for event in admin.watch(
            f"/api/v1/namespaces/{namespace}/pods",
            fieldSelector="metadata.name=quick",
            resourceVersion=running["metadata"]["resourceVersion"],
            timeoutSeconds=10,
        ):
            seen.append((event["type"], event["object"]))
            if event["type"] == "DELETED":
                return

    watcher = asyncio.create_task(watch_until_deleted())
    started = time.monotonic()
    await admin.delete(pod_path(namespace, "quick"))  # default grace period: 30 s
    async with asyncio.timeout(2):
        await watcher
    elapsed = time.monotonic() - started
    assert elapsed < 2, elapsed
    # Before the object went away, the containers' terminal states were reported.
    terminal = [
        obj
        for kind, obj in seen
        if kind == "MODIFIED" and all("terminated" in c["state"] for c in obj["status"]["containerStatuses"])
    ]
    assert terminal, [kind for kind, _ in seen]
    assert created["metadata"]["uid"] not in vn.provider_uids()
    assert vn.provider_state()["calls"]["delete"][created["metadata"]["uid"]] >= 1


async def test_namespace_flag_limits_the_pods_served(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--namespace", namespace)
    other = f"{namespace}-other"
    await admin.create("/api/v1/namespaces", {"metadata": {"name": other}})
    try:
        await create_pod(admin, other, pod_manifest("ignored", vn.name))
        await create_pod(admin, namespace, pod_manifest("served", vn.name))
        await wait_phase(admin, namespace, "served", "Running")
        ignored = await admin.get(pod_path(other, "ignored"))
        assert ignored["status"].get("phase") == "Pending" and "containerStatuses" not in ignored["status"]
        assert [p["pod"]["metadata"]["name"] for p in vn.provider_state()["pods"].values()] == ["served"]
    finally:
        await admin.delete(f"/api/v1/namespaces/{other}")


async def test_graceful_delete_ends_at_the_grace_period_when_the_provider_is_slow(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    manifest = pod_manifest(
        "slow", vn.name, terminationGracePeriodSeconds=3, annotations={MOCK + "stop-seconds": "120"}
    )
    await create_pod(admin, namespace, manifest)
    await wait_phase(admin, namespace, "slow", "Running")
    started = time.monotonic()
    await admin.delete(pod_path(namespace, "slow"))
    await eventually(lambda: gone(admin, namespace, "slow"), what="pod gone", timeout=15, interval=0.1)
    elapsed = time.monotonic() - started
    assert 2 <= elapsed < 10, elapsed  # held for the grace period, then removed


async def test_force_delete_cleans_up_the_provider(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    created = await create_pod(admin, namespace, pod_manifest("forced", vn.name))
    await wait_phase(admin, namespace, "forced", "Running")
    await admin.delete(pod_path(namespace, "forced"), {"gracePeriodSeconds": 0})
    uid = created["metadata"]["uid"]
    await eventually(lambda: _async(uid not in vn.provider_uids()), what="provider pod removed", timeout=10)


async def _async(value: bool) -> bool:
    return value


async def test_transient_provider_errors_heal_with_backoff(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--retry-initial", "0.2")
    await create_pod(
        admin, namespace, pod_manifest("flaky", vn.name, annotations={MOCK + "fail-creates": "2"})
    )
    running = await wait_phase(admin, namespace, "flaky", "Running")
    # The Pending reason of the failed attempts does not linger once the pod runs.
    assert "reason" not in running["status"] and "message" not in running["status"], running["status"]

    async def failures() -> list[dict[str, Any]] | None:  # Events are posted after the status write
        found = [
            e for e in await events_for(admin, namespace, "flaky") if e["reason"] == "ProviderCreateFailed"
        ]
        return found if sum(e.get("count", 1) for e in found) >= 2 else None

    failed = await eventually(failures, what="2 ProviderCreateFailed", timeout=30)
    assert sum(e.get("count", 1) for e in failed) == 2
    assert all(e["type"] == "Warning" and "transient" in e["message"] for e in failed)


async def test_permanent_provider_error_fails_the_pod(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    await create_pod(
        admin, namespace, pod_manifest("doomed", vn.name, annotations={MOCK + "fail-permanent": "true"})
    )
    pod = await wait_phase(admin, namespace, "doomed", "Failed")
    assert pod["status"]["reason"] == "ProviderFailed"
    assert "can never be created" in pod["status"]["message"]


async def test_pod_pending_while_retrying_then_failed_at_the_deadline(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--retry-initial", "0.2", "--retry-cap", "0.5", "--pod-create-deadline", "4")
    await create_pod(
        admin, namespace, pod_manifest("stuck", vn.name, annotations={MOCK + "fail-creates": "1000"})
    )

    async def pending_with_reason() -> dict[str, Any] | None:
        pod = await admin.get(pod_path(namespace, "stuck"))
        status = pod.get("status", {})
        return pod if status.get("phase") == "Pending" and status.get("reason") == "ProviderFailed" else None

    pending = await eventually(pending_with_reason, what="Pending/ProviderFailed")
    assert "transient failure" in pending["status"]["message"]
    failed = await wait_phase(admin, namespace, "stuck", "Failed", timeout=20)
    assert failed["status"]["message"].startswith("gave up after")


@pytest.mark.parametrize(
    ("policy", "exit_code", "phase"),
    [("Never", 0, "Succeeded"), ("Never", 3, "Failed"), ("OnFailure", 0, "Succeeded")],
)
async def test_containers_complete_by_restart_policy(
    admin: Kube, namespace: str, virtual_node: StartNode, policy: str, exit_code: int, phase: str
) -> None:
    vn = await virtual_node()
    annotations = {MOCK + "run-seconds": "1", MOCK + "exit-code": str(exit_code)}
    await create_pod(
        admin, namespace, pod_manifest("job", vn.name, restartPolicy=policy, annotations=annotations)
    )
    pod = await wait_phase(admin, namespace, "job", phase)
    terminated = pod["status"]["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == exit_code
    assert terminated["reason"] == ("Completed" if exit_code == 0 else "Error")


async def test_deployment_is_scheduled_onto_the_virtual_node(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    labels = {"app": "burst"}
    await admin.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {
            "metadata": {"name": "burst"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": vn.name},
                        "tolerations": [
                            {
                                "key": "virtual-kubelet.io/provider",
                                "operator": "Exists",
                                "effect": "NoSchedule",
                            }
                        ],
                        "containers": [{"name": "app", "image": "nginx:1.27"}],
                    },
                },
            },
        },
    )

    async def all_running() -> list[dict[str, Any]] | None:
        pods = (await admin.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector="app=burst"))["items"]
        running = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return pods if len(running) == 4 else None

    pods = await eventually(all_running, what="4 replicas Running", timeout=60)
    assert {p["spec"]["nodeName"] for p in pods} == {vn.name}

    async def ready_replicas() -> bool:  # the Deployment controller catches up after the pods
        deployment = await admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/burst")
        return bool(deployment["status"].get("readyReplicas") == 4)

    await eventually(ready_replicas, what="the Deployment reports 4 ready replicas", timeout=60)


async def test_restart_after_kill_9_adopts_finishes_and_cleans_up(
    admin: Kube, namespace: str, virtual_node: StartNode, start_vk: Callable[..., Any], cluster: Cluster
) -> None:
    vn = await virtual_node("--retry-initial", "0.2", "--retry-cap", "1")
    running = await create_pod(admin, namespace, pod_manifest("running", vn.name))
    orphan = await create_pod(admin, namespace, pod_manifest("orphan", vn.name))
    doomed = await create_pod(admin, namespace, pod_manifest("terminating", vn.name))
    done = await create_pod(
        admin,
        namespace,
        pod_manifest("done", vn.name, restartPolicy="Never", annotations={MOCK + "run-seconds": "0.5"}),
    )
    await create_pod(
        admin, namespace, pod_manifest("retrying", vn.name, annotations={MOCK + "fail-creates": "3"})
    )
    for name in ("running", "orphan", "terminating"):
        await wait_phase(admin, namespace, name, "Running")
    await wait_phase(admin, namespace, "done", "Succeeded")
    before = (await admin.get(pod_path(namespace, "running")))["status"]

    vn.process.stop(signal.SIGKILL)
    # While the virtual kubelet is down: one pod is force-deleted (its provider pod is orphaned),
    # one is deleted gracefully (it stays Terminating: nobody confirms).
    await admin.delete(pod_path(namespace, "orphan"), {"gracePeriodSeconds": 0})
    await admin.delete(pod_path(namespace, "terminating"))
    assert (await admin.get(pod_path(namespace, "terminating")))["metadata"].get("deletionTimestamp")

    restarted = start_vk(*vn.args)
    await eventually(
        lambda: gone(admin, namespace, "terminating"), what="terminating pod finished", timeout=30
    )
    await eventually(
        lambda: _async(orphan["metadata"]["uid"] not in vn.provider_uids()),
        what="orphan removed from the provider",
        timeout=30,
    )
    await wait_phase(admin, namespace, "retrying", "Running", timeout=30)
    after = (await admin.get(pod_path(namespace, "running")))["status"]
    assert after["phase"] == "Running"
    assert after["containerStatuses"][0]["containerID"] == before["containerStatuses"][0]["containerID"]
    assert after["startTime"] == before["startTime"]
    assert (await admin.get(pod_path(namespace, "done")))["status"]["phase"] == "Succeeded"
    creates = vn.provider_state()["calls"]["create"]
    for pod in (running, done):
        assert creates[pod["metadata"]["uid"]] == 1  # adopted, never created twice
    assert doomed["metadata"]["uid"] not in vn.provider_uids()
    assert restarted.proc.poll() is None


async def test_pod_that_vanishes_from_the_provider_fails(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node()
    await create_pod(
        admin, namespace, pod_manifest("lost", vn.name, annotations={MOCK + "vanish-seconds": "1.5"})
    )
    await wait_phase(admin, namespace, "lost", "Running")
    pod = await wait_phase(admin, namespace, "lost", "Failed")
    assert pod["status"]["reason"] == "ProviderLost"
    assert pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 137


async def test_periodic_resync_heals_missed_watch_events(admin: Kube, namespace: str, node_name: str) -> None:
    """No watch at all: only the resync can see pods come and go (as after a 410 relist gap)."""
    from providers.mock import MockProvider
    from vk_operator.pods.controller import PodController

    provider = MockProvider(node_name=node_name)
    controller = PodController(
        admin, provider, node_name, "127.0.0.1", resync_interval=0.5, relist_interval=0.5, workers=2
    )
    tasks = controller.start()
    try:
        created = await create_pod(admin, namespace, pod_manifest("unwatched", node_name))
        await wait_phase(admin, namespace, "unwatched", "Running", timeout=15)
        uid = created["metadata"]["uid"]
        assert uid in provider.pods
        # Force-deleted while "the watch" missed it: the DELETED event never reaches the controller.
        await admin.delete(pod_path(namespace, "unwatched"), {"gracePeriodSeconds": 0})
        await eventually(
            lambda: _async(uid not in provider.pods), what="orphan removed by resync", timeout=15
        )
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
