"""The mock provider's own behaviour: lifetimes, failures, persistence (pure in-memory, no cluster)."""

from __future__ import annotations

import datetime
import json
import pathlib
from typing import Any

import pytest

from providers.mock import MockConfig, MockProvider
from providers.mock.provider import ANNOTATION_PREFIX
from vk_operator.domain.model import ContainerPhase, PodPhase, PodRef, ProviderError
from vk_operator.domain.prepared import PreparedPod


def _prepared(uid: str = "u1", restart: str = "Always", **annotations: str) -> PreparedPod:
    pod: dict[str, Any] = {
        "metadata": {
            "namespace": "ns",
            "name": f"p-{uid}",
            "uid": uid,
            "annotations": {ANNOTATION_PREFIX + k.replace("_", "-"): v for k, v in annotations.items()},
        },
        "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": "img"}]},
    }
    return PreparedPod(pod, {}, frozenset())


def _shift(provider: MockProvider, uid: str, seconds: float) -> None:
    """Pretend the pod was created `seconds` ago."""
    provider.pods[uid].created -= datetime.timedelta(seconds=seconds)


async def test_running_pod_reports_ip_and_containers() -> None:
    provider = MockProvider(MockConfig())
    await provider.create_pod(_prepared())
    status = await provider.get_pod_status(PodRef("ns", "p-u1", "u1"))
    assert status is not None and status.phase is PodPhase.RUNNING
    assert status.pod_ip and status.pod_ip.startswith("10.244.0.")
    assert [c.phase for c in status.containers] == [ContainerPhase.RUNNING]
    assert await provider.list_pods() == [PodRef("ns", "p-u1", "u1")]


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
    status = await provider.get_pod_status(PodRef("ns", "p-u1", "u1"))
    assert status is not None and status.phase is phase
    assert status.containers[0].restart_count == restarts


async def test_start_latency_keeps_the_pod_pending() -> None:
    provider = MockProvider(MockConfig(start_latency_seconds=30))
    await provider.create_pod(_prepared())
    status = await provider.get_pod_status(PodRef("ns", "p-u1", "u1"))
    assert status is not None and status.phase is PodPhase.PENDING
    assert status.containers[0].reason == "ContainerCreating"


async def test_failure_injection_transient_and_permanent() -> None:
    provider = MockProvider(MockConfig(failures={"fail_nth_create": [1]}))  # type: ignore[arg-type]
    with pytest.raises(ProviderError) as first:
        await provider.create_pod(_prepared("a"))
    assert not first.value.permanent
    await provider.create_pod(_prepared("b"))  # the second call succeeds
    with pytest.raises(ProviderError) as permanent:
        await provider.create_pod(_prepared("c", fail_permanent="true"))
    assert permanent.value.permanent


async def test_fail_ratio_is_deterministic_for_a_seed() -> None:
    async def outcomes() -> list[bool]:
        provider = MockProvider(MockConfig(failures={"fail_ratio": 0.5, "seed": 7}))  # type: ignore[arg-type]
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


async def test_state_survives_a_restart_and_counts_calls(tmp_path: pathlib.Path) -> None:
    config = MockConfig(state_file=str(tmp_path / "state.json"))
    provider = MockProvider(config)
    await provider.create_pod(_prepared("a"))
    await provider.create_pod(_prepared("b"))
    await provider.delete_pod({"metadata": {"uid": "b"}})
    again = MockProvider(config)
    assert set(again.pods) == {"a"}
    assert again.calls["create"] == {"a": 1, "b": 1} and again.calls["delete"] == {"b": 1}
    with pytest.raises(ProviderError, match="created twice"):
        await again.create_pod(_prepared("a"))


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


async def test_vanished_pod_is_gone() -> None:
    provider = MockProvider()
    await provider.create_pod(_prepared(vanish_seconds="5"))
    _shift(provider, "u1", 6)
    assert await provider.get_pod_status(PodRef("ns", "p-u1", "u1")) is None
    assert await provider.list_pods() == []


def test_config_rejects_bad_values_naming_each_field() -> None:
    import pydantic

    with pytest.raises(pydantic.ValidationError) as error:
        MockConfig.model_validate({"start_latency_seconds": -1, "failures": {"fail_ratio": 2}, "bogus": 1})
    fields = {".".join(str(p) for p in e["loc"]) for e in error.value.errors()}
    assert fields == {"start_latency_seconds", "failures.fail_ratio", "bogus"}


def test_a_timer_that_fires_early_by_the_status_clock_is_set_again_for_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # uvloop's timers run on a cached millisecond clock: one may fire just before the moment the
    # status (wall clock) changes; calling back then would report no change and never call again.
    from providers.mock import provider as module

    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    clock = [start]
    timers: list[tuple[float, Any, tuple[Any, ...]]] = []

    class Loop:
        def call_later(self, delay: float, callback: Any, *args: Any) -> None:
            timers.append((delay, callback, args))

    monkeypatch.setattr(module, "_now", lambda: clock[0])
    monkeypatch.setattr(module.asyncio, "get_running_loop", lambda: Loop())
    provider = MockProvider()
    called: list[PodRef] = []
    provider.notify_pods(called.append)
    ref = PodRef("ns", "p-u1", "u1")

    provider._notify_at(start + datetime.timedelta(seconds=1), ref)
    [(delay, callback, args)] = timers
    assert delay == 1.0
    timers.clear()
    clock[0] = start + datetime.timedelta(seconds=0.999)  # the timer fires 1 ms early
    callback(*args)
    assert called == []
    [(delay, callback, args)] = timers
    assert delay == pytest.approx(0.001)
    clock[0] = start + datetime.timedelta(seconds=1)
    callback(*args)
    assert called == [ref]
