"""The mock provider's own behaviour: lifetimes, failures, persistence (pure in-memory, no cluster)."""

from __future__ import annotations

import asyncio
import datetime
import json
import pathlib
from typing import Any

import pydantic
import pytest

from providers.mock import MockConfig, MockProvider, clock
from providers.mock.provider import ANNOTATION_PREFIX, CALL_LOG_LIMIT
from providers.mock.status import next_change
from vk_operator.provider import (
    BulkStatusProvider,
    Closeable,
    ContainerPhase,
    InvalidPodError,
    NotFoundError,
    PermanentError,
    PodNotifier,
    PodPhase,
    PodRef,
    PreparedPod,
    ProviderError,
    ResolvedVolume,
    Startable,
    ThrottledError,
    TransientError,
    VolumeTypesProvider,
    declared_volume_types,
)

REF = PodRef("ns", "p-u1", "u1")


def _prepared(
    uid: str = "u1",
    restart: str = "Always",
    init: int = 0,
    volumes: dict[str, ResolvedVolume] | None = None,
    **annotations: str,
) -> PreparedPod:
    pod: dict[str, Any] = {
        "metadata": {
            "namespace": "ns",
            "name": f"p-{uid}",
            "uid": uid,
            "annotations": {ANNOTATION_PREFIX + k.replace("_", "-"): v for k, v in annotations.items()},
        },
        "spec": {
            "restartPolicy": restart,
            "containers": [{"name": "c", "image": "img"}],
            "initContainers": [{"name": f"init{i}", "image": "init-img"} for i in range(init)],
            "volumes": [
                {"name": name, volume.kind: dict(volume.source)} for name, volume in (volumes or {}).items()
            ],
        },
    }
    return PreparedPod(pod, volumes or {}, frozenset())


def _ref(uid: str) -> PodRef:
    return PodRef("ns", f"p-{uid}", uid)


def _shift(provider: MockProvider, uid: str, seconds: float) -> None:
    """Pretend the pod was created `seconds` ago."""
    provider.pods[uid].created -= datetime.timedelta(seconds=seconds)


async def _status(provider: MockProvider, uid: str = "u1") -> Any:
    status = await provider.get_pod_status(_ref(uid))
    assert status is not None
    return status


async def test_running_pod_reports_ip_and_containers() -> None:
    provider = MockProvider(MockConfig())
    await provider.create_pod(_prepared())
    status = await _status(provider)
    assert status.phase is PodPhase.RUNNING
    assert status.pod_ip and status.pod_ip.startswith("10.244.0.") and status.pod_ips == (status.pod_ip,)
    [container] = status.containers
    assert container.phase is ContainerPhase.RUNNING and container.ready and container.started
    assert container.container_id == "mock://u1/c" and container.image_id.startswith("img@sha256:")
    assert await provider.list_pods() == [REF]


@pytest.mark.parametrize(
    ("restart", "exit_code", "phase", "restarts"),
    [
        ("Never", "0", PodPhase.SUCCEEDED, 0),
        ("Never", "2", PodPhase.FAILED, 0),
        ("OnFailure", "0", PodPhase.SUCCEEDED, 0),
        ("OnFailure", "1", PodPhase.RUNNING, 2),
        ("Always", "0", PodPhase.RUNNING, 2),
    ],
)
async def test_container_lifetime_by_restart_policy(
    restart: str, exit_code: str, phase: PodPhase, restarts: int
) -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared(restart=restart, run_seconds="10", exit_code=exit_code))
    _shift(provider, "u1", 25)
    status = await _status(provider)
    assert status.phase is phase
    assert status.containers[0].restart_count == restarts


async def test_a_restarted_container_reports_its_previous_instance() -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared(restart="Always", run_seconds="10", exit_code="3"))
    _shift(provider, "u1", 25)
    created = provider.pods["u1"].created
    [container] = (await _status(provider)).containers
    assert container.phase is ContainerPhase.RUNNING and container.restart_count == 2
    assert container.started_at == created + datetime.timedelta(seconds=20)  # the current instance
    assert container.container_id == "mock://u1/c/2"
    last = container.last_state
    assert last is not None and (last.exit_code, last.reason) == (3, "Error")
    assert (last.started_at, last.finished_at) == (
        created + datetime.timedelta(seconds=10),
        created + datetime.timedelta(seconds=20),
    )
    assert last.container_id == "mock://u1/c/1"


async def test_init_containers_run_in_order_before_the_app() -> None:
    provider = MockProvider(MockConfig(start_latency_seconds=2))
    await provider.create_pod(_prepared(init=2, init_seconds="10"))

    before = await _status(provider)  # the sandbox is not up yet
    assert before.phase is PodPhase.PENDING and before.pod_ip is None
    assert [c.reason for c in before.init_containers] == ["PodInitializing", "PodInitializing"]

    _shift(provider, "u1", 7)
    created = provider.pods["u1"].created
    first = await _status(provider)
    assert first.phase is PodPhase.PENDING and first.pod_ip
    assert first.start_time == created + datetime.timedelta(seconds=2)
    assert [c.phase for c in first.init_containers] == [ContainerPhase.RUNNING, ContainerPhase.WAITING]
    assert first.containers[0].phase is ContainerPhase.WAITING
    assert first.containers[0].reason == "PodInitializing"

    _shift(provider, "u1", 10)
    second = await _status(provider)
    done, running = second.init_containers
    assert (done.phase, done.exit_code, done.reason) == (ContainerPhase.TERMINATED, 0, "Completed")
    assert running.phase is ContainerPhase.RUNNING

    _shift(provider, "u1", 10)
    created = provider.pods["u1"].created
    app = await _status(provider)
    assert app.phase is PodPhase.RUNNING
    assert [c.phase for c in app.init_containers] == [ContainerPhase.TERMINATED] * 2
    assert [c.finished_at for c in app.init_containers] == [
        created + datetime.timedelta(seconds=12),
        created + datetime.timedelta(seconds=22),
    ]
    assert app.containers[0].started_at == created + datetime.timedelta(seconds=22)


async def test_init_containers_of_zero_seconds_complete_at_once() -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared(init=1))
    status = await _status(provider)
    assert status.phase is PodPhase.RUNNING
    assert status.init_containers[0].phase is ContainerPhase.TERMINATED
    assert status.init_containers[0].reason == "Completed"


async def test_unready_containers_follow_the_annotation_through_updates() -> None:
    provider = MockProvider()
    called: list[PodRef] = []
    assert isinstance(provider, PodNotifier)
    provider.notify_pods(called.append)
    await provider.create_pod(_prepared(unready_containers="other, c"))
    assert (await _status(provider)).containers[0].ready is False
    await provider.update_pod(_prepared())
    await asyncio.sleep(0)
    assert called == [REF]  # an update may change readiness: the core is told
    assert (await _status(provider)).containers[0].ready is True


async def test_start_latency_keeps_the_pod_pending() -> None:
    provider = MockProvider(MockConfig(start_latency_seconds=30))
    await provider.create_pod(_prepared())
    status = await _status(provider)
    assert status.phase is PodPhase.PENDING
    assert status.containers[0].reason == "ContainerCreating"


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("run-seconds", "0", "greater than 0"),
        ("run-seconds", "nan", "finite"),
        ("run-seconds", "inf", "finite"),
        ("run-seconds", "-inf", "finite"),
        ("run-seconds", "1e300", "at most"),
        ("run-seconds", "-5", "negative"),
        ("run-seconds", "soon", "number of seconds"),
        ("start-seconds", "nan", "finite"),
        ("stop-seconds", "-0.5", "negative"),
        ("init-seconds", "1e12", "at most"),
        ("vanish-seconds", "inf", "finite"),
        ("retry-after-seconds", "-1", "negative"),
        ("log-interval-seconds", "0", "at least"),
        ("exit-code", "256", "0 to 255"),
        ("exit-code", "-1", "0 to 255"),
        ("exit-code", "1.5", "integer"),
        ("fail-creates", "-1", "integer"),
        ("hang-creates", "2.5", "integer"),
        ("throttle-creates", "1e9", "integer"),
        ("fail-permanent", "yes", '"true" or "false"'),
        ("run-second", "10", "unknown mock annotation"),
    ],
)
async def test_bad_annotations_fail_the_pod_naming_the_annotation(name: str, value: str, why: str) -> None:
    provider = MockProvider()
    pod = _prepared()
    pod.pod["metadata"]["annotations"][ANNOTATION_PREFIX + name] = value
    with pytest.raises(InvalidPodError) as error:
        await provider.create_pod(pod)
    assert error.value.permanent
    assert error.value.field == f"metadata.annotations['mock.vk-operator.io/{name}']"
    assert why in error.value.message
    assert provider.pods == {} and provider.calls["create"] == {"u1": 1}


@pytest.mark.parametrize(
    ("name", "value"),
    [("run-seconds", "315360000"), ("run-seconds", "0.001"), ("exit-code", "255"), ("start-seconds", "0")],
)
async def test_edge_values_are_accepted(name: str, value: str) -> None:
    provider = MockProvider()
    pod = _prepared()
    pod.pod["metadata"]["annotations"][ANNOTATION_PREFIX + name] = value
    await provider.create_pod(pod)
    assert (await _status(provider)).phase is not None


async def test_an_update_with_a_bad_annotation_is_refused() -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared())
    with pytest.raises(InvalidPodError, match="finite"):
        await provider.update_pod(_prepared(log_interval_seconds="nan"))
    with pytest.raises(NotFoundError):
        await provider.update_pod(_prepared("other"))


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"run_seconds": float("nan")}, "run_seconds"),
        ({"start_latency_seconds": float("inf")}, "start_latency_seconds"),
        ({"run_seconds": 0}, "run_seconds"),
        ({"run_seconds": 1e300}, "run_seconds"),
        ({"exit_code": 256}, "exit_code"),
        ({"log_interval_seconds": 0}, "log_interval_seconds"),
        ({"failures": {"fail_ratio": float("nan")}}, "failures.fail_ratio"),
        ({"status_mode": "push"}, "status_mode"),
    ],
)
def test_config_rejects_non_finite_and_out_of_range_values(data: dict[str, Any], field: str) -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        MockConfig.model_validate(data)
    assert {".".join(str(p) for p in e["loc"]) for e in error.value.errors()} == {field}


def test_config_rejects_bad_values_naming_each_field() -> None:
    with pytest.raises(pydantic.ValidationError) as error:
        MockConfig.model_validate({"start_latency_seconds": -1, "failures": {"fail_ratio": 2}, "bogus": 1})
    fields = {".".join(str(p) for p in e["loc"]) for e in error.value.errors()}
    assert fields == {"start_latency_seconds", "failures.fail_ratio", "bogus"}


# -- idempotence, deletes ----------------------------------------------------------------------------
async def test_create_is_idempotent() -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared())
    created = provider.pods["u1"].created
    await provider.create_pod(_prepared())
    assert list(provider.pods) == ["u1"] and provider.pods["u1"].created == created
    assert provider.calls["create"] == {"u1": 2} and provider.calls["created"] == {"u1": 1}
    assert provider.call_counts["create_pod"] == 2


async def test_deleting_an_unknown_pod_succeeds() -> None:
    provider = MockProvider()
    await provider.delete_pod(PodRef("ns", "gone", "nope"))
    assert provider.calls["delete"] == {"nope": 1}


# -- status modes and capabilities -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "notifier", "bulk"),
    [(None, True, False), ("notify", True, False), ("poll", False, False), ("bulk", False, True)],
)
def test_status_modes_are_capabilities(mode: str | None, notifier: bool, bulk: bool) -> None:
    config = MockConfig() if mode is None else MockConfig(status_mode=mode)
    provider = MockProvider(config, "node-a")
    assert isinstance(provider, MockProvider) and provider.node_name == "node-a"
    assert isinstance(provider, PodNotifier) is notifier
    assert isinstance(provider, BulkStatusProvider) is bulk
    assert isinstance(provider, Startable) and isinstance(provider, Closeable)
    assert provider.config is config


async def test_bulk_mode_reports_every_pod_by_uid() -> None:
    provider = MockProvider(MockConfig(status_mode="bulk"))
    assert isinstance(provider, BulkStatusProvider)
    await provider.create_pod(_prepared("a"))
    await provider.create_pod(_prepared("b", vanish_seconds="5"))
    _shift(provider, "b", 6)
    statuses = await provider.get_pod_statuses()
    assert set(statuses) == {"a"} and statuses["a"].phase is PodPhase.RUNNING
    assert provider.call_counts["get_pod_statuses"] == 1 and provider.call_counts["get_pod_status"] == 0


async def test_the_status_mode_cannot_change_live() -> None:
    provider = MockProvider()
    await provider.reconfigure(MockConfig(cpu="8"))
    assert (await provider.capacity()).cpu == "8"
    with pytest.raises(PermanentError, match="status_mode"):
        await provider.reconfigure(MockConfig(status_mode="poll"))


# -- failure injection ------------------------------------------------------------------------------
async def test_failure_injection_transient_and_permanent() -> None:
    provider = MockProvider(MockConfig(failures={"fail_nth_create": [1]}))
    with pytest.raises(TransientError) as first:
        await provider.create_pod(_prepared("a"))
    assert not first.value.permanent
    await provider.create_pod(_prepared("b"))  # the second call succeeds
    with pytest.raises(PermanentError):
        await provider.create_pod(_prepared("c", fail_permanent="true"))
    with pytest.raises(TransientError, match="attempt 1"):
        await provider.create_pod(_prepared("d", fail_creates="1"))
    await provider.create_pod(_prepared("d", fail_creates="1"))


async def test_fail_ratio_is_deterministic_for_a_seed() -> None:
    async def outcomes() -> list[bool]:
        provider = MockProvider(MockConfig(failures={"fail_ratio": 0.5, "seed": 7}))
        results = []
        for i in range(20):
            try:
                await provider.create_pod(_prepared(f"u{i}"))
                results.append(True)
            except ProviderError:
                results.append(False)
        return results

    first, second = await outcomes(), await outcomes()
    assert first == second and 0 < sum(first) < 20


async def test_hanging_creates_never_return_but_the_pod_exists() -> None:
    provider = MockProvider()
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(provider.create_pod(_prepared(hang_creates="2")), 0.05)
    await asyncio.wait_for(provider.create_pod(_prepared(hang_creates="2")), 1)
    assert provider.calls["create"] == {"u1": 3} and provider.calls["created"] == {"u1": 1}


async def test_hanging_status_and_deletes() -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared(hang_status="1", hang_deletes="1"))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.get_pod_status(REF), 0.05)
    assert await asyncio.wait_for(provider.get_pod_status(REF), 1) is not None
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(provider.delete_pod(REF), 0.05)
    assert "u1" in provider.pods  # the hanging delete deleted nothing
    await asyncio.wait_for(provider.delete_pod(REF), 1)
    assert provider.pods == {}


async def test_unexpected_errors_and_throttling_of_creates() -> None:
    provider = MockProvider()
    with pytest.raises(RuntimeError, match="injected unexpected error") as unexpected:
        await provider.create_pod(_prepared("a", raise_creates="1"))
    assert not isinstance(unexpected.value, ProviderError)
    await provider.create_pod(_prepared("a", raise_creates="1"))

    throttled = _prepared("b", throttle_creates="2", retry_after_seconds="3")
    for _ in range(2):
        with pytest.raises(ThrottledError) as error:
            await provider.create_pod(throttled)
        assert error.value.retry_after == 3.0 and not error.value.permanent
    await provider.create_pod(throttled)
    assert provider.calls["created"] == {"a": 1, "b": 1}


# -- call log, persistence ----------------------------------------------------------------------------
async def test_calls_are_counted_and_logged_with_monotonic_times() -> None:
    provider = MockProvider(MockConfig(record_calls=True))
    before = clock.monotonic()
    await provider.allocate_pod_ip(REF)
    await provider.create_pod(_prepared())
    await provider.get_pod_status(REF)
    await provider.list_pods()
    await provider.capacity()
    await provider.delete_pod(REF)
    assert [(method, uid) for _, method, uid in provider.call_log] == [
        ("allocate_pod_ip", "u1"),
        ("create_pod", "u1"),
        ("get_pod_status", "u1"),
        ("list_pods", ""),
        ("capacity", ""),
        ("delete_pod", "u1"),
    ]
    times = [at for at, _, _ in provider.call_log]
    assert before <= times[0] and times == sorted(times) and times[-1] <= clock.monotonic()
    assert provider.call_counts["create_pod"] == 1 and provider.call_counts["update_pod"] == 0


async def test_the_call_log_keeps_the_last_calls_only() -> None:
    provider = MockProvider(MockConfig(record_calls=True))
    for _ in range(CALL_LOG_LIMIT + 5):
        await provider.list_pods()
    assert len(provider.call_log) == CALL_LOG_LIMIT
    assert provider.call_counts["list_pods"] == CALL_LOG_LIMIT + 5


async def test_state_survives_a_restart_with_calls_counts_and_log(tmp_path: pathlib.Path) -> None:
    config = MockConfig(state_file=str(tmp_path / "state.json"), record_calls=True)
    provider = MockProvider(config)
    await provider.start()
    await provider.create_pod(_prepared("a"))
    await provider.create_pod(_prepared("a"))
    await provider.create_pod(_prepared("b"))
    await provider.delete_pod(_ref("b"))
    await provider.get_pod_status(_ref("a"))  # a call that changes nothing is persisted too
    saved = json.loads((tmp_path / "state.json").read_text())
    assert set(saved) == {"pods", "calls", "ips", "call_counts", "call_log"}
    assert saved["calls"] == {"create": {"a": 2, "b": 1}, "created": {"a": 1, "b": 1}, "delete": {"b": 1}}
    assert saved["call_counts"]["get_pod_status"] == 1 and saved["call_log"][-1][1:] == [
        "get_pod_status",
        "a",
    ]

    again = MockProvider(config)
    assert set(again.pods) == {"a"}
    assert again.calls == provider.calls
    assert again.call_counts == provider.call_counts and again.call_log == provider.call_log
    await again.create_pod(_prepared("a"))  # adopted: never created twice
    assert again.calls["create"]["a"] == 3 and again.calls["created"]["a"] == 1


async def test_state_file_holds_a_pod_per_line_and_a_hand_written_one_loads_too(
    tmp_path: pathlib.Path,
) -> None:
    state = tmp_path / "state.json"
    provider = MockProvider(MockConfig(state_file=str(state)))
    for name in ("a", "b", "c"):
        await provider.create_pod(_prepared(name))
    lines = state.read_text().splitlines()
    assert len(lines) == 5  # header, one line per pod, calls and IPs
    assert set(json.loads(state.read_text())["pods"]) == {"a", "b", "c"}  # still one JSON document
    assert set(MockProvider(MockConfig(state_file=str(state))).pods) == {"a", "b", "c"}

    state.write_text(json.dumps(json.loads(state.read_text()), indent=2))  # as a person might write it
    reloaded = MockProvider(MockConfig(state_file=str(state)))
    assert set(reloaded.pods) == {"a", "b", "c"} and reloaded.calls["create"] == {"a": 1, "b": 1, "c": 1}

    state.write_text("\n".join(lines[:2]) + "\n")  # cut off after the first pod
    with pytest.raises(ValueError, match="truncated"):
        MockProvider(MockConfig(state_file=str(state)))


async def test_an_older_state_file_without_the_new_fields_loads(tmp_path: pathlib.Path) -> None:
    state = tmp_path / "state.json"
    provider = MockProvider(MockConfig(state_file=str(state)))
    await provider.create_pod(_prepared())
    saved = json.loads(state.read_text())
    for key in ("call_counts", "call_log"):
        del saved[key]
    del saved["calls"]["created"]
    for field in ("init_seconds", "hang_status", "hang_deletes", "passthrough"):
        del saved["pods"]["u1"][field]
    state.write_text(json.dumps(saved))
    old = MockProvider(MockConfig(state_file=str(state)))
    assert set(old.pods) == {"u1"} and old.calls["created"] == {} and old.call_log == []
    assert (await _status(old)).phase is PodPhase.RUNNING


async def test_start_fails_with_one_line_when_the_state_cannot_be_written(tmp_path: pathlib.Path) -> None:
    await MockProvider(MockConfig(state_file=str(tmp_path / "state.json"))).start()
    await MockProvider().start()
    missing = tmp_path / "nowhere" / "state.json"
    with pytest.raises(PermanentError, match=r"state_file directory .*nowhere does not exist") as error:
        await MockProvider(MockConfig(state_file=str(missing))).start()
    assert "\n" not in str(error.value)


async def test_vanished_pod_is_gone() -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared(vanish_seconds="5"))
    _shift(provider, "u1", 6)
    assert await provider.get_pod_status(REF) is None
    assert await provider.list_pods() == []


# -- volumes of declared types ----------------------------------------------------------------------
async def test_declared_volume_types_reach_the_provider_and_are_recorded(tmp_path: pathlib.Path) -> None:
    config = MockConfig(volume_types=["nfs", "csi:file.csi.azure.com"], state_file=str(tmp_path / "s.json"))
    provider = MockProvider(config)
    assert isinstance(provider, VolumeTypesProvider)
    assert declared_volume_types(provider) == {"nfs", "csi:file.csi.azure.com"}
    assert declared_volume_types(MockProvider()) == frozenset()
    volumes = {
        "share": ResolvedVolume("share", "nfs", {}, False, source={"server": "nfs.local", "path": "/x"}),
        "azure": ResolvedVolume("azure", "csi", {}, False, source={"driver": "file.csi.azure.com"}),
        "conf": ResolvedVolume("conf", "configMap", {"k": b"v"}, False),
    }
    await provider.create_pod(_prepared(volumes=volumes))
    expected = {
        "share": {"kind": "nfs", "source": {"server": "nfs.local", "path": "/x"}},
        "azure": {"kind": "csi", "source": {"driver": "file.csi.azure.com"}},
    }
    assert provider.pods["u1"].passthrough == expected
    assert provider.pods["u1"].volumes == {"conf": {"k": "v"}}
    assert json.loads((tmp_path / "s.json").read_text())["pods"]["u1"]["passthrough"] == expected


async def test_a_volume_type_the_mock_did_not_declare_fails_the_pod() -> None:
    provider = MockProvider(MockConfig(volume_types=["nfs"]))
    volumes = {"disk": ResolvedVolume("disk", "azureDisk", {}, False, source={"diskName": "d"})}
    with pytest.raises(InvalidPodError) as error:
        await provider.create_pod(_prepared(volumes=volumes))
    assert error.value.field == "spec.volumes[0].azureDisk"


# -- logs of init containers --------------------------------------------------------------------------
async def test_init_containers_have_logs() -> None:
    from vk_operator.provider import LogOptions

    provider = MockProvider(MockConfig(log_interval_seconds=1))
    await provider.create_pod(_prepared(init=1, init_seconds="3"))
    _shift(provider, "u1", 10)
    lines = [e.text async for e in provider.container_logs(REF, "init0", LogOptions())]
    assert lines == [f"p-u1 init0 line {n}" for n in (1, 2, 3)]


# -- notifications ----------------------------------------------------------------------------------
async def test_the_next_change_covers_init_containers_exits_restarts_and_vanishing() -> None:
    provider = MockProvider(MockConfig(start_latency_seconds=1))
    await provider.create_pod(_prepared(init=2, init_seconds="2", run_seconds="5", vanish_seconds="100"))
    mock = provider.pods["u1"]
    spec = mock.pod["spec"]
    t0 = mock.created

    def after(seconds: float) -> float | None:
        moment = next_change(mock, spec, t0 + datetime.timedelta(seconds=seconds))
        return None if moment is None else (moment - t0).total_seconds()

    # started 1, init done 3 and 5 (the app starts), exits/restarts every 5 s, vanishes at 100
    assert [after(s) for s in (0, 1, 3, 5, 9.5, 10, 99)] == [1, 3, 5, 10, 10, 15, 100]
    assert after(100) is None


def test_a_timer_that_fires_early_by_the_status_clock_is_set_again_for_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvloop's timers run on a cached millisecond clock: one may fire just before the moment the
    # status (wall clock) changes; calling back then would report no change and never call again.
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    now = [start]
    timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    class Handle:
        def cancel(self) -> None:
            pass

    class Loop:
        def call_later(self, delay: float, callback: Any, *args: Any) -> Handle:
            timers.append((delay, callback, args))
            return Handle()

    monkeypatch.setattr(clock, "now", lambda: now[0])
    monkeypatch.setattr(asyncio, "get_running_loop", lambda: Loop())
    provider = MockProvider(MockConfig(start_latency_seconds=1))
    called: list[PodRef] = []
    assert isinstance(provider, PodNotifier)
    provider.notify_pods(called.append)
    creating = provider.create_pod(_prepared())  # driven by hand: the loop is patched away
    with pytest.raises(StopIteration):
        creating.send(None)

    [(delay, callback, args)] = timers  # armed for the start, 1 s after creation
    assert delay == 1.0
    timers.clear()
    now[0] = start + datetime.timedelta(seconds=0.999)  # the timer fires 1 ms early
    callback(*args)
    assert called == []
    [(delay, callback, args)] = timers
    assert delay == pytest.approx(0.001)
    timers.clear()
    now[0] = start + datetime.timedelta(seconds=1)
    callback(*args)
    assert called == [REF]
    assert timers == []  # runs until deleted: nothing more changes by itself


async def test_the_notifying_mock_calls_back_when_containers_exit() -> None:
    provider = MockProvider()
    assert isinstance(provider, PodNotifier)
    changed = asyncio.Event()
    provider.notify_pods(lambda ref: changed.set())
    await provider.create_pod(_prepared(restart="Never", run_seconds="0.1"))
    async with asyncio.timeout(2):
        await changed.wait()
    assert (await _status(provider)).phase is PodPhase.SUCCEEDED
    await provider.close()


async def test_polling_mocks_never_call_back() -> None:
    for mode in ("poll", "bulk"):
        provider = MockProvider(MockConfig(status_mode=mode))
        assert not hasattr(provider, "notify_pods")
        await provider.create_pod(_prepared(restart="Never", run_seconds="0.05"))
        await asyncio.sleep(0.1)
        assert (await _status(provider)).phase is PodPhase.SUCCEEDED


async def test_calls_are_not_logged_unless_asked() -> None:
    provider = MockProvider()
    await provider.list_pods()
    assert provider.call_counts["list_pods"] == 1
    assert provider.call_log == []
