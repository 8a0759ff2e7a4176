from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from vk_operator.domain import pod_status
from vk_operator.domain.model import (
    ContainerPhase,
    ContainerStatus,
    PodCondition,
    PodPhase,
    ProviderPodStatus,
    TerminatedState,
)
from vk_operator.domain.pod_meta import active_deadline_left

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=30)
T0_TEXT = "2026-01-01T00:00:00Z"
T1_TEXT = "2026-01-01T00:00:30Z"
CONDITION_KEYS = {"type", "status", "lastProbeTime", "lastTransitionTime", "reason", "message"}


def _pod(
    *names: str,
    init: Sequence[str] = (),
    sidecars: Sequence[str] = (),
    gates: Sequence[str] = (),
    status: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": n, "image": f"img-{n}"} for n in names]}
    if init or sidecars:
        spec["initContainers"] = [{"name": n, "image": f"img-{n}"} for n in init] + [
            {"name": n, "image": f"img-{n}", "restartPolicy": "Always"} for n in sidecars
        ]
    if gates:
        spec["readinessGates"] = [{"conditionType": g} for g in gates]
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": spec, "status": status or {}}


def _running(name: str, **fields: Any) -> ContainerStatus:
    return ContainerStatus(name, f"img-{name}", ContainerPhase.RUNNING, started_at=T0, **fields)


def _done(name: str, exit_code: int = 0, **fields: Any) -> ContainerStatus:
    reason = "Completed" if exit_code == 0 else "Error"
    return ContainerStatus(
        name, f"img-{name}", ContainerPhase.TERMINATED, reason=reason, exit_code=exit_code, **fields
    )


def _waiting(name: str, reason: str = "ContainerCreating") -> ContainerStatus:
    return ContainerStatus(name, f"img-{name}", ContainerPhase.WAITING, reason=reason)


def _conditions(status: Mapping[str, Any]) -> dict[str, str]:
    return {c["type"]: c["status"] for c in status["conditions"]}


def _condition(status: Mapping[str, Any], kind: str) -> tuple[str, str | None, str | None]:
    (condition,) = (c for c in status["conditions"] if c["type"] == kind)
    return condition["status"], condition["reason"], condition["message"]


def _merge(current: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """What the apiserver makes of a strategic-merge patch of a pod's status: None deletes a field,
    conditions merge by type (None deleting their fields too), other lists are replaced whole."""
    merged = dict(current)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif key == "conditions":
            by_type = {c["type"]: dict(c) for c in current.get("conditions") or []}
            for condition in value:
                target = by_type.setdefault(condition["type"], {})
                for field, field_value in condition.items():
                    if field_value is None:
                        target.pop(field, None)
                    else:
                        target[field] = field_value
            merged["conditions"] = list(by_type.values())
        else:
            merged[key] = value
    return merged


def _as_served(status: Mapping[str, Any]) -> dict[str, Any]:
    """``status`` as the apiserver returns it: an empty ``lastState`` on every container status."""
    served = dict(status)
    for field in ("initContainerStatuses", "containerStatuses"):
        if field in served:
            served[field] = [{"lastState": {}, **s} for s in served[field]]
    return served


# --- phase, containers --------------------------------------------------------------------------


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
    assert status["hostIPs"] == [{"ip": "192.0.2.1"}]
    assert [c["name"] for c in status["containerStatuses"]] == ["a", "b"]
    assert "initContainerStatuses" not in status


def test_container_missing_from_the_provider_is_waiting() -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),))
    b = pod_status.pod_status(_pod("a", "b"), reported, "h", T1)["containerStatuses"][1]
    assert b["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert (b["ready"], b["started"], b["image"], b["imageID"], b["restartCount"]) == (
        False,
        False,
        "img-b",
        "",
        0,
    )


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        pytest.param(
            _running("a"),
            {"ready": True, "started": True, "state": {"running": {"startedAt": T0_TEXT}}},
            id="running-is-ready-and-started-by-default",
        ),
        pytest.param(_running("a", ready=False), {"ready": False, "started": True}, id="running-unready"),
        pytest.param(_running("a", ready=True), {"ready": True, "started": True}, id="running-ready"),
        pytest.param(
            _running("a", started=False, ready=True), {"ready": False, "started": False}, id="not-started-yet"
        ),
        pytest.param(
            ContainerStatus("a", "img-a", ContainerPhase.RUNNING),
            {"state": {"running": {}}},
            id="running-without-start-time",
        ),
        pytest.param(
            ContainerStatus("a", "img-a", ContainerPhase.WAITING, ready=True, started=True),
            {"ready": False, "started": False, "state": {"waiting": {}}},
            id="waiting-is-never-ready",
        ),
        pytest.param(
            _done("a", ready=True, started=True),
            {"ready": False, "started": False},
            id="terminated-not-ready",
        ),
        pytest.param(
            ContainerStatus(
                "a", "img-a", ContainerPhase.WAITING, reason="ErrImagePull", message="no such image"
            ),
            {"state": {"waiting": {"reason": "ErrImagePull", "message": "no such image"}}},
            id="waiting-reason-and-message",
        ),
        pytest.param(
            _done("a", 3, message="boom", started_at=T0, finished_at=T1, container_id="mock://1"),
            {
                "state": {
                    "terminated": {
                        "exitCode": 3,
                        "reason": "Error",
                        "message": "boom",
                        "startedAt": T0_TEXT,
                        "finishedAt": T1_TEXT,
                        "containerID": "mock://1",
                    }
                },
                "containerID": "mock://1",
            },
            id="terminated-with-everything",
        ),
        pytest.param(
            ContainerStatus("a", "img-a", ContainerPhase.TERMINATED),
            {"state": {"terminated": {"exitCode": 0}}},
            id="terminated-without-exit-code",
        ),
        pytest.param(_running("a", restart_count=4), {"restartCount": 4}, id="restart-count"),
        pytest.param(_running("a", image_id="sha256:abc"), {"imageID": "sha256:abc"}, id="image-id"),
        pytest.param(
            ContainerStatus("a", "", ContainerPhase.RUNNING), {"image": "img-a"}, id="image-from-the-spec"
        ),
        pytest.param(
            ContainerStatus("a", "docker.io/library/img-a:1", ContainerPhase.RUNNING),
            {"image": "docker.io/library/img-a:1"},
            id="image-from-the-provider",
        ),
        pytest.param(
            _running(
                "a",
                restart_count=1,
                last_state=TerminatedState(
                    137, "OOMKilled", "out of memory", started_at=T0, finished_at=T1, container_id="mock://0"
                ),
            ),
            {
                "restartCount": 1,
                "lastState": {
                    "terminated": {
                        "exitCode": 137,
                        "reason": "OOMKilled",
                        "message": "out of memory",
                        "startedAt": T0_TEXT,
                        "finishedAt": T1_TEXT,
                        "containerID": "mock://0",
                    }
                },
            },
            id="last-state",
        ),
        pytest.param(
            _running("a", last_state=TerminatedState(0)),
            {"lastState": {"terminated": {"exitCode": 0}}},
            id="last-state-minimal",
        ),
    ],
)
def test_container_status_fields(container: ContainerStatus, expected: dict[str, Any]) -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (container,))
    (status,) = pod_status.pod_status(_pod("a"), reported, "h", T1)["containerStatuses"]
    assert {k: status[k] for k in expected} == expected
    assert ("lastState" in status) == (container.last_state is not None)
    assert ("containerID" in status) == (container.container_id is not None)


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


def test_a_container_the_provider_forgets_keeps_what_the_kubelet_keeps() -> None:
    """Ended: how it ended. Otherwise: its restart count and last state, now waiting."""
    ended = {"name": "a", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}, "lastState": {}}
    restarted = {
        "name": "b",
        "state": {"running": {"startedAt": T0_TEXT}},
        "restartCount": 2,
        "lastState": {"terminated": {"exitCode": 1}},
    }
    pod = _pod("a", "b", status={"containerStatuses": [ended, restarted]})
    a, b = pod_status.pod_status(pod, ProviderPodStatus(PodPhase.RUNNING), "h", T1)["containerStatuses"]
    assert a == {"name": "a", "state": {"terminated": {"exitCode": 2, "reason": "Error"}}}
    assert b["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert (b["restartCount"], b["lastState"]) == (2, {"terminated": {"exitCode": 1}})


# --- init containers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("init", "reported_init", "reported_app", "phase", "init_states", "app_state", "initialized"),
    [
        pytest.param(
            (),
            (),
            (_running("app"),),
            PodPhase.RUNNING,
            None,
            "running",
            ("True", None, None),
            id="no-init-containers-running",
        ),
        pytest.param(
            (),
            (),
            (),
            PodPhase.PENDING,
            None,
            "waiting:ContainerCreating",
            ("False", "ContainersNotInitialized", None),
            id="no-init-containers-pending",
        ),
        pytest.param(
            ("i1",),
            (_running("i1"),),
            (),
            PodPhase.PENDING,
            ["running"],
            "waiting:PodInitializing",
            ("False", "ContainersNotInitialized", "containers with incomplete status: [i1]"),
            id="one-running",
        ),
        pytest.param(
            ("i1", "i2"),
            (_done("i1"), _running("i2")),
            (),
            PodPhase.PENDING,
            ["terminated:0", "running"],
            "waiting:PodInitializing",
            ("False", "ContainersNotInitialized", "containers with incomplete status: [i2]"),
            id="one-done-one-running",
        ),
        pytest.param(
            ("i1", "i2"),
            (_done("i1"),),
            (),
            PodPhase.PENDING,
            ["terminated:0", "waiting:PodInitializing"],
            "waiting:PodInitializing",
            ("False", "ContainersNotInitialized", "containers with incomplete status: [i2]"),
            id="one-done-one-omitted",
        ),
        pytest.param(
            ("i1", "i2"),
            (),
            (),
            PodPhase.PENDING,
            ["waiting:PodInitializing", "waiting:PodInitializing"],
            "waiting:PodInitializing",
            ("False", "ContainersNotInitialized", "containers with incomplete status: [i1 i2]"),
            id="none-reported",
        ),
        pytest.param(
            ("i1", "i2"),
            (_done("i1"), _done("i2")),
            (),
            PodPhase.PENDING,
            ["terminated:0", "terminated:0"],
            "waiting:ContainerCreating",
            ("True", None, None),
            id="all-done-app-not-started",
        ),
        pytest.param(
            ("i1",),
            (_done("i1"),),
            (_running("app"),),
            PodPhase.RUNNING,
            ["terminated:0"],
            "running",
            ("True", None, None),
            id="all-done-running",
        ),
        pytest.param(
            ("i1", "i2"),
            (_done("i1", 1),),
            (),
            PodPhase.FAILED,
            ["terminated:1", "waiting:PodInitializing"],
            "waiting:PodInitializing",
            ("False", "ContainersNotInitialized", "containers with incomplete status: [i1 i2]"),
            id="failed",
        ),
        pytest.param(
            ("i1",),
            (_done("i1"),),
            (_done("app"),),
            PodPhase.SUCCEEDED,
            ["terminated:0"],
            "terminated:0",
            ("True", "PodCompleted", None),
            id="succeeded",
        ),
        pytest.param(
            ("i1",),
            (),
            (_running("app"),),
            PodPhase.RUNNING,
            ["waiting:PodInitializing"],
            "running",
            ("True", None, None),
            id="an-app-container-ran-so-initialization-was-over",
        ),
    ],
)
def test_init_containers(
    init: Sequence[str],
    reported_init: tuple[ContainerStatus, ...],
    reported_app: tuple[ContainerStatus, ...],
    phase: PodPhase,
    init_states: list[str] | None,
    app_state: str,
    initialized: tuple[str, str | None, str | None],
) -> None:
    def described(status: Mapping[str, Any]) -> str:
        ((kind, detail),) = status["state"].items()
        if kind == "waiting":
            return f"waiting:{detail['reason']}"
        if kind == "terminated":
            return f"terminated:{detail['exitCode']}"
        return str(kind)

    reported = ProviderPodStatus(phase, reported_app, init_containers=reported_init)
    status = pod_status.pod_status(_pod("app", init=init), reported, "h", T1)
    if init_states is None:
        assert "initContainerStatuses" not in status
    else:
        assert [s["name"] for s in status["initContainerStatuses"]] == list(init)
        assert [described(s) for s in status["initContainerStatuses"]] == init_states
    assert described(status["containerStatuses"][0]) == app_state
    assert _condition(status, "Initialized") == initialized


@pytest.mark.parametrize(
    ("container", "ready"),
    [
        (_done("i1"), True),
        (_done("i1", ready=False), True),  # the exit code decides, not the provider's readiness
        (_done("i1", 1), False),
        (_running("i1", ready=True), False),
    ],
)
def test_a_regular_init_container_is_ready_once_it_succeeded(container: ContainerStatus, ready: bool) -> None:
    reported = ProviderPodStatus(PodPhase.PENDING, init_containers=(container,))
    (init,) = pod_status.pod_status(_pod("app", init=["i1"]), reported, "h", T1)["initContainerStatuses"]
    assert init["ready"] is ready


@pytest.mark.parametrize(
    ("sidecar", "initialized", "containers_ready"),
    [
        (_running("side"), "True", ("True", None, None)),
        (
            _running("side", ready=False),
            "True",
            ("False", "ContainersNotReady", "containers with unready status: [side]"),
        ),
        (
            _running("side", started=False),
            "True",  # the app container runs: initialization is over
            ("False", "ContainersNotReady", "containers with unready status: [side]"),
        ),
    ],
)
def test_a_sidecar_counts_as_initialized_once_started_and_its_readiness_counts(
    sidecar: ContainerStatus, initialized: str, containers_ready: tuple[str, str | None, str | None]
) -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("app"),), init_containers=(_done("i1"), sidecar))
    status = pod_status.pod_status(_pod("app", init=["i1"], sidecars=["side"]), reported, "h", T1)
    assert _condition(status, "Initialized")[0] == initialized
    assert _condition(status, "ContainersReady") == containers_ready
    assert _condition(status, "Ready") == containers_ready


def test_a_pending_sidecar_holds_initialization_until_it_starts() -> None:
    pod = _pod("app", init=["i1"], sidecars=["side"])
    starting = ProviderPodStatus(
        PodPhase.PENDING, init_containers=(_done("i1"), _running("side", started=False))
    )
    started = ProviderPodStatus(PodPhase.PENDING, init_containers=(_done("i1"), _running("side")))
    assert _condition(pod_status.pod_status(pod, starting, "h", T1), "Initialized") == (
        "False",
        "ContainersNotInitialized",
        "containers with incomplete status: [side]",
    )
    after = pod_status.pod_status(pod, started, "h", T1)
    assert _condition(after, "Initialized") == ("True", None, None)
    assert after["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}


# --- readiness ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        pytest.param(
            ProviderPodStatus(PodPhase.RUNNING, (_running("a"), _running("b", ready=False))),
            ("False", "ContainersNotReady", "containers with unready status: [b]"),
            id="running-but-not-ready",
        ),
        pytest.param(
            ProviderPodStatus(PodPhase.RUNNING, (_running("a", ready=False), _running("b", ready=False))),
            ("False", "ContainersNotReady", "containers with unready status: [a b]"),
            id="both-unready",
        ),
        pytest.param(
            ProviderPodStatus(PodPhase.RUNNING, (_running("a"), _running("b", ready=True))),
            ("True", None, None),
            id="ready",
        ),
        pytest.param(
            ProviderPodStatus(PodPhase.SUCCEEDED, (_done("a"), _done("b"))),
            ("False", "PodCompleted", None),
            id="succeeded",
        ),
        pytest.param(
            ProviderPodStatus(PodPhase.FAILED, (_done("a", 1), _running("b"))),
            ("False", "PodFailed", None),
            id="failed",
        ),
    ],
)
def test_containers_ready_and_ready(
    reported: ProviderPodStatus, expected: tuple[str, str | None, str | None]
) -> None:
    status = pod_status.pod_status(_pod("a", "b"), reported, "h", T1)
    assert _condition(status, "ContainersReady") == expected
    assert _condition(status, "Ready") == expected


@pytest.mark.parametrize(
    ("gates", "provider", "existing", "ready"),
    [
        pytest.param(
            ["example.com/lb"],
            (),
            [],
            (
                "False",
                "ReadinessGatesNotReady",
                'corresponding condition of pod readiness gate "example.com/lb" does not exist.',
            ),
            id="missing",
        ),
        pytest.param(
            ["example.com/lb"],
            (PodCondition("example.com/lb", False),),
            [],
            (
                "False",
                "ReadinessGatesNotReady",
                'the status of pod readiness gate "example.com/lb" is not "True", but False',
            ),
            id="false-from-the-provider",
        ),
        pytest.param(
            ["example.com/lb"],
            (),
            [{"type": "example.com/lb", "status": "Unknown"}],
            (
                "False",
                "ReadinessGatesNotReady",
                'the status of pod readiness gate "example.com/lb" is not "True", but Unknown',
            ),
            id="unknown-from-the-existing-status",
        ),
        pytest.param(
            ["example.com/lb"],
            (PodCondition("example.com/lb", True),),
            [],
            ("True", None, None),
            id="true-provider",
        ),
        pytest.param(
            ["example.com/lb"],
            (),
            [{"type": "example.com/lb", "status": "True"}],
            ("True", None, None),
            id="true-from-the-existing-status",
        ),
        pytest.param(
            ["example.com/lb"],
            (PodCondition("example.com/lb", False),),
            [{"type": "example.com/lb", "status": "True"}],
            (
                "False",
                "ReadinessGatesNotReady",
                'the status of pod readiness gate "example.com/lb" is not "True", but False',
            ),
            id="the-provider-wins",
        ),
        pytest.param(
            ["g1", "g2"],
            (PodCondition("g2", False),),
            [],
            (
                "False",
                "ReadinessGatesNotReady",
                'corresponding condition of pod readiness gate "g1" does not exist., '
                'the status of pod readiness gate "g2" is not "True", but False',
            ),
            id="two-gates",
        ),
        pytest.param([], (PodCondition("g1", False),), [], ("True", None, None), id="no-gates"),
    ],
)
def test_readiness_gates(
    gates: Sequence[str],
    provider: tuple[PodCondition, ...],
    existing: list[dict[str, Any]],
    ready: tuple[str, str | None, str | None],
) -> None:
    pod = _pod("a", gates=gates, status={"conditions": existing})
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), conditions=provider)
    status = pod_status.pod_status(pod, reported, "h", T1)
    assert _condition(status, "ContainersReady") == ("True", None, None)
    assert _condition(status, "Ready") == ready


def test_readiness_gates_wait_for_the_containers() -> None:
    pod = _pod("a", gates=["g1"])
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a", ready=False),))
    assert _condition(pod_status.pod_status(pod, reported, "h", T1), "Ready") == (
        "False",
        "ContainersNotReady",
        "containers with unready status: [a]",
    )


# --- conditions ---------------------------------------------------------------------------------


def test_provider_conditions_follow_the_kubelets_and_cannot_override_them() -> None:
    reported = ProviderPodStatus(
        PodPhase.RUNNING,
        (_running("a"),),
        conditions=(
            PodCondition("example.com/warm", True),
            PodCondition("Ready", False, "Nope"),  # the kubelet's: ignored
            PodCondition("example.com/quota", False, "QuotaLow", "3% left"),
            PodCondition("example.com/warm", False),  # a second of the same type: ignored
        ),
    )
    status = pod_status.pod_status(_pod("a"), reported, "h", T1)
    assert [c["type"] for c in status["conditions"]] == [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        "example.com/warm",
        "example.com/quota",
    ]
    assert _condition(status, "Ready") == ("True", None, None)
    assert _condition(status, "example.com/warm") == ("True", None, None)
    assert _condition(status, "example.com/quota") == ("False", "QuotaLow", "3% left")


@pytest.mark.parametrize(
    "reported",
    [
        ProviderPodStatus(PodPhase.PENDING),
        ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), conditions=(PodCondition("x", True),)),
        ProviderPodStatus(PodPhase.FAILED, (_done("a", 1),)),
    ],
)
def test_every_condition_carries_every_key(reported: ProviderPodStatus) -> None:
    status = pod_status.pod_status(_pod("a", init=["i1"]), reported, "h", T1)
    for condition in status["conditions"]:
        assert set(condition) == CONDITION_KEYS
        assert condition["lastProbeTime"] is None


def test_a_running_pod_loses_the_reasons_it_had_while_pending() -> None:
    """The defect: a strategic merge keeps condition fields a patch leaves out."""
    pod = _pod("a", init=["i1"])
    pending = pod_status.pod_status(pod, ProviderPodStatus(PodPhase.PENDING), "h", T0)
    assert _condition(pending, "Initialized")[1] == "ContainersNotInitialized"
    served = _merge({}, pod_status.status_patch(None, pending))
    running = pod_status.pod_status(
        {**pod, "status": served},
        ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), init_containers=(_done("i1"),)),
        "h",
        T1,
    )
    after = _merge(served, pod_status.status_patch(served, running))
    for kind in ("Initialized", "ContainersReady", "Ready"):
        (condition,) = (c for c in after["conditions"] if c["type"] == kind)
        assert condition["status"] == "True"
        assert "reason" not in condition and "message" not in condition, condition
    assert not pod_status.status_changed(_as_served(after), running)


@pytest.mark.parametrize(
    ("first", "second", "kept"),
    [
        (PodPhase.RUNNING, PodPhase.RUNNING, True),
        (PodPhase.PENDING, PodPhase.RUNNING, False),
    ],
)
def test_condition_transition_time_changes_only_when_the_status_flips(
    first: PodPhase, second: PodPhase, kept: bool
) -> None:
    def reported(phase: PodPhase) -> ProviderPodStatus:
        return ProviderPodStatus(phase, (_running("a"),) if phase is PodPhase.RUNNING else ())

    before = pod_status.pod_status(_pod("a"), reported(first), "h", T0)
    after = pod_status.pod_status(_pod("a", status=before), reported(second), "h", T1)
    ready = next(c for c in after["conditions"] if c["type"] == "Ready")
    assert ready["lastTransitionTime"] == (T0_TEXT if kept else T1_TEXT)
    scheduled = next(c for c in after["conditions"] if c["type"] == "PodScheduled")
    assert scheduled["lastTransitionTime"] == T0_TEXT


def test_condition_transition_time_is_kept_when_unchanged() -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),))
    first = pod_status.pod_status(_pod("a"), reported, "h", T0)
    second = pod_status.pod_status(_pod("a", status=first), reported, "h", T1)
    assert first["conditions"] == second["conditions"]
    assert not pod_status.status_changed(first, second)


# --- addresses, times, top level ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod_ip", "pod_ips", "expected"),
    [
        ("10.0.0.9", (), ["10.0.0.9"]),
        ("10.0.0.9", ("10.0.0.9", "fd00::9"), ["10.0.0.9", "fd00::9"]),
        ("10.0.0.9", ("fd00::9",), ["10.0.0.9", "fd00::9"]),
        (None, ("fd00::9", "10.0.0.9"), ["fd00::9", "10.0.0.9"]),
        (None, (), []),
    ],
)
def test_pod_ips(pod_ip: str | None, pod_ips: tuple[str, ...], expected: list[str]) -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), pod_ip=pod_ip, pod_ips=pod_ips)
    status = pod_status.pod_status(_pod("a"), reported, "h", T1)
    if expected:
        assert status["podIP"] == expected[0]
        assert status["podIPs"] == [{"ip": ip} for ip in expected]
    else:
        assert "podIP" not in status and "podIPs" not in status


def test_pod_ip_and_start_time() -> None:
    reported = ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), pod_ip="10.0.0.9", start_time=T0)
    status = pod_status.pod_status(_pod("a"), reported, "h", T1)
    assert status["podIP"] == "10.0.0.9"
    assert status["podIPs"] == [{"ip": "10.0.0.9"}]
    assert status["startTime"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("reported", "previous", "start"),
    [
        (ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), start_time=T0), None, T0_TEXT),
        (ProviderPodStatus(PodPhase.RUNNING, (_running("a"),)), None, T1_TEXT),
        (ProviderPodStatus(PodPhase.PENDING), None, None),
        (
            ProviderPodStatus(PodPhase.RUNNING, (_running("a"),), start_time=T0),
            "2025-12-31T00:00:00Z",
            "2025-12-31T00:00:00Z",
        ),
    ],
)
def test_start_time_is_set_once(reported: ProviderPodStatus, previous: str | None, start: str | None) -> None:
    pod = _pod("a", status={"startTime": previous} if previous else None)
    assert pod_status.pod_status(pod, reported, "h", T1).get("startTime") == start


@pytest.mark.parametrize(
    ("previous", "qos"), [(None, "BestEffort"), ({"qosClass": "Guaranteed"}, "Guaranteed")]
)
def test_qos_class_is_the_apiservers(previous: dict[str, Any] | None, qos: str) -> None:
    status = pod_status.pod_status(_pod("a", status=previous), ProviderPodStatus(PodPhase.PENDING), "h", T1)
    assert status["qosClass"] == qos


def test_top_level_reason_and_message_come_from_the_provider() -> None:
    reported = ProviderPodStatus(PodPhase.FAILED, (_done("a", 1),), reason="Evicted", message="disk full")
    status = pod_status.pod_status(_pod("a"), reported, "h", T1)
    assert (status["reason"], status["message"]) == ("Evicted", "disk full")
    plain = pod_status.pod_status(_pod("a"), ProviderPodStatus(PodPhase.RUNNING, (_running("a"),)), "h", T1)
    assert "reason" not in plain and "message" not in plain


# --- pending_status -----------------------------------------------------------------------------


def test_pending_status_names_the_reason() -> None:
    status = pod_status.pending_status(_pod("a"), "ProviderFailed", "quota exceeded", T0)
    assert (status["phase"], status["reason"], status["message"]) == (
        "Pending",
        "ProviderFailed",
        "quota exceeded",
    )
    assert "hostIP" not in status and "hostIPs" not in status
    failed = pod_status.pending_status(_pod("a"), "ProviderFailed", "no", T0, phase=PodPhase.FAILED)
    assert failed["phase"] == "Failed"


def test_config_error_reasons_are_the_mandatory_reference_failures() -> None:
    assert {
        "MandatoryConfigMapNotFound",
        "MandatoryConfigMapKeyNotFound",
        "FailedToReadMandatoryConfigMap",
        "MandatorySecretNotFound",
        "MandatorySecretKeyNotFound",
        "FailedToReadMandatorySecret",
    } <= pod_status.CONFIG_ERROR_REASONS
    assert not {"ProviderFailed", "UnsupportedVolume", "FailedMount"} & pod_status.CONFIG_ERROR_REASONS


@pytest.mark.parametrize(
    ("reason", "phase", "state"),
    [
        pytest.param(
            "MandatoryConfigMapNotFound",
            PodPhase.PENDING,
            {"waiting": {"reason": "CreateContainerConfigError", "message": "m"}},
            id="missing-configmap",
        ),
        pytest.param(
            "MandatorySecretKeyNotFound",
            PodPhase.PENDING,
            {"waiting": {"reason": "CreateContainerConfigError", "message": "m"}},
            id="missing-secret-key",
        ),
        pytest.param(
            "FailedToReadMandatoryConfigMap",
            PodPhase.PENDING,
            {"waiting": {"reason": "CreateContainerConfigError", "message": "m"}},
            id="unreadable-configmap",
        ),
        pytest.param(
            "ProviderFailed",
            PodPhase.PENDING,
            {"waiting": {"reason": "ProviderFailed", "message": "m"}},
            id="provider-failed",
        ),
        pytest.param(
            "ProviderFailed",
            PodPhase.FAILED,
            {"terminated": {"exitCode": 128, "reason": "ProviderFailed", "message": "m"}},
            id="provider-gave-up",
        ),
        pytest.param(
            "UnsupportedVolume",
            PodPhase.FAILED,
            {"terminated": {"exitCode": 128, "reason": "UnsupportedVolume", "message": "m"}},
            id="unsupported-volume",
        ),
        pytest.param(
            "MandatoryConfigMapNotFound",
            PodPhase.FAILED,
            {"terminated": {"exitCode": 128, "reason": "CreateContainerConfigError", "message": "m"}},
            id="configmap-never-came",
        ),
    ],
)
def test_pending_status_container_states(reason: str, phase: PodPhase, state: dict[str, Any]) -> None:
    status = pod_status.pending_status(_pod("a", "b"), reason, "m", T0, phase=phase)
    assert [c["state"] for c in status["containerStatuses"]] == [state, state]
    assert all(c["ready"] is False and c["started"] is False for c in status["containerStatuses"])
    assert status["reason"] == reason


@pytest.mark.parametrize(
    ("phase", "init_state", "app_state", "initialized"),
    [
        (
            PodPhase.PENDING,
            {"waiting": {"reason": "CreateContainerConfigError", "message": "m"}},
            {"waiting": {"reason": "PodInitializing"}},
            ("False", "ContainersNotInitialized", "containers with incomplete status: [i1]"),
        ),
        (
            PodPhase.FAILED,
            {"terminated": {"exitCode": 128, "reason": "CreateContainerConfigError", "message": "m"}},
            {"terminated": {"exitCode": 128, "reason": "CreateContainerConfigError", "message": "m"}},
            ("False", "ContainersNotInitialized", "containers with incomplete status: [i1]"),
        ),
    ],
)
def test_pending_status_with_init_containers(
    phase: PodPhase,
    init_state: dict[str, Any],
    app_state: dict[str, Any],
    initialized: tuple[str, str | None, str | None],
) -> None:
    status = pod_status.pending_status(
        _pod("a", init=["i1"]), "MandatorySecretNotFound", "m", T0, phase=phase
    )
    assert status["initContainerStatuses"][0]["state"] == init_state
    assert status["containerStatuses"][0]["state"] == app_state
    assert _condition(status, "Initialized") == initialized


@pytest.mark.parametrize(
    ("phase", "containers_ready"),
    [(PodPhase.PENDING, "ContainersNotReady"), (PodPhase.FAILED, "PodFailed")],
)
def test_pending_status_conditions(phase: PodPhase, containers_ready: str) -> None:
    status = pod_status.pending_status(_pod("a"), "ProviderFailed", "m", T0, phase=phase)
    assert _condition(status, "ContainersReady")[1] == containers_ready
    assert _condition(status, "Ready")[1] == containers_ready


def test_a_failed_pending_status_is_stable_across_rewrites() -> None:
    first = pod_status.pending_status(_pod("a"), "ProviderFailed", "m", T0, phase=PodPhase.FAILED)
    again = pod_status.pending_status(
        _pod("a", status=_as_served(first)), "ProviderFailed", "m", T1, PodPhase.FAILED
    )
    assert not pod_status.status_changed(_as_served(first), again)


# --- stopped_status, lost_status ----------------------------------------------------------------

_RUNNING_STATUS: dict[str, Any] = {
    "phase": "Running",
    "podIP": "10.0.0.5",
    "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}],
    "containerStatuses": [
        {
            "name": "a",
            "image": "docker.io/img-a:1",
            "imageID": "sha256:a",
            "containerID": "mock://a",
            "restartCount": 2,
            "state": {"running": {"startedAt": T0_TEXT}},
            "lastState": {},
        },
        {"name": "b", "state": {"waiting": {"reason": "ContainerCreating"}}, "lastState": {}},
    ],
}


@pytest.mark.parametrize(
    ("function", "phase", "reason", "exit_code", "pod_reason"),
    [
        (pod_status.stopped_status, PodPhase.SUCCEEDED, "Completed", 0, None),
        (pod_status.lost_status, PodPhase.FAILED, "ProviderLost", 137, "ProviderLost"),
        (pod_status.deadline_status, PodPhase.FAILED, "DeadlineExceeded", 137, "DeadlineExceeded"),
    ],
)
def test_stopped_and_lost_status_end_every_container(
    function: Any, phase: PodPhase, reason: str, exit_code: int, pod_reason: str | None
) -> None:
    ended: ProviderPodStatus = function(_pod("a", "b", status=_RUNNING_STATUS), T1)
    assert (ended.phase, ended.reason, ended.ips) == (phase, pod_reason, ("10.0.0.5", "fd00::5"))
    a, b = ended.containers
    assert (a.phase, a.reason, a.exit_code, a.started_at, a.finished_at) == (
        ContainerPhase.TERMINATED,
        reason,
        exit_code,
        T0,
        T1,
    )
    assert (a.image, a.image_id, a.container_id, a.restart_count) == (
        "docker.io/img-a:1",
        "sha256:a",
        "mock://a",
        2,
    )
    assert (b.phase, b.exit_code, b.started_at, b.image) == (
        ContainerPhase.TERMINATED,
        exit_code,
        None,
        "img-b",
    )
    status = pod_status.pod_status(_pod("a", "b", status=_RUNNING_STATUS), ended, "h", T1)
    assert status["phase"] == phase.value
    assert status["containerStatuses"][0]["state"]["terminated"]["containerID"] == "mock://a"


def test_lost_status_matches_what_the_controller_wrote() -> None:
    lost = pod_status.lost_status(_pod("a", status={"podIP": "10.0.0.5"}), T1)
    assert (lost.reason, lost.message, lost.pod_ip) == (
        "ProviderLost",
        "the pod vanished from the provider",
        "10.0.0.5",
    )
    (a,) = lost.containers
    assert (a.reason, a.message, a.exit_code, a.finished_at) == (
        "ProviderLost",
        "the provider no longer runs this container",
        137,
        T1,
    )


def test_stopped_status_keeps_how_containers_had_already_ended() -> None:
    previous = {
        "phase": "Running",
        "containerStatuses": [
            {"name": "a", "state": {"running": {"startedAt": T0_TEXT}}},
            {"name": "b", "state": {"terminated": {"exitCode": 3, "reason": "Error"}}},
        ],
        "initContainerStatuses": [
            {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "side", "state": {"running": {"startedAt": T0_TEXT}}},
        ],
    }
    pod = _pod("a", "b", init=["i1"], sidecars=["side"], status=previous)
    stopped = pod_status.stopped_status(pod, T1)
    assert [c.name for c in stopped.containers] == ["a"]
    assert [c.name for c in stopped.init_containers] == ["side"]
    assert stopped.phase is PodPhase.FAILED  # b had failed
    status = pod_status.pod_status(pod, stopped, "h", T1)
    assert status["containerStatuses"][1]["state"] == {"terminated": {"exitCode": 3, "reason": "Error"}}
    assert [s["state"]["terminated"]["reason"] for s in status["initContainerStatuses"]] == [
        "Completed",
        "Completed",
    ]
    assert _condition(status, "Initialized") == ("True", None, None)


def test_an_init_container_that_never_started_stays_waiting_when_the_pod_stops() -> None:
    previous = {"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"waiting": {}}}]}
    stopped = pod_status.stopped_status(_pod("a", init=["i1"], status=previous), T1)
    assert stopped.init_containers == ()


def test_deadline_status_says_what_the_kubelet_says() -> None:
    ended = pod_status.deadline_status(_pod("a", status=_RUNNING_STATUS), T1)
    assert (ended.reason, ended.message) == (
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline",
    )


@pytest.mark.parametrize(
    "function", [pod_status.stopped_status, pod_status.lost_status, pod_status.deadline_status]
)
@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_a_terminal_phase_is_final(function: Any, phase: str) -> None:
    previous = {
        "phase": phase,
        "reason": "DeadlineExceeded" if phase == "Failed" else None,
        "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1}}}
        ],
    }
    ended: ProviderPodStatus = function(_pod("a", status=previous), T1)
    assert ended.phase.value == phase
    assert ended.reason == previous["reason"]
    assert ended.containers == ()


# --- active_deadline_left -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("deadline", "start", "now", "left"),
    [
        (30, T0_TEXT, T0, 30.0),
        (30, T0_TEXT, T1, 0.0),  # runs out exactly at startTime + activeDeadlineSeconds
        (30, T0_TEXT, T1 + datetime.timedelta(seconds=5), -5.0),
        (1, "2026-01-01T00:00:00.500000Z", T0, 1.5),
        (30, None, T1, None),  # not started: the kubelet counts from startTime
        (None, T0_TEXT, T1, None),  # no deadline
        (True, T0_TEXT, T1, None),  # not a number of seconds (the apiserver admits none such)
    ],
)
def test_active_deadline_left(
    deadline: Any, start: str | None, now: datetime.datetime, left: float | None
) -> None:
    pod = _pod("a")
    if deadline is not None:
        pod["spec"]["activeDeadlineSeconds"] = deadline
    assert active_deadline_left(pod, start, now) == left


# --- status_changed, status_patch ---------------------------------------------------------------


def test_status_changed_sees_real_changes() -> None:
    pending = pod_status.pod_status(_pod("a"), ProviderPodStatus(PodPhase.PENDING), "h", T0)
    running = pod_status.pod_status(_pod("a"), ProviderPodStatus(PodPhase.RUNNING, (_running("a"),)), "h", T0)
    assert pod_status.status_changed(pending, running)
    assert pod_status.status_changed(None, pending)


def _written() -> dict[str, Any]:
    reported = ProviderPodStatus(
        PodPhase.RUNNING,
        (_running("a", last_state=TerminatedState(1)), _running("b")),
        init_containers=(_done("i1"),),
        pod_ip="10.0.0.5",
    )
    return pod_status.pod_status(_pod("a", "b", init=["i1"]), reported, "h", T0)


def _with_container(status: dict[str, Any], index: int, **fields: Any) -> dict[str, Any]:
    containers = [dict(c) for c in status["containerStatuses"]]
    containers[index].update(fields)
    return {**status, "containerStatuses": containers}


@pytest.mark.parametrize(
    ("served", "changed"),
    [
        pytest.param(lambda s: s, False, id="same"),
        pytest.param(_as_served, False, id="empty-last-state-added-by-the-apiserver"),
        pytest.param(
            lambda s: _with_container(_as_served(s), 1, state={"running": {"startedAt": T0_TEXT}, "x": None}),
            False,
            id="null-values",
        ),
        pytest.param(
            lambda s: {
                **s,
                "conditions": [{**c, "lastTransitionTime": "2020-01-01T00:00:00Z"} for c in s["conditions"]],
            },
            False,
            id="transition-times",
        ),
        pytest.param(
            lambda s: {**s, "conditions": [*s["conditions"], {"type": "DisruptionTarget", "status": "True"}]},
            False,
            id="another-controllers-condition",
        ),
        pytest.param(lambda s: {**s, "nominatedNodeName": "n"}, False, id="a-field-we-do-not-write"),
        pytest.param(
            lambda s: _with_container(s, 1, lastState={"terminated": {"exitCode": 1}}),
            True,
            id="a-last-state-we-no-longer-report",
        ),
        pytest.param(lambda s: _with_container(s, 0, lastState={}), True, id="a-last-state-we-report"),
        pytest.param(lambda s: _with_container(s, 0, restartCount=7), True, id="restart-count"),
        pytest.param(lambda s: {**s, "reason": "FailedMount"}, True, id="a-reason-to-clear"),
        pytest.param(
            lambda s: {
                **s,
                "conditions": [
                    {**c, "reason": "ContainersNotInitialized"} if c["type"] == "Initialized" else c
                    for c in s["conditions"]
                ],
            },
            True,
            id="a-stale-condition-reason",
        ),
        pytest.param(
            lambda s: {**s, "conditions": [c for c in s["conditions"] if c["type"] != "Ready"]},
            True,
            id="a-condition-missing",
        ),
        pytest.param(lambda s: {**s, "podIPs": [{"ip": "10.0.0.6"}]}, True, id="pod-ips"),
    ],
)
def test_status_changed(served: Any, changed: bool) -> None:
    wanted = _written()
    assert pod_status.status_changed(served(wanted), wanted) is changed


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
