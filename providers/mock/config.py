"""The mock provider's config (``--provider-config``; the chart keeps a copy of its JSON schema)."""

from __future__ import annotations

from typing import Annotated, Literal

import pydantic

from vk_operator.provider import Quantity

TEN_YEARS = 10 * 365 * 24 * 3600  # seconds: the longest duration the mock accepts anywhere
MIN_LOG_INTERVAL = 0.001  # seconds: finer would make a `kubectl logs` stream endless

Seconds = Annotated[float, pydantic.Field(ge=0, le=TEN_YEARS)]
StatusMode = Literal["notify", "poll", "bulk"]


class FailureConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)

    fail_nth_create: list[pydantic.PositiveInt] = []  # 1-based create calls that fail
    fail_ratio: float = pydantic.Field(0.0, ge=0.0, le=1.0)  # share of calls that fail at random
    permanent: bool = False  # injected failures are permanent (pod Failed) or transient (retried)
    seed: int = 0


class MockConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False)

    cpu: Quantity = "20"
    memory: Quantity = "100Gi"
    pods: Quantity = "1000"
    gpu: Quantity | None = None
    start_latency_seconds: Seconds = 0.0
    stop_latency_seconds: Seconds = 0.0
    run_seconds: float | None = pydantic.Field(None, gt=0, le=TEN_YEARS)  # None: run until deleted
    exit_code: int = pydantic.Field(0, ge=0, le=255)
    pod_ip_prefix: str = "10.244.0."
    failures: FailureConfig = FailureConfig()
    state_file: str | None = None
    # 0: write the state file on every change; > 0: coalesce writes over this many seconds (the file
    # holds every pod, so with thousands of pods a write per change makes creation quadratic).
    state_save_interval_seconds: Seconds = 0.0
    # Log every call with its time.monotonic() (call_log, in the state file): for tests that check
    # what reached the "cloud" when; off by default (a state-file rewrite per status read).
    record_calls: bool = False
    log_interval_seconds: float = pydantic.Field(1.0, ge=MIN_LOG_INTERVAL, le=TEN_YEARS)
    # How the core learns of status changes: "notify" (the mock calls back, PodNotifier), "poll"
    # (get_pod_status per pod) or "bulk" (get_pod_statuses for all pods, BulkStatusProvider).
    status_mode: StatusMode = "notify"
    # Volume types the mock mounts itself (VolumeTypesProvider): source keys ("nfs") or "csi:<driver>".
    volume_types: list[str] = []
