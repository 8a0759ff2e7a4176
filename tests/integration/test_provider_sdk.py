"""What the provider SDK promises providers, on the real control plane: calls are bounded, any
exception is handled, throttling pauses every call, declared volumes pass, bulk status is cheap.

The VK runs as a process on the mock provider, whose state file records every call it received
(``call_log``: monotonic time, method, pod UID) so the tests can see what reached the "cloud".
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.conftest import (
    VirtualNode,
    events_for,
    eventually,
    mock_vk_args,
    pod_manifest,
    wait_event,
    wait_phase,
)
from tests.integration.test_pods import create_pod
from vk_operator.kube import Kube

StartNode = Callable[..., Awaitable[VirtualNode]]
MOCK = "mock.vk-operator.io/"
FAST_RETRIES = ("--retry-initial", "0.2", "--retry-cap", "0.5")


def calls(vn: VirtualNode, method: str | None = None, uid: str | None = None) -> list[tuple[float, str, str]]:
    log = [tuple(entry) for entry in vn.provider_state().get("call_log", [])]
    return [e for e in log if (method is None or e[1] == method) and (uid is None or e[2] == uid)]  # type: ignore[misc]


async def _status(admin: Kube, namespace: str, name: str) -> dict[str, Any]:
    pod = await admin.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    return pod.get("status") or {}  # type: ignore[no-any-return]


async def test_a_hanging_create_is_cut_by_its_timeout_and_the_pod_converges(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--provider-timeout-create", "1", *FAST_RETRIES)
    created = await create_pod(
        admin, namespace, pod_manifest("hangs", vn.name, annotations={MOCK + "hang-creates": "1"})
    )
    uid = created["metadata"]["uid"]
    await wait_phase(admin, namespace, "hangs", "Running", timeout=60)
    event = await wait_event(admin, namespace, "hangs", "ProviderCreateFailed")
    assert "timed out after 1s" in event["message"], event
    assert event["type"] == "Warning"
    # The hung call reached the "cloud" (the mock keeps the pod, as if the answer were lost): the
    # retry (or the resync) finds it there; never a second pod.
    assert vn.provider_state()["calls"]["created"][uid] == 1


async def test_an_unexpected_exception_is_reported_and_fails_the_pod_at_the_deadline(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node("--pod-create-deadline", "5", *FAST_RETRIES)
    await create_pod(
        admin, namespace, pod_manifest("buggy", vn.name, annotations={MOCK + "raise-creates": "100000"})
    )

    async def pending_with_reason() -> dict[str, Any] | None:
        status = await _status(admin, namespace, "buggy")
        return status if status.get("phase") == "Pending" and status.get("reason") else None

    pending = await eventually(pending_with_reason, what="Pending with a reason")
    assert pending["reason"] == "ProviderFailed"
    assert "RuntimeError" in pending["message"] and "injected unexpected error" in pending["message"]
    event = await wait_event(admin, namespace, "buggy", "ProviderCreateFailed")
    assert event["type"] == "Warning" and "RuntimeError" in event["message"]
    failed = await wait_phase(admin, namespace, "buggy", "Failed", timeout=60)
    assert failed["status"]["reason"] == "ProviderFailed"
    assert failed["status"]["message"].startswith("gave up after"), failed["status"]
    assert "RuntimeError" in failed["status"]["message"]


async def test_a_throttled_answer_with_retry_after_holds_back_every_call(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    # Polled status: a steady stream of get_pod_status calls that a throttle must pause as well.
    vn = await virtual_node(
        "--status-poll-interval", "0.3", *FAST_RETRIES, config="status_mode: poll\nrecord_calls: true\n"
    )
    await create_pod(admin, namespace, pod_manifest("steady", vn.name))
    await wait_phase(admin, namespace, "steady", "Running")
    await eventually(lambda: _async(len(calls(vn, "get_pod_status")) >= 5), what="status polling")
    throttled = await create_pod(
        admin,
        namespace,
        pod_manifest(
            "throttled",
            vn.name,
            annotations={MOCK + "throttle-creates": "1", MOCK + "retry-after-seconds": "3"},
        ),
    )
    await wait_phase(admin, namespace, "throttled", "Running", timeout=60)
    uid = throttled["metadata"]["uid"]
    first_create = calls(vn, "create_pod", uid)[0][0]
    after = [t for t, _, _ in calls(vn) if t > first_create + 0.1]  # calls already on their way aside
    assert after, "no provider call after the throttled one"
    gap = after[0] - first_create
    assert gap >= 2.9, f"a provider call {gap:.2f}s after a throttled answer with Retry-After 3 s"
    event = await wait_event(admin, namespace, "throttled", "ProviderCreateFailed")
    assert "throttl" in event["message"].lower()


async def test_a_provider_declared_volume_type_reaches_the_provider(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node(config="volume_types: [nfs]\n")
    nfs = {"server": "10.0.0.5", "path": "/exports/data"}
    created = await create_pod(
        admin,
        namespace,
        pod_manifest(
            "nfs",
            vn.name,
            volumes=[{"name": "data", "nfs": nfs}, {"name": "scratch", "emptyDir": {}}],
        ),
    )
    await wait_phase(admin, namespace, "nfs", "Running")
    mock_pod = vn.provider_state()["pods"][created["metadata"]["uid"]]
    assert mock_pod["passthrough"] == {"data": {"kind": "nfs", "source": nfs}}
    # A type the provider did not declare still fails the pod, naming the volume.
    await create_pod(
        admin,
        namespace,
        pod_manifest("host", vn.name, volumes=[{"name": "disk", "hostPath": {"path": "/var/data"}}]),
    )
    failed = await wait_phase(admin, namespace, "host", "Failed")
    assert failed["status"]["reason"] == "UnsupportedVolume"
    assert 'volume "disk" has type hostPath' in failed["status"]["message"]


async def test_bulk_status_makes_one_call_per_interval_whatever_the_pod_count(
    admin: Kube, namespace: str, virtual_node: StartNode
) -> None:
    vn = await virtual_node(
        "--status-poll-fast",
        "0.5",
        "--status-poll-slow",
        "1",
        config="status_mode: bulk\nrecord_calls: true\n",
    )
    for i in range(20):
        await create_pod(admin, namespace, pod_manifest(f"p{i}", vn.name))
    # A pod whose containers finish: the change is seen through the bulk poll alone.
    await create_pod(
        admin,
        namespace,
        pod_manifest("done", vn.name, restartPolicy="Never", annotations={MOCK + "run-seconds": "2"}),
    )
    for i in range(20):
        await wait_phase(admin, namespace, f"p{i}", "Running", timeout=60)
    await wait_phase(admin, namespace, "done", "Succeeded", timeout=60)
    assert not calls(vn, "get_pod_status"), "a bulk provider was asked for one pod's status"

    async def window(seconds: float) -> int:
        start = time.monotonic()
        await eventually(
            lambda: _async(time.monotonic() - start >= seconds), interval=0.5, timeout=seconds + 5
        )
        return len([t for t, _, _ in calls(vn, "get_pod_statuses") if t >= start])

    polls = await window(6)
    # Steady: every `--status-poll-slow` second, one call for all 21 pods (not 21 calls).
    assert 3 <= polls <= 8, f"{polls} bulk polls in 6 s with a 1 s steady interval"
    assert not calls(vn, "get_pod_status")
    events = await events_for(admin, namespace, "done")
    assert any(e["reason"] == "ProviderCreateSuccess" for e in events)


async def test_a_provider_that_cannot_start_fails_start_up_with_one_line(
    start_vk: Callable[..., Any], cluster: Any, node_name: str, tmp_path: Any
) -> None:
    config = tmp_path / "mock.yaml"
    config.write_text(f"state_file: {tmp_path}/no/such/dir/state.json\n")
    process = start_vk(*mock_vk_args(cluster, node_name, config, "--kubelet-port", "0"))
    code = process.proc.wait(timeout=60)
    lines = [line for line in process.log().splitlines() if line.strip()]
    assert code == 1, process.log()
    assert lines[-1].startswith("virtual-kubelet: provider mock cannot start:"), process.log()
    assert "Traceback" not in process.log()


async def _async(value: bool) -> bool:
    return value
