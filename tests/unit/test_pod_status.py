from __future__ import annotations

import datetime
from typing import Any

import pytest

from vk_operator.domain import pod_status
from vk_operator.domain.model import ContainerPhase, ContainerStatus, PodPhase, ProviderPodStatus

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=30)


def _pod(*names: str, status: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
        "spec": {"containers": [{"name": n, "image": f"img-{n}"} for n in names]},
        "status": status or {},
    }


def _running(name: str) -> ContainerStatus:
    return ContainerStatus(name, f"img-{name}", ContainerPhase.RUNNING, started_at=T0)


def _conditions(status: dict[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


@pytest.mark.parametrize(
    ("reported", "phase", "ready"),
    [
        (
            ProviderPodStatus(PodPhase.RUNNING, (_running("a"), _running("b")), pod_ip="10.0.0.5"),
            "Running",
            "True",
        ),
        (ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), pod_ip="10.0.0.5"), "Running", "False"),
        (ProviderPodStatus(PodPhase.PENDING), "Pending", "False"),
        (
            ProviderPodStatus(
                PodPhase.SUCCEEDED,
                tuple(
                    ContainerStatus(n, "", ContainerPhase.TERMINATED, exit_code=0, reason="Completed")
                    for n in "ab"
                ),
            ),
            "Succeeded",
            "False",
        ),
    ],
)
def test_phase_and_ready_condition(reported: ProviderPodStatus, phase: str, ready: str) -> None:
    status = pod_status.pod_status(_pod("a", "b"), reported, "192.0.2.1", T1)
    assert status["phase"] == phase
    conditions = _conditions(status)
    assert conditions["Ready"] == ready == conditions["ContainersReady"]
    assert conditions["PodScheduled"] == "True"
    assert status["hostIP"] == "192.0.2.1"
    assert [c["name"] for c in status["containerStatuses"]] == ["a", "b"]


def test_container_missing_from_the_provider_is_waiting() -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),))
    b = pod_status.pod_status(_pod("a", "b"), reported, "h", T1)["containerStatuses"][1]
    assert b["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert b["ready"] is False


def test_terminated_container_reports_exit_code_and_times() -> None:
    done = ContainerStatus(
        "a", "img-a", ContainerPhase.TERMINATED, reason="Error", exit_code=3, started_at=T0, finished_at=T1
    )
    status = pod_status.pod_status(_pod("a"), ProviderPodStatus(PodPhase.FAILED, (done,)), "h", T1)
    assert status["containerStatuses"][0]["state"] == {
        "terminated": {
            "exitCode": 3,
            "reason": "Error",
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": "2026-01-01T00:00:30Z",
        }
    }


def test_pod_ip_and_start_time() -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), pod_ip="10.0.0.9", start_time=T0)
    status = pod_status.pod_status(_pod("a"), reported, "h", T1)
    assert status["podIP"] == "10.0.0.9"
    assert status["podIPs"] == [{"ip": "10.0.0.9"}]
    assert status["startTime"] == "2026-01-01T00:00:00Z"


def test_start_time_never_moves_once_written() -> None:
    pod = _pod("a", status={"startTime": "2025-12-31T00:00:00Z"})
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), start_time=T0)
    assert pod_status.pod_status(pod, reported, "h", T1)["startTime"] == "2025-12-31T00:00:00Z"


def test_condition_transition_time_is_kept_when_unchanged() -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),))
    first = pod_status.pod_status(_pod("a"), reported, "h", T0)
    second = pod_status.pod_status(_pod("a", status=first), reported, "h", T1)
    assert first["conditions"] == second["conditions"]
    assert not pod_status.status_changed(first, second)


def test_status_changed_sees_real_changes() -> None:
    pending = pod_status.pod_status(_pod("a"), ProviderPodStatus(PodPhase.PENDING), "h", T0)
    running = pod_status.pod_status(_pod("a"), ProviderPodStatus(PodPhase.RUNNING, (_running("a"),)), "h", T0)
    assert pod_status.status_changed(pending, running)
    assert pod_status.status_changed(None, pending)


def test_pending_status_names_the_reason() -> None:
    status = pod_status.pending_status(_pod("a"), "ProviderFailed", "quota exceeded", T0)
    assert (status["phase"], status["reason"], status["message"]) == (
        "Pending",
        "ProviderFailed",
        "quota exceeded",
    )
    failed = pod_status.pending_status(_pod("a"), "ProviderFailed", "no", T0, phase=PodPhase.FAILED)
    assert failed["phase"] == "Failed"


@pytest.mark.parametrize(
    ("current", "wanted", "patch"),
    [
        (
            {"phase": "Pending", "reason": "FailedMount", "message": "m"},
            {"phase": "Running"},
            {"phase": "Running", "reason": None, "message": None},
        ),
        ({"phase": "Pending"}, {"phase": "Running"}, {"phase": "Running"}),
        (
            None,
            {"phase": "Failed", "reason": "ProviderFailed"},
            {"phase": "Failed", "reason": "ProviderFailed"},
        ),
        ({"reason": "A"}, {"reason": "B"}, {"reason": "B"}),
    ],
)
def test_status_patch_clears_reasons_we_no_longer_set(
    current: dict[str, Any] | None, wanted: dict[str, Any], patch: dict[str, Any]
) -> None:
    assert pod_status.status_patch(current, wanted) == patch
