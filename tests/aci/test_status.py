"""Container group -> pod status, from the spec's example responses and tables of instance views."""

from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

import pytest
from azure.mgmt.containerinstance.models import ContainerGroup

from providers.aci import status
from vk_operator.provider import ContainerPhase, PodPhase, TerminatedState

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE_DIRS = [
    REPO / "providers/aci/localarm/spec/examples",
    REPO.parent / "shared/specs/aci-2023-05-01/examples",
]
GROUP_ID = (
    "/subscriptions/s/resourceGroups/vk/providers/Microsoft.ContainerInstance/containerGroups/shop-web-0"
)


def _example(name: str) -> dict[str, Any]:
    for directory in EXAMPLE_DIRS:
        if (directory / name).exists():
            body: dict[str, Any] = json.loads((directory / name).read_text())["responses"]["200"]["body"]
            return body
    pytest.skip(f"no copy of the spec example {name}")


def _t(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- the spec's examples ---------------------------------------------------------------------------


def test_example_succeeded_is_running() -> None:
    """provisioningState Succeeded and no instance view: deployed and started."""
    got = status.pod_status(ContainerGroup.deserialize(_example("ContainerGroupsGet_Succeeded.json")))
    assert got.phase is PodPhase.RUNNING
    assert got.pod_ip == "10.0.0.1"
    assert got.containers == ()  # no instance view: the core keeps what it knew
    assert (got.reason, got.message) == (None, None)


def test_example_failed_is_failed_with_the_cause() -> None:
    body = _example("ContainerGroupsGet_Failed.json")
    got = status.pod_status(ContainerGroup.deserialize(body))
    assert got.phase is PodPhase.FAILED
    assert got.reason == "ProvisioningFailed"
    assert (
        got.message == "ACI provisioningState Failed: FailedMount: Output: mount error(2): Permission denied"
    )
    assert got.pod_ip == "10.0.0.1"
    (demo,) = got.containers
    assert (demo.name, demo.image, demo.phase, demo.exit_code) == (
        "demo1",
        "nginx",
        ContainerPhase.TERMINATED,
        128,
    )
    assert (demo.reason, demo.message, demo.restart_count) == ("ProvisioningFailed", got.message, 0)
    assert status.pod_status(body) == got  # the wire JSON works as well


def test_example_failed_events() -> None:
    events = status.group_events(_example("ContainerGroupsGet_Failed.json"))
    assert [(e.container, e.field_path, e.type, e.reason, e.message, e.count) for e in events] == [
        (None, None, "Normal", "FailedMount", "Output: mount error(2): Permission denied", 1),
        ("demo1", "spec.containers{demo1}", "Normal", "Pulling", 'pulling image "nginx"', 1),
        ("demo1", "spec.containers{demo1}", "Normal", "Pulled", 'Successfully pulled image "nginx"', 1),
    ]
    assert events[0].first_time == events[0].last_time == _t("2017-10-08T00:19:10Z")


# --- tables of instance views ----------------------------------------------------------------------


def _state(state: str | None, **fields: Any) -> dict[str, Any]:
    return {**({"state": state} if state is not None else {}), **fields}


def _container(name: str = "app", current: dict[str, Any] | None = None, **view: Any) -> dict[str, Any]:
    properties: dict[str, Any] = {"image": "nginx", "resources": {"requests": {"cpu": 1, "memoryInGB": 1.5}}}
    if current is not None:
        properties["instanceView"] = {"currentState": current, **view}
    return {"name": name, "properties": properties}


def _group(
    provisioning: str | None,
    state: str | None = None,
    *containers: dict[str, Any],
    init: list[dict[str, Any]] | None = None,
    ip: str | None = "10.1.0.4",
    events: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    properties: dict[str, Any] = {"osType": "Linux", "containers": list(containers) or [_container()]}
    if provisioning is not None:
        properties["provisioningState"] = provisioning
    if state is not None or events:
        properties["instanceView"] = {**({"state": state} if state else {}), "events": events or []}
    if init is not None:
        properties["initContainers"] = init
    if ip:
        properties["ipAddress"] = {"ip": ip, "type": "Private", "ports": [{"port": 80}]}
    return {"id": GROUP_ID, "name": "shop-web-0", "location": "westeurope", "properties": properties}


RUNNING = _state("Running", startTime="2024-05-01T10:00:00Z", detailStatus="")
WAITING = _state("Waiting", detailStatus="")
DONE = _state(
    "Terminated",
    exitCode=0,
    startTime="2024-05-01T10:00:00Z",
    finishTime="2024-05-01T10:05:00Z",
    detailStatus="Completed",
)
ERROR = _state(
    "Terminated",
    exitCode=2,
    startTime="2024-05-01T10:00:00Z",
    finishTime="2024-05-01T10:01:00Z",
    detailStatus="Error",
)
OOM = _state("Terminated", exitCode=137, finishTime="2024-05-01T10:02:00Z", detailStatus="OOMKilled")


@pytest.mark.parametrize(
    ("group", "phase", "reason"),
    [
        (_group("Accepted"), PodPhase.PENDING, "Accepted"),
        (_group("Pending"), PodPhase.PENDING, "Pending"),
        (_group("Creating", "Pending", _container(current=WAITING)), PodPhase.PENDING, "Creating"),
        (_group("Repairing", "Pending"), PodPhase.PENDING, "Repairing"),
        (_group("Succeeded", "Running", _container(current=RUNNING)), PodPhase.RUNNING, None),
        (
            _group("Updating", "Running", _container(current=RUNNING)),
            PodPhase.RUNNING,
            None,
        ),  # update in place
        (_group("Succeeded", "Succeeded", _container(current=DONE)), PodPhase.SUCCEEDED, None),
        (_group("Succeeded", "Failed", _container(current=ERROR)), PodPhase.FAILED, None),
        (_group("Succeeded", "Failed", _container("a", DONE), _container("b", OOM)), PodPhase.FAILED, None),
        (
            _group("Succeeded", "Succeeded", _container("a", DONE), _container("b", ERROR)),
            PodPhase.FAILED,
            None,
        ),
        (_group("Succeeded", "Stopped", _container(current=OOM)), PodPhase.FAILED, "Stopped"),
        (_group("Succeeded", "Failed", _container(current=WAITING)), PodPhase.FAILED, None),
        (_group("Failed"), PodPhase.FAILED, "ProvisioningFailed"),
        (_group("Canceled", "Pending"), PodPhase.FAILED, "ProvisioningCanceled"),
        (_group("Failed", "Running", _container(current=RUNNING)), PodPhase.RUNNING, None),  # still runs
        # states ACI adds later: the nearest phase, ACI's word as the reason, never Unknown
        (_group("Succeeded", "Hibernating", _container(current=RUNNING)), PodPhase.RUNNING, "Hibernating"),
        (_group("Succeeded", "Hibernating", _container(current=WAITING)), PodPhase.PENDING, "Hibernating"),
        (_group("Succeeded", "Archived", _container(current=DONE)), PodPhase.SUCCEEDED, "Archived"),
        (_group("Succeeded", "Archived", _container(current=ERROR)), PodPhase.FAILED, "Archived"),
        (_group("Migrating"), PodPhase.PENDING, "Migrating"),
        (_group("Unhealthy", "Running", _container(current=RUNNING)), PodPhase.RUNNING, None),
        (_group("Deleting"), PodPhase.PENDING, "Deleting"),
        (_group(None), PodPhase.PENDING, None),
    ],
)
def test_phase(group: dict[str, Any], phase: PodPhase, reason: str | None) -> None:
    got = status.pod_status(group)
    assert (got.phase, got.reason) == (phase, reason)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        ({"currentState": RUNNING, "restartCount": 0}, (ContainerPhase.RUNNING, None, None, None, 0)),
        ({"currentState": DONE}, (ContainerPhase.TERMINATED, "Completed", None, 0, 0)),
        ({"currentState": ERROR, "restartCount": 3}, (ContainerPhase.TERMINATED, "Error", None, 2, 3)),
        ({"currentState": OOM}, (ContainerPhase.TERMINATED, "OOMKilled", None, 137, 0)),
        (
            {"currentState": _state("Terminated", exitCode=1, detailStatus="exit status 1: boom")},
            (ContainerPhase.TERMINATED, "Error", "exit status 1: boom", 1, 0),
        ),
        (
            {"currentState": _state("Terminated")},
            (ContainerPhase.TERMINATED, "Error", None, 1, 0),
        ),  # no code: not 0
        ({"currentState": _state("Succeeded")}, (ContainerPhase.TERMINATED, "Completed", None, 0, 0)),
        ({"currentState": WAITING}, (ContainerPhase.WAITING, "ContainerCreating", None, None, 0)),
        ({"currentState": WAITING, "restartCount": 2}, (ContainerPhase.WAITING, "Waiting", None, None, 2)),
        (
            {
                "currentState": _state(
                    "Waiting", detailStatus="CrashLoopBackOff: Back-off 10s restarting failed container"
                )
            },
            (ContainerPhase.WAITING, "CrashLoopBackOff", "Back-off 10s restarting failed container", None, 0),
        ),
        (
            {"currentState": _state("Waiting", detailStatus="ErrImagePull")},
            (ContainerPhase.WAITING, "ErrImagePull", None, None, 0),
        ),
        (
            {"currentState": _state("Paused", detailStatus="")},
            (ContainerPhase.WAITING, "Paused", None, None, 0),
        ),
        (
            {"currentState": _state("Waiting", detailStatus="pulling the image, please wait")},
            (ContainerPhase.WAITING, "ContainerCreating", "pulling the image, please wait", None, 0),
        ),
    ],
)
def test_container_state(view: dict[str, Any], expected: tuple[Any, ...]) -> None:
    group = ContainerGroup.deserialize(
        _group(
            "Succeeded",
            "Running",
            _container(
                current=view["currentState"], **{k: v for k, v in view.items() if k != "currentState"}
            ),
        )
    )
    got = status.container_status(group, group.containers[0])
    assert got is not None
    assert (got.phase, got.reason, got.message, got.exit_code, got.restart_count) == expected


def test_container_state_without_a_word_is_creating() -> None:
    group = ContainerGroup.deserialize(_group("Succeeded", "Running", _container(current=_state(None))))
    got = status.container_status(group, group.containers[0])
    assert got is not None and got.reason == "ContainerCreating"


def test_running_container_with_a_previous_state() -> None:
    view = {"restartCount": 2, "previousState": ERROR}
    got = status.pod_status(_group("Succeeded", "Running", _container(current=RUNNING, **view)))
    (app,) = got.containers
    assert (app.phase, app.started_at, app.restart_count) == (
        ContainerPhase.RUNNING,
        _t("2024-05-01T10:00:00Z"),
        2,
    )
    assert app.last_state == TerminatedState(
        exit_code=2,
        reason="Error",
        started_at=_t("2024-05-01T10:00:00Z"),
        finished_at=_t("2024-05-01T10:01:00Z"),
    )
    assert app.container_id is not None and app.container_id.startswith("aci://")
    assert got.pod_ip == "10.1.0.4"
    assert got.start_time == _t("2024-05-01T10:00:00Z")


def test_previous_state_that_did_not_end_is_not_a_last_state() -> None:
    got = status.pod_status(
        _group("Succeeded", "Running", _container(current=RUNNING, previousState=WAITING))
    )
    assert got.containers[0].last_state is None


def test_start_time_is_the_earliest_container_start() -> None:
    late = _state("Running", startTime="2024-05-01T11:00:00Z")
    got = status.pod_status(_group("Succeeded", "Running", _container("a", late), _container("b", RUNNING)))
    assert got.start_time == _t("2024-05-01T10:00:00Z")


def test_no_ip_no_pod_ip() -> None:
    assert status.pod_status(_group("Succeeded", "Running", ip=None)).pod_ip is None


def test_init_containers() -> None:
    init = [_container("migrate", DONE), _container("seed", RUNNING)]
    got = status.pod_status(_group("Succeeded", "Pending", _container(current=WAITING), init=init))
    assert got.phase is PodPhase.PENDING
    assert [(c.name, c.phase) for c in got.init_containers] == [
        ("migrate", ContainerPhase.TERMINATED),
        ("seed", ContainerPhase.RUNNING),
    ]


def test_failed_init_container_fails_the_pod() -> None:
    init = [_container("migrate", ERROR)]
    got = status.pod_status(_group("Succeeded", "Failed", _container(current=WAITING), init=init))
    assert got.phase is PodPhase.FAILED
    assert got.init_containers[0].exit_code == 2
    (app,) = got.containers  # never started: shown terminated, not as still starting
    assert (app.phase, app.exit_code) == (ContainerPhase.TERMINATED, status.NEVER_STARTED_EXIT_CODE)


def test_failed_pod_lists_containers_without_an_instance_view() -> None:
    got = status.pod_status(_group("Failed", None, _container("a"), _container("b", WAITING)))
    assert [(c.name, c.phase, c.exit_code, c.reason) for c in got.containers] == [
        ("a", ContainerPhase.TERMINATED, 128, "ProvisioningFailed"),
        ("b", ContainerPhase.TERMINATED, 128, "ProvisioningFailed"),
    ]
    assert got.message == "ACI provisioningState Failed"


def test_failure_message_prefers_the_latest_warning() -> None:
    events = [
        {"name": "Pulling", "type": "Normal", "message": "pulling", "lastTimestamp": "2024-05-01T10:00:00Z"},
    ]
    container_events = [
        {
            "name": "Failed",
            "type": "Warning",
            "message": "image not found",
            "lastTimestamp": "2024-05-01T10:01:00Z",
        },
        {
            "name": "Pulling",
            "type": "Normal",
            "message": "pulling again",
            "lastTimestamp": "2024-05-01T10:02:00Z",
        },
    ]
    group = _group("Failed", "Pending", _container(current=WAITING, events=container_events), events=events)
    assert status.pod_status(group).message == "ACI provisioningState Failed: Failed: image not found"


def test_models_dicts_and_attribute_dicts_agree() -> None:
    wire = _group("Succeeded", "Running", _container(current=RUNNING, restartCount=1, previousState=ERROR))
    model = ContainerGroup.deserialize(wire)
    assert status.pod_status(model) == status.pod_status(wire) == status.pod_status(model.as_dict())


def test_events_have_a_stable_key() -> None:
    def group(count: int, last: str) -> dict[str, Any]:
        event = {"name": "BackOff", "type": "warning", "message": "Back-off restarting", "count": count,
                 "firstTimestamp": "2024-05-01T10:00:00Z", "lastTimestamp": last}  # fmt: skip
        odd = {"name": "Odd", "type": "Info", "message": "?"}
        return _group("Succeeded", "Running", _container(current=RUNNING, events=[event, odd]))

    first, second = (
        status.group_events(group(1, "2024-05-01T10:00:00Z")),
        status.group_events(group(4, "2024-05-01T10:09:00Z")),
    )
    assert [e.key for e in first] == [e.key for e in second]
    assert [(e.type, e.count) for e in second] == [
        ("Warning", 4),
        ("Normal", 1),
    ]  # the API server takes only these types
    assert second[0].last_time == _t("2024-05-01T10:09:00Z")


def test_init_container_events_have_their_field_path() -> None:
    init = [_container("migrate", DONE, events=[{"name": "Started", "type": "Normal", "message": "started"}])]
    (event,) = status.group_events(_group("Succeeded", "Running", _container(current=RUNNING), init=init))
    assert (event.container, event.field_path) == ("migrate", "spec.initContainers{migrate}")
