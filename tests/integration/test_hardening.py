"""Defects found by outside testing (issue 11) that need no fault injection beyond the mock's:
retry chains, container states of pods that cannot run, capacity validation, the UID precondition."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.conftest import VirtualNode, eventually, mock_vk_args, pod_manifest, wait_event, wait_phase
from tests.integration.test_pods import create_pod, pod_path
from tests.integration.test_provider_config import _configmap
from vk_operator.devcluster.cluster import Cluster
from vk_operator.domain.node import NodeIdentity
from vk_operator.kube import ApiError, Kube
from vk_operator.kube.client import MERGE_PATCH
from vk_operator.node.agent import NodeAgent
from vk_operator.provider import Capacity, NodeCondition, PermanentError

StartNode = Callable[..., Awaitable[VirtualNode]]
MOCK = "mock.vk-operator.io/"


async def _async(value: Any) -> Any:
    return value


async def _after(seconds: float) -> None:
    """Until ``seconds`` have passed (the test observes a rate over a window, not a condition)."""
    start = time.monotonic()
    await eventually(lambda: _async(time.monotonic() - start >= seconds), interval=0.5, timeout=seconds + 30)


async def test_a_pod_that_keeps_failing_has_one_retry_schedule_whatever_the_resyncs(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    """Defect 1: every resync started one more retry chain (attempts grew with each resync)."""
    vn = await virtual_node(
        "--retry-initial", "0.2", "--retry-cap", "1", "--resync-interval", "0.5", "--relist-interval", "0.5"
    )
    created = await create_pod(
        admin, namespace, pod_manifest("stuck", vn.name, annotations={MOCK + "fail-creates": "100000"})
    )
    uid = created["metadata"]["uid"]
    await wait_event(admin, namespace, "stuck", "ProviderCreateFailed")
    window = 15.0
    await _after(window)
    attempts = vn.provider_state()["calls"]["create"][uid]
    print(f"create attempts in ~{window:.0f} s with --retry-cap 1 and a resync every 0.5 s: {attempts}")
    # One chain: ~1 attempt a second once the backoff is capped (plus the first few faster ones).
    assert attempts <= window + 8, f"{attempts} create attempts in {window} s: retries multiplied"
    pod = await admin.get(pod_path(namespace, "stuck"))
    assert pod["status"]["phase"] == "Pending" and pod["status"]["reason"] == "ProviderFailed"


@pytest.mark.parametrize(
    ("spec", "phase", "reason", "state"),
    [
        # A volume no provider mounts: Failed, and the container shows it ended (not ContainerCreating).
        (
            {"volumes": [{"name": "disk", "hostPath": {"path": "/var/data"}}]},
            "Failed",
            "UnsupportedVolume",
            "terminated",
        ),
        # A missing Secret: Pending, and the container waits with the kubelet's reason.
        (
            {
                "containers": [
                    {
                        "name": "app",
                        "image": "nginx:1.27",
                        "env": [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}],
                    }
                ]
            },
            "Pending",
            "MandatorySecretNotFound",
            "waiting",
        ),
    ],
)
async def test_pods_that_cannot_run_show_what_a_kubelet_would(
    admin: Kube,
    namespace: str,
    virtual_node: StartNode,
    spec: dict[str, Any],
    phase: str,
    reason: str,
    state: str,
) -> None:
    """Defect 7: `kubectl get pods` said ContainerCreating for Failed pods and missing Secrets."""
    vn = await virtual_node("--retry-initial", "0.2", "--retry-cap", "0.5")
    await create_pod(admin, namespace, pod_manifest("cannot", vn.name, **spec))

    async def settled() -> dict[str, Any] | None:
        status = (await admin.get(pod_path(namespace, "cannot"))).get("status") or {}
        ok = (
            status.get("phase") == phase
            and status.get("reason") == reason
            and status.get("containerStatuses")
        )
        return status if ok else None

    status = await eventually(settled, what=f"{phase} with {reason}")
    [container] = status["containerStatuses"]
    assert list(container["state"]) == [state], container
    details = container["state"][state]
    assert details.get("reason") != "ContainerCreating", container
    if state == "waiting":
        assert details["reason"] == "CreateContainerConfigError" and "nope" in details["message"]
    else:
        assert details["reason"] == reason and details["exitCode"] != 0


@pytest.mark.parametrize("value", ["0", "nan", "inf", "1e300", "-3"])
async def test_a_malformed_mock_annotation_fails_the_pod_naming_it(
    admin: Kube, namespace: str, virtual_node: StartNode, value: str
) -> None:
    """Defect 8: such values raised non-ProviderError exceptions in a silent loop."""
    vn = await virtual_node()
    await create_pod(
        admin, namespace, pod_manifest("odd", vn.name, annotations={MOCK + "run-seconds": value})
    )
    failed = await wait_phase(admin, namespace, "odd", "Failed")
    assert failed["status"]["reason"] == "InvalidPod"
    assert "mock.vk-operator.io/run-seconds" in failed["status"]["message"]
    event = await wait_event(admin, namespace, "odd", "ProviderCreateFailed")
    assert event["type"] == "Warning" and "run-seconds" in event["message"]
    assert "Traceback" not in vn.process.log()


@pytest.mark.parametrize(("bad", "field"), [("cpu: lots\n", "cpu"), ("memory: -5Gi\n", "memory")])
async def test_a_bad_capacity_is_refused_on_reload_and_the_old_config_keeps_serving(
    admin: Kube, cluster: Cluster, namespace: str, virtual_node: StartNode, bad: str, field: str
) -> None:
    """Defect 9: it was accepted, and then every Node status PATCH failed with 422."""
    await _configmap(admin, namespace, "cpu: '4'\n")
    vn = await virtual_node(
        "--provider-config",
        f"configmap:{namespace}/vk-provider",
        "--node-status-interval",
        "1",
        kubeconfig=cluster.admin_kubeconfig,
    )
    node_path = f"/api/v1/nodes/{vn.name}"

    async def heartbeat() -> str:
        node = await admin.get(node_path)
        ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
        return str(ready["lastHeartbeatTime"])

    cm_path = f"/api/v1/namespaces/{namespace}/configmaps/vk-provider"
    await admin.patch(cm_path, {"data": {"config.yaml": bad}}, MERGE_PATCH)
    refused = await wait_event(admin, namespace, "vk-provider", "ProviderConfigInvalid")
    assert field in refused["message"], refused
    before = await heartbeat()

    async def status_still_written() -> bool:
        return await heartbeat() != before

    await eventually(status_still_written, what="node status written after the bad config", timeout=30)
    node = await admin.get(node_path)
    assert node["status"]["capacity"]["cpu"] == "4"


def test_a_bad_capacity_at_start_is_exit_2_naming_the_field(
    cluster: Cluster, node_name: str, tmp_path: Any, start_vk: Callable[..., Any]
) -> None:
    config = tmp_path / "mock.yaml"
    config.write_text("cpu: lots\nmemory: -5Gi\n")
    process = start_vk(*mock_vk_args(cluster, node_name, config))
    assert process.proc.wait(timeout=60) == 2, process.log()
    last = process.log().strip().splitlines()[-1]
    assert "cpu:" in last and "memory:" in last, last


class _UncheckedCapacity:
    """A provider whose capacity is whatever the test says: no config model of quantities stands
    in the way (a provider that does not use ``vk_operator.provider.Quantity``)."""

    name = "unchecked"

    def __init__(self, capacity: Capacity) -> None:
        self.reported = capacity

    async def capacity(self) -> Capacity:
        return self.reported

    async def node_conditions(self) -> list[NodeCondition]:
        return []


@pytest.mark.parametrize(
    ("bad", "field"),
    [(Capacity(cpu="lots"), "cpu"), (Capacity(memory="-5Gi"), "memory")],
    ids=["cpu-lots", "memory-negative"],
)
async def test_a_providers_invalid_capacity_never_reaches_the_node(
    admin: Kube, node_name: str, bad: Capacity, field: str
) -> None:
    """Defect 9, the core's half: the API server refuses a Node status with such a capacity, so
    the node keeps its last good one (its status writes go on succeeding), and a node that never
    had a good one is not registered, with an error naming the resource."""
    provider = _UncheckedCapacity(Capacity(cpu="4", memory="8Gi", pods="10"))
    fresh_name = f"{node_name}-fresh"
    agent = NodeAgent(admin, provider, NodeIdentity(node_name, provider.name))  # type: ignore[arg-type]
    try:
        await agent.register()
        provider.reported = bad
        node = await agent.update_status()  # refused (400/422) if the bad capacity were sent
        assert node["status"]["capacity"] == {"cpu": "4", "memory": "8Gi", "pods": "10"}

        fresh = NodeAgent(admin, provider, NodeIdentity(fresh_name, provider.name))  # type: ignore[arg-type]
        with pytest.raises(PermanentError) as refused:
            await fresh.register()
        assert f"{field}:" in refused.value.message, refused.value.message
        with pytest.raises(ApiError) as missing:
            await admin.get(f"/api/v1/nodes/{fresh_name}")
        assert missing.value.not_found
    finally:
        for name in (node_name, fresh_name):
            with contextlib.suppress(ApiError):
                await admin.delete(f"/api/v1/nodes/{name}")


async def test_a_pod_recreated_under_its_name_survives_its_predecessors_clean_up(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    """Defect 20: the final delete's UID precondition is what keeps a StatefulSet pod recreated under
    the same name from being deleted when its predecessor's stop in the provider completes."""
    vn = await virtual_node()
    old = await create_pod(
        admin, namespace, pod_manifest("web-0", vn.name, annotations={MOCK + "stop-seconds": "4"})
    )
    await wait_phase(admin, namespace, "web-0", "Running")
    others = await create_pod(admin, namespace, pod_manifest("bystander", vn.name))
    await wait_phase(admin, namespace, "bystander", "Running")
    await admin.delete(pod_path(namespace, "web-0"), {"gracePeriodSeconds": 30})

    async def stopping() -> bool:  # the VK has started the (4 s) stop in the provider
        return bool(vn.provider_state()["calls"]["delete"].get(old["metadata"]["uid"]))

    await eventually(stopping, what="the provider asked to stop the old web-0")
    # A controller force-removes it and recreates the name before the provider has stopped it.
    await admin.delete(pod_path(namespace, "web-0"), {"gracePeriodSeconds": 0})

    async def recreate() -> dict[str, Any] | None:
        try:
            return await create_pod(admin, namespace, pod_manifest("web-0", vn.name))  # type: ignore[no-any-return]
        except ApiError as exc:
            if exc.conflict:  # the old object is still being removed
                return None
            raise

    new = await eventually(recreate, what="web-0 recreated")
    old_uid, new_uid = old["metadata"]["uid"], new["metadata"]["uid"]
    await eventually(
        lambda: _async(old_uid not in vn.provider_uids()),
        what="the old web-0 gone from the provider",
        timeout=30,
    )
    # The old one's clean-up is over: the new one must still be there, running, created once.
    running = await wait_phase(admin, namespace, "web-0", "Running")
    assert running["metadata"]["uid"] == new_uid
    await _after(2)
    current = await admin.get(pod_path(namespace, "web-0"))
    assert current["metadata"]["uid"] == new_uid and not current["metadata"].get("deletionTimestamp")
    assert new_uid in vn.provider_uids() and others["metadata"]["uid"] in vn.provider_uids()
    assert vn.provider_state()["calls"]["created"][new_uid] == 1


async def test_a_running_pods_conditions_carry_no_stale_reason(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    """Defect 6: a strategic-merge patch keeps a condition's old reason, so every Running pod showed
    Initialized=True with reason ContainersNotInitialized and Ready=True with ContainersNotReady."""
    vn = await virtual_node()
    await create_pod(
        admin, namespace, pod_manifest("late", vn.name, annotations={MOCK + "start-seconds": "2"})
    )

    async def pending_with_reasons() -> bool:
        pod = await admin.get(pod_path(namespace, "late"))
        conditions = {c["type"]: c for c in pod.get("status", {}).get("conditions") or []}
        return conditions.get("Ready", {}).get("reason") == "ContainersNotReady"

    await eventually(pending_with_reasons, what="Ready=False with a reason while starting")
    running = await wait_phase(admin, namespace, "late", "Running")

    async def all_true() -> dict[str, Any] | None:
        pod = await admin.get(pod_path(namespace, "late"))
        conditions = {c["type"]: c for c in pod["status"]["conditions"]}
        return conditions if all(c["status"] == "True" for c in conditions.values()) else None

    conditions = await eventually(all_true, what="every condition True")
    for kind in ("Initialized", "ContainersReady", "Ready"):
        assert "reason" not in conditions[kind] and "message" not in conditions[kind], conditions[kind]
    assert running["status"]["phase"] == "Running"


async def test_a_node_never_removes_another_nodes_pods_from_a_shared_backend(
    admin: Kube, namespace: str, virtual_node: StartNode, tmp_path: Any
) -> None:
    """Orphan removal deletes only what the provider lists as this node's: two nodes on one
    "cloud account" (one mock state file) each keep their own pods through the other's start-up."""
    shared = tmp_path / "account.json"
    a = await virtual_node(name=f"{namespace}-a", config=f"state_file: {shared}\n")
    mine = await create_pod(admin, namespace, pod_manifest("on-a", a.name))
    await wait_phase(admin, namespace, "on-a", "Running")
    b = await virtual_node(name=f"{namespace}-b", config=f"state_file: {shared}\n")
    await create_pod(admin, namespace, pod_manifest("on-b", b.name))
    await wait_phase(admin, namespace, "on-b", "Running")
    # B started with A's pod in the account and no API pod of its own for it: it must leave it alone.
    await _after(3)
    import json

    pods = json.loads(shared.read_text())["pods"] if shared.exists() else {}
    assert mine["metadata"]["uid"] in pods, "node B removed node A's pod from the shared backend"
    assert (await admin.get(pod_path(namespace, "on-a")))["status"]["phase"] == "Running"
