"""Resource usage: what a provider reports, rendered as the kubelet does.

Two renderings of the same numbers: the Summary API (``/stats/summary``, JSON of
``k8s.io/kubelet/pkg/apis/stats/v1alpha1``) and the resource metrics endpoint
(``/metrics/resource``, Prometheus text with the kubelet's metric names, labels and help texts,
which metrics-server and therefore ``kubectl top`` read). A virtual node has no usage of its own:
its figures are the sums over its pods.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Sequence
from typing import Any

from vk_operator.domain.model import PodRef


@dataclasses.dataclass(frozen=True)
class ContainerUsage:
    name: str
    start_time: datetime.datetime
    cpu_nano_cores: int  # current rate, in billionths of a core
    cpu_core_nano_seconds: int  # cumulative CPU time since the container started
    memory_working_set_bytes: int
    memory_usage_bytes: int | None = None
    memory_rss_bytes: int | None = None


@dataclasses.dataclass(frozen=True)
class PodUsage:
    ref: PodRef
    start_time: datetime.datetime
    time: datetime.datetime  # when the sample was taken
    containers: tuple[ContainerUsage, ...] = ()

    @property
    def cpu_nano_cores(self) -> int:
        return sum(c.cpu_nano_cores for c in self.containers)

    @property
    def cpu_core_nano_seconds(self) -> int:
        return sum(c.cpu_core_nano_seconds for c in self.containers)

    @property
    def memory_working_set_bytes(self) -> int:
        return sum(c.memory_working_set_bytes for c in self.containers)

    @property
    def memory_usage_bytes(self) -> int:
        return sum(c.memory_usage_bytes or c.memory_working_set_bytes for c in self.containers)


# -- Summary API ---------------------------------------------------------------------------------------
def _time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cpu(time: datetime.datetime, nano_cores: int, core_nano_seconds: int) -> dict[str, Any]:
    return {"time": _time(time), "usageNanoCores": nano_cores, "usageCoreNanoSeconds": core_nano_seconds}


def _memory(time: datetime.datetime, working_set: int, usage: int, rss: int | None = None) -> dict[str, Any]:
    memory: dict[str, Any] = {"time": _time(time), "usageBytes": usage, "workingSetBytes": working_set}
    if rss is not None:
        memory["rssBytes"] = rss
    return memory


def summary(
    node_name: str,
    node_start: datetime.datetime,
    now: datetime.datetime,
    pods: Sequence[PodUsage],
    memory_capacity_bytes: int | None = None,
) -> dict[str, Any]:
    """The kubelet's ``Summary`` object (stats/v1alpha1) for a node and its pods."""
    working_set = sum(p.memory_working_set_bytes for p in pods)
    node_memory = _memory(now, working_set, sum(p.memory_usage_bytes for p in pods))
    if memory_capacity_bytes is not None:
        node_memory["availableBytes"] = max(memory_capacity_bytes - working_set, 0)
    return {
        "node": {
            "nodeName": node_name,
            "startTime": _time(node_start),
            "cpu": _cpu(now, sum(p.cpu_nano_cores for p in pods), sum(p.cpu_core_nano_seconds for p in pods)),
            "memory": node_memory,
            "systemContainers": [],
        },
        "pods": [
            {
                "podRef": {"name": p.ref.name, "namespace": p.ref.namespace, "uid": p.ref.uid},
                "startTime": _time(p.start_time),
                "containers": [
                    {
                        "name": c.name,
                        "startTime": _time(c.start_time),
                        "cpu": _cpu(p.time, c.cpu_nano_cores, c.cpu_core_nano_seconds),
                        "memory": _memory(
                            p.time,
                            c.memory_working_set_bytes,
                            c.memory_usage_bytes or c.memory_working_set_bytes,
                            c.memory_rss_bytes,
                        ),
                    }
                    for c in p.containers
                ],
                "cpu": _cpu(p.time, p.cpu_nano_cores, p.cpu_core_nano_seconds),
                "memory": _memory(p.time, p.memory_working_set_bytes, p.memory_usage_bytes),
            }
            for p in pods
        ],
    }


# -- /metrics/resource ---------------------------------------------------------------------------------
# (name, type, stability, help) exactly as pkg/kubelet/metrics/collectors/resource_metrics.go declares.
_METRICS = {
    "container_cpu_usage_seconds_total": (
        "counter",
        "STABLE",
        "Cumulative cpu time consumed by the container in core-seconds",
    ),
    "container_memory_working_set_bytes": (
        "gauge",
        "STABLE",
        "Current working set of the container in bytes",
    ),
    "container_start_time_seconds": (
        "gauge",
        "STABLE",
        "Start time of the container since unix epoch in seconds",
    ),
    "node_cpu_usage_seconds_total": (
        "counter",
        "STABLE",
        "Cumulative cpu time consumed by the node in core-seconds",
    ),
    "node_memory_working_set_bytes": ("gauge", "STABLE", "Current working set of the node in bytes"),
    "pod_cpu_usage_seconds_total": (
        "counter",
        "STABLE",
        "Cumulative cpu time consumed by the pod in core-seconds",
    ),
    "pod_memory_working_set_bytes": ("gauge", "STABLE", "Current working set of the pod in bytes"),
    "resource_scrape_error": (
        "gauge",
        "STABLE",
        "1 if there was an error while getting container metrics, 0 otherwise",
    ),
    "scrape_error": (
        "gauge",
        "ALPHA",
        "(Deprecated since 1.29.0) 1 if there was an error while getting container metrics, 0 otherwise",
    ),
}

Sample = tuple[dict[str, str], float, datetime.datetime | None]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _line(name: str, labels: dict[str, str], value: float, time: datetime.datetime | None) -> str:
    label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    text = f"{name}{{{label_text}}} {_number(value)}" if labels else f"{name} {_number(value)}"
    if time is not None:
        text += f" {int(time.timestamp() * 1000)}"
    return text


def resource_metrics(
    now: datetime.datetime, pods: Iterable[PodUsage] | None, *, scrape_error: bool = False
) -> str:
    """Prometheus text exposition of the kubelet's resource metrics; ``pods=None``: nothing known."""
    samples: dict[str, list[Sample]] = {name: [] for name in _METRICS}
    error = 1.0 if scrape_error or pods is None else 0.0
    samples["scrape_error"].append(({}, error, None))
    samples["resource_scrape_error"].append(({}, error, None))
    if pods is not None:
        pods = list(pods)
        samples["node_cpu_usage_seconds_total"].append(
            ({}, sum(p.cpu_core_nano_seconds for p in pods) / 1e9, now)
        )
        samples["node_memory_working_set_bytes"].append(
            ({}, float(sum(p.memory_working_set_bytes for p in pods)), now)
        )
        for p in pods:
            pod_labels = {"pod": p.ref.name, "namespace": p.ref.namespace}
            samples["pod_cpu_usage_seconds_total"].append((pod_labels, p.cpu_core_nano_seconds / 1e9, p.time))
            samples["pod_memory_working_set_bytes"].append(
                (pod_labels, float(p.memory_working_set_bytes), p.time)
            )
            for c in p.containers:
                labels = {"container": c.name, **pod_labels}
                samples["container_cpu_usage_seconds_total"].append(
                    (labels, c.cpu_core_nano_seconds / 1e9, p.time)
                )
                samples["container_memory_working_set_bytes"].append(
                    (labels, float(c.memory_working_set_bytes), p.time)
                )
                samples["container_start_time_seconds"].append((labels, c.start_time.timestamp(), None))
    out: list[str] = []
    for name, (kind, stability, help_text) in _METRICS.items():
        if not samples[name]:
            continue
        out.append(f"# HELP {name} [{stability}] {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(_line(name, labels, value, time) for labels, value, time in samples[name])
    return "\n".join(out) + "\n"
