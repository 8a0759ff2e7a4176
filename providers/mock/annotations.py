"""Per-pod behaviour from annotations (prefix ``mock.vk-operator.io/``), validated up front.

==========================  =======================================================================
``run-seconds``             containers exit after this long (> 0; config ``run_seconds``)
``exit-code``               their exit code, 0..255 (config ``exit_code``)
``start-seconds``           create-to-start latency (config ``start_latency_seconds``)
``stop-seconds``            delete latency (config ``stop_latency_seconds``)
``init-seconds``            how long each init container runs, in order, before the app (default 0)
``vanish-seconds``          the pod disappears from the provider this long after its creation
``log-interval-seconds``    one log line per interval (>= 0.001; config ``log_interval_seconds``)
``unready-containers``      comma list of container names reported ``ready=False`` while listed
``fail-permanent``          ``"true"``: every create fails permanently
``fail-creates``            the first N creates fail with a TransientError
``raise-creates``           the first N creates raise a plain RuntimeError (not a ProviderError)
``throttle-creates``        the first N creates raise ThrottledError(retry_after=``retry-after-seconds``)
``retry-after-seconds``     see ``throttle-creates`` (default: none given)
``hang-creates``            the first N creates never return (the pod *is* created: the answer is lost)
``hang-status``             the first N get_pod_status calls of the pod never return
``hang-deletes``            the first N deletes never return (before anything is deleted)
==========================  =======================================================================

Durations are seconds: finite, >= 0, at most 10 years; counts are integers 0..1,000,000. A bad
value, or an unknown name under the prefix, fails the create (or update) with
:class:`InvalidPodError` naming the annotation: the pod fails instead of being retried forever.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from providers.mock.config import MIN_LOG_INTERVAL, TEN_YEARS, MockConfig
from vk_operator.provider import InvalidPodError

ANNOTATION_PREFIX = "mock.vk-operator.io/"
MAX_COUNT = 1_000_000

_DURATIONS = frozenset(
    {
        "run-seconds",
        "start-seconds",
        "stop-seconds",
        "init-seconds",
        "vanish-seconds",
        "log-interval-seconds",
        "retry-after-seconds",
    }
)
_COUNTS = frozenset(
    {"fail-creates", "raise-creates", "throttle-creates", "hang-creates", "hang-status", "hang-deletes"}
)
KNOWN = _DURATIONS | _COUNTS | {"exit-code", "fail-permanent", "unready-containers"}


@dataclasses.dataclass(frozen=True)
class PodSettings:
    run_seconds: float | None
    exit_code: int
    start_seconds: float
    stop_seconds: float
    init_seconds: float
    vanish_seconds: float | None
    log_interval_seconds: float
    unready_containers: frozenset[str]
    fail_permanent: bool
    fail_creates: int
    raise_creates: int
    throttle_creates: int
    retry_after_seconds: float | None
    hang_creates: int
    hang_status: int
    hang_deletes: int


def field(name: str) -> str:
    """The pod field an annotation is, as InvalidPodError names it."""
    return f"metadata.annotations['{ANNOTATION_PREFIX}{name}']"


def _invalid(name: str, why: str) -> InvalidPodError:
    return InvalidPodError(field(name), why)


def _duration(name: str, raw: str, *, positive: bool = False, minimum: float = 0.0) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise _invalid(name, f"must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value):
        raise _invalid(name, f"must be a finite number of seconds, not {raw!r}")
    if value < 0:
        raise _invalid(name, f"must not be negative, not {raw!r}")
    if positive and value == 0:
        raise _invalid(name, "must be greater than 0")
    if value < minimum:
        raise _invalid(name, f"must be at least {minimum}, not {raw!r}")
    if value > TEN_YEARS:
        raise _invalid(name, f"must be at most {TEN_YEARS} (10 years), not {raw!r}")
    return value


def _integer(name: str, raw: str, low: int, high: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise _invalid(name, f"must be an integer from {low} to {high}, not {raw!r}") from None
    if not low <= value <= high:
        raise _invalid(name, f"must be an integer from {low} to {high}, not {raw!r}")
    return value


def _boolean(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered not in ("true", "false"):
        raise _invalid(name, f'must be "true" or "false", not {raw!r}')
    return lowered == "true"


def mock_annotations(pod: Mapping[str, Any]) -> dict[str, str]:
    """The pod's annotations under the mock's prefix, by name without the prefix."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    return {
        key[len(ANNOTATION_PREFIX) :]: str(value)
        for key, value in annotations.items()
        if key.startswith(ANNOTATION_PREFIX)
    }


def pod_settings(pod: Mapping[str, Any], config: MockConfig) -> PodSettings:
    """The pod's settings: its annotations, else the config. Raises InvalidPodError."""
    given = mock_annotations(pod)
    for name in sorted(given):
        if name not in KNOWN:
            raise _invalid(name, f"unknown mock annotation (known: {', '.join(sorted(KNOWN))})")

    def seconds(name: str, default: float | None, **limits: Any) -> float | None:
        raw = given.get(name)
        return default if raw is None else _duration(name, raw, **limits)

    def count(name: str) -> int:
        raw = given.get(name)
        return 0 if raw is None else _integer(name, raw, 0, MAX_COUNT)

    raw_exit = given.get("exit-code")
    unready = given.get("unready-containers", "")
    log_interval = seconds("log-interval-seconds", config.log_interval_seconds, minimum=MIN_LOG_INTERVAL)
    start = seconds("start-seconds", config.start_latency_seconds)
    stop = seconds("stop-seconds", config.stop_latency_seconds)
    init = seconds("init-seconds", 0.0)
    assert log_interval is not None and start is not None and stop is not None and init is not None
    return PodSettings(
        run_seconds=seconds("run-seconds", config.run_seconds, positive=True),
        exit_code=config.exit_code if raw_exit is None else _integer("exit-code", raw_exit, 0, 255),
        start_seconds=start,
        stop_seconds=stop,
        init_seconds=init,
        vanish_seconds=seconds("vanish-seconds", None),
        log_interval_seconds=log_interval,
        unready_containers=frozenset(n.strip() for n in unready.split(",") if n.strip()),
        fail_permanent=_boolean("fail-permanent", given["fail-permanent"])
        if "fail-permanent" in given
        else False,
        fail_creates=count("fail-creates"),
        raise_creates=count("raise-creates"),
        throttle_creates=count("throttle-creates"),
        retry_after_seconds=seconds("retry-after-seconds", None),
        hang_creates=count("hang-creates"),
        hang_status=count("hang-status"),
        hang_deletes=count("hang-deletes"),
    )


def unready_containers(pod: Mapping[str, Any]) -> frozenset[str]:
    """``unready-containers`` as it is now (read on every status: an update can change it)."""
    raw = mock_annotations(pod).get("unready-containers", "")
    return frozenset(n.strip() for n in raw.split(",") if n.strip())


def log_interval(pod: Mapping[str, Any], config: MockConfig) -> float:
    """``log-interval-seconds`` as it is now, else the config's (validated when the pod was stored)."""
    raw = mock_annotations(pod).get("log-interval-seconds")
    if raw is None:
        return config.log_interval_seconds
    try:
        return _duration("log-interval-seconds", raw, minimum=MIN_LOG_INTERVAL)
    except InvalidPodError:
        return config.log_interval_seconds
