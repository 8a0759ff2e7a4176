"""Resource usage: what a provider reports, rendered as the kubelet does.

Two renderings of the same numbers: the Summary API (``/stats/summary``, JSON of
``k8s.io/kubelet/pkg/apis/stats/v1alpha1``) and the resource metrics endpoint
(``/metrics/resource``, Prometheus text with the kubelet's metric names, labels and help texts,
which metrics-server and therefore ``kubectl top`` read). A virtual node's figures are its own
process's (the virtual kubelet: a node is never at zero, and metrics-server drops zeros) plus its
pods', and its CPU time is cumulative (:class:`NodeCpuTime`): it never goes down when a pod leaves.
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


@dataclasses.dataclass(frozen=True)
class NodeUsage:
    """The node's totals as the kubelet reports them for its root cgroup."""

    cpu_nano_cores: int
    cpu_core_nano_seconds: int  # cumulative: never decreases
    memory_working_set_bytes: int
    memory_usage_bytes: int


class NodeCpuTime:
    """The node's cumulative CPU time, which only grows.

    Summing the running pods' counters goes DOWN whenever a pod is deleted, completes or restarts
    a container, and metrics-server then skips the node ("unexpected decrease in cumulative CPU
    usage"). So the last value of every container that went away (or restarted: a new start time
    or a lower counter) is kept in ``retired``; memory stays bounded by the containers running now.
    """

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[datetime.datetime, int]] = {}
        self._retired = 0
        self._reported = 0
        self._previous: tuple[datetime.datetime, int] | None = None  # for the current rate

    def update(
        self, now: datetime.datetime, pods: Iterable[PodUsage], own_cpu_ns: int, own_memory_bytes: int
    ) -> NodeUsage:
        """Totals for ``pods`` plus the node's own process (CPU time and memory so far)."""
        pods = list(pods)
        seen: dict[tuple[str, str], tuple[datetime.datetime, int]] = {}
        for pod in pods:
            for container in pod.containers:
                key = (pod.ref.uid, container.name)
                value = (container.start_time, container.cpu_core_nano_seconds)
                before = self._last.get(key)
                if before is not None and (before[0] != value[0] or value[1] < before[1]):
                    self._retired += before[1]  # restarted: its previous instance's time stays counted
                seen[key] = value
        self._retired += sum(v for k, (_, v) in self._last.items() if k not in seen)
        self._last = seen
        total = own_cpu_ns + self._retired + sum(v for _, v in seen.values())
        self._reported = max(self._reported, total)
        rate = sum(p.cpu_nano_cores for p in pods)
        if self._previous is not None and now > self._previous[0]:
            elapsed = (now - self._previous[0]).total_seconds()
            rate += max(0, int((own_cpu_ns - self._previous[1]) / elapsed))
        self._previous = (now, own_cpu_ns)
        working_set = own_memory_bytes + sum(p.memory_working_set_bytes for p in pods)
        usage = own_memory_bytes + sum(p.memory_usage_bytes for p in pods)
        return NodeUsage(max(rate, 1), self._reported, working_set, usage)


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
    node: NodeUsage,
    memory_capacity_bytes: int | None = None,
) -> dict[str, Any]:
    """The kubelet's ``Summary`` object (stats/v1alpha1) for a node and its pods."""
    node_memory = _memory(now, node.memory_working_set_bytes, node.memory_usage_bytes)
    if memory_capacity_bytes is not None:
        node_memory["availableBytes"] = max(memory_capacity_bytes - node.memory_working_set_bytes, 0)
    return {
        "node": {
            "nodeName": node_name,
            "startTime": _time(node_start),
            "cpu": _cpu(now, node.cpu_nano_cores, node.cpu_core_nano_seconds),
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
    now: datetime.datetime,
    pods: Iterable[PodUsage] | None,
    node: NodeUsage | None = None,
    *,
    scrape_error: bool = False,
) -> str:
    """Prometheus text exposition of the kubelet's resource metrics; ``pods=None``: nothing known."""
    samples: dict[str, list[Sample]] = {name: [] for name in _METRICS}
    error = 1.0 if scrape_error or pods is None else 0.0
    samples["scrape_error"].append(({}, error, None))
    samples["resource_scrape_error"].append(({}, error, None))
    if pods is not None:
        pods = list(pods)
        if node is not None:
            samples["node_cpu_usage_seconds_total"].append(({}, node.cpu_core_nano_seconds / 1e9, now))
            samples["node_memory_working_set_bytes"].append(({}, float(node.memory_working_set_bytes), now))
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
