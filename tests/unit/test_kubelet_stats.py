"""Pure renderings: Summary JSON, resource metrics text, log selection and the mock's timelines."""

from __future__ import annotations

import datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from providers.mock.observability import Instance, history_range, instances, line_time
from vk_operator.domain.logs import (
    ByteLimit,
    LogEntry,
    LogOptions,
    format_entry,
    rfc3339_nano,
    select_history,
)
from vk_operator.domain.model import PodRef
from vk_operator.domain.stats import (
    ContainerUsage,
    NodeCpuTime,
    NodeUsage,
    PodUsage,
    resource_metrics,
    summary,
)

T0 = datetime.datetime(2024, 3, 4, 5, 6, 7, tzinfo=datetime.UTC)


def _pods() -> list[PodUsage]:
    def c(name: str, cores: int, seconds: int, memory: int) -> ContainerUsage:
        return ContainerUsage(name, T0, cores, seconds, memory)

    now = T0 + datetime.timedelta(seconds=10)
    return [
        PodUsage(
            PodRef("ns1", "a", "uid-a"),
            T0,
            now,
            (c("app", 100_000_000, 2_000_000_000, 1000), c("side", 50, 7, 24)),
        ),
        PodUsage(PodRef("ns2", "b", "uid-b"), T0, now, (c("app", 1, 1_000_000_000, 10),)),
    ]


def _node(pods: list[PodUsage], own_cpu_ns: int = 0, own_memory: int = 0) -> NodeUsage:
    return NodeCpuTime().update(T0, pods, own_cpu_ns, own_memory)


def test_summary_shape_and_sums() -> None:
    now = T0 + datetime.timedelta(seconds=11)
    pods = _pods()
    body = summary("vk-1", T0, now, pods, _node(pods), memory_capacity_bytes=5000)
    node = body["node"]
    assert node["nodeName"] == "vk-1" and node["startTime"] == "2024-03-04T05:06:07Z"
    assert node["cpu"] == {
        "time": "2024-03-04T05:06:18Z",
        "usageNanoCores": 100_000_051,
        "usageCoreNanoSeconds": 3_000_000_007,
    }
    assert node["memory"]["workingSetBytes"] == 1034 and node["memory"]["availableBytes"] == 3966
    a = body["pods"][0]
    assert a["podRef"] == {"name": "a", "namespace": "ns1", "uid": "uid-a"}
    assert [c["name"] for c in a["containers"]] == ["app", "side"]
    assert a["containers"][0]["cpu"]["usageNanoCores"] == 100_000_000
    assert a["containers"][1]["memory"]["workingSetBytes"] == 24
    assert a["cpu"]["usageCoreNanoSeconds"] == 2_000_000_007 and a["memory"]["workingSetBytes"] == 1024


def test_empty_node_summary() -> None:
    body = summary("vk-1", T0, T0, [], _node([], own_cpu_ns=5_000_000, own_memory=80_000_000))
    # The node's own process: never zero (metrics-server drops a node reporting 0).
    assert body["pods"] == [] and body["node"]["cpu"]["usageNanoCores"] >= 1
    assert body["node"]["cpu"]["usageCoreNanoSeconds"] == 5_000_000
    assert body["node"]["memory"]["workingSetBytes"] == 80_000_000


def test_resource_metrics_parse_as_prometheus_with_kubelet_names_and_labels() -> None:
    pods = _pods()
    text = resource_metrics(T0 + datetime.timedelta(seconds=11), pods, _node(pods))
    families = {f.name: f for f in text_string_to_metric_families(text)}
    # The parser strips _total from counter names.
    assert set(families) == {
        "container_cpu_usage_seconds",
        "container_memory_working_set_bytes",
        "container_start_time_seconds",
        "node_cpu_usage_seconds",
        "node_memory_working_set_bytes",
        "pod_cpu_usage_seconds",
        "pod_memory_working_set_bytes",
        "resource_scrape_error",
        "scrape_error",
    }
    assert families["container_cpu_usage_seconds"].type == "counter"
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): (s.value, s.timestamp)
        for f in families.values()
        for s in f.samples
    }
    key = ("container_cpu_usage_seconds_total", (("container", "app"), ("namespace", "ns1"), ("pod", "a")))
    assert samples[key] == (2.0, T0.timestamp() + 10)  # seconds; timestamp of the sample in ms on the wire
    assert samples[("pod_memory_working_set_bytes", (("namespace", "ns1"), ("pod", "a")))][0] == 1024
    assert samples[("node_cpu_usage_seconds_total", ())][0] == pytest.approx(3.000000007)
    assert samples[("scrape_error", ())] == (0, None)
    start = ("container_start_time_seconds", (("container", "side"), ("namespace", "ns1"), ("pod", "a")))
    assert samples[start][0] == T0.timestamp()
    help_text = "Cumulative cpu time consumed by the container in core-seconds"
    assert f"# HELP container_cpu_usage_seconds_total [STABLE] {help_text}" in text
    millis = int((T0.timestamp() + 10) * 1000)
    assert f'container_cpu_usage_seconds_total{{container="app",namespace="ns1",pod="a"}} 2 {millis}' in text


def test_resource_metrics_on_error_report_only_the_scrape_error() -> None:
    text = resource_metrics(T0, None, scrape_error=True)
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "resource_scrape_error 1",
        "scrape_error 1",
    ]


def test_label_values_are_escaped() -> None:
    pod = PodUsage(PodRef('n"s', "p\\1", "u"), T0, T0, (ContainerUsage("c\n", T0, 0, 0, 0),))
    text = resource_metrics(T0, [pod], _node([pod]))
    assert 'container="c\\n",namespace="n\\"s",pod="p\\\\1"' in text
    list(text_string_to_metric_families(text))  # parses


# -- logs --------------------------------------------------------------------------------------------------
def _entries(count: int) -> list[LogEntry]:
    return [LogEntry(T0 + datetime.timedelta(seconds=i), f"line {i + 1}") for i in range(count)]


def test_rfc3339_nano_like_the_kubelet() -> None:
    assert rfc3339_nano(T0.replace(microsecond=123456)) == "2024-03-04T05:06:07.123456000Z"
    assert format_entry(LogEntry(T0, "hi"), True) == b"2024-03-04T05:06:07.000000000Z hi\n"
    assert format_entry(LogEntry(T0, "hi"), False) == b"hi\n"


def test_select_history_since_and_tail() -> None:
    now = T0 + datetime.timedelta(seconds=9)
    entries = _entries(10)
    assert select_history(entries, LogOptions(tail_lines=3), now) == entries[-3:]
    assert select_history(entries, LogOptions(tail_lines=0), now) == []
    assert select_history(entries, LogOptions(since_seconds=2), now) == entries[7:]
    since = T0 + datetime.timedelta(seconds=4, milliseconds=500)
    assert select_history(entries, LogOptions(since_time=since, tail_lines=2), now) == entries[8:]
    assert select_history(entries, LogOptions(stream="Stderr"), now) == []


def test_byte_limit_cuts_exactly() -> None:
    limit = ByteLimit(7)
    assert limit.take(b"abcd") == b"abcd" and not limit.exhausted
    assert limit.take(b"efgh") == b"efg" and limit.exhausted
    assert limit.take(b"ijk") == b""
    assert ByteLimit(None).take(b"x" * 100) == b"x" * 100


# -- the mock provider's timelines -------------------------------------------------------------------
def test_instances_of_a_restarting_and_a_finishing_container() -> None:
    now = T0 + datetime.timedelta(seconds=25)
    assert instances(T0 + datetime.timedelta(seconds=30), 10, True, now) == []  # not started
    assert instances(T0, None, True, now) == [Instance(0, T0, None)]
    assert instances(T0, 10, False, now) == [Instance(0, T0, T0 + datetime.timedelta(seconds=10))]
    restarting = instances(T0, 10, True, now)
    assert [(i.number, i.start - T0, i.end - T0 if i.end else None) for i in restarting] == [
        (k, datetime.timedelta(seconds=10 * k), datetime.timedelta(seconds=10 * k + 10)) for k in range(3)
    ]


def test_history_range_lines_since_tail_and_end() -> None:
    running = Instance(0, T0, None)
    now = T0 + datetime.timedelta(seconds=2.1)
    assert list(history_range(running, 0.5, now, None, None)) == [1, 2, 3, 4, 5]  # at 0, .5, 1, 1.5, 2
    assert list(history_range(running, 0.5, now, None, 2)) == [4, 5]
    assert list(history_range(running, 0.5, now, T0 + datetime.timedelta(seconds=1), None)) == [3, 4, 5]
    assert list(history_range(running, 0.5, now, T0 + datetime.timedelta(seconds=1.2), 5)) == [4, 5]
    ended = Instance(0, T0, T0 + datetime.timedelta(seconds=2))
    assert list(history_range(ended, 0.5, T0 + datetime.timedelta(seconds=9), None, None)) == [1, 2, 3, 4]
    assert line_time(running, 0.5, 4) == T0 + datetime.timedelta(seconds=1.5)


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/api/v1/namespaces/ns/pods/p/status", "pods/status"),
        ("/api/v1/namespaces/ns/pods", "pods"),
        ("/api/v1/namespaces/ns/events", "events"),
        ("/api/v1/nodes/n/status", "nodes/status"),
        ("/api/v1/nodes", "nodes"),
        ("/api/v1/namespaces/ns", "namespaces"),
        ("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n", "leases"),
        ("/apis/authorization.k8s.io/v1/subjectaccessreviews", "subjectaccessreviews"),
        ("/api/v1/namespaces/ns/serviceaccounts/sa/token", "serviceaccounts/token"),
    ],
)
def test_resource_of_api_paths(path: str, resource: str) -> None:
    from vk_operator.metrics import resource_of

    assert resource_of(path) == resource


def _usage(*containers: tuple[str, str, int, int]) -> list[PodUsage]:
    """(pod uid, container, start second, cumulative ns) -> one PodUsage per pod."""
    pods: dict[str, list[ContainerUsage]] = {}
    for uid, name, start, ns in containers:
        started = T0 + datetime.timedelta(seconds=start)
        pods.setdefault(uid, []).append(ContainerUsage(name, started, 1, ns, 1))
    return [PodUsage(PodRef("ns", uid, uid), T0, T0, tuple(c)) for uid, c in pods.items()]


@pytest.mark.parametrize(
    ("scrapes", "totals"),
    [
        # a pod leaves: its CPU time stays counted
        ([[("a", "c", 0, 10), ("b", "c", 0, 5)], [("a", "c", 0, 12)]], [15, 17]),
        # a container restarts (new start, counter from 0): the old instance's time stays counted
        ([[("a", "c", 0, 10)], [("a", "c", 30, 2)], [("a", "c", 30, 4)]], [10, 12, 14]),
        # a counter that goes down without a new start time is a restart too
        ([[("a", "c", 0, 10)], [("a", "c", 0, 3)]], [10, 13]),
        # every pod gone, then new ones
        ([[("a", "c", 0, 10)], [], [("b", "c", 0, 1)]], [10, 10, 11]),
    ],
)
def test_node_cpu_time_never_decreases(
    scrapes: list[list[tuple[str, str, int, int]]], totals: list[int]
) -> None:
    counter = NodeCpuTime()
    seen = [counter.update(T0, _usage(*scrape), 0, 0).cpu_core_nano_seconds for scrape in scrapes]
    assert seen == totals


def test_node_cpu_time_includes_the_process_and_its_rate() -> None:
    counter = NodeCpuTime()
    counter.update(T0, [], 1_000_000_000, 50)
    later = counter.update(T0 + datetime.timedelta(seconds=2), [], 1_500_000_000, 60)
    assert later.cpu_core_nano_seconds == 1_500_000_000
    assert later.cpu_nano_cores == 250_000_000  # 0.5 s of CPU over 2 s
    assert later.memory_working_set_bytes == 60
