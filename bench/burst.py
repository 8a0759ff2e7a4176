"""Burst: N pods bound to the virtual node at once, then all deleted; and the direct-client ceiling.

    .venv/bin/python bench/burst.py --pods 1000        # also 5000, 10000

Phases (one control plane, one run):
1. the virtual kubelet (mock provider, zero latency) runs as a subprocess; the bench creates N pods
   bound to its node (spec.nodeName) with ``--concurrency`` requests in flight; a watch timestamps
   each pod's first Running status; then every pod is deleted (default grace) and the watch
   timestamps each DELETED;
2. the ceiling, with the virtual kubelet stopped: the same client creates N pods bound to another
   node name and, as each create returns, hands the pod to a minimal aiohttp client holding that
   node's kubelet identity, which PATCHes its status to Running (the same body the virtual kubelet
   writes) with ``--ceiling-concurrency`` requests in flight; the same kind of watch timestamps
   Running; then that client POSTs one Event per pod (the VK posts ProviderCreateSuccess).

Both throughputs are N / (first create -> all Running seen by the watch): the same creates, the
same status writes, the same measuring watch. "With events" adds the Event phase to the
ceiling's time, i.e. the same API work the VK does per created pod.

bind->Running latency per pod is the watch's Running time minus the moment the create request
returned (sub-millisecond clock); the same from creationTimestamp (1 s resolution, biased up by
0-1 s) is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import time
from typing import Any

from common import (
    Api,
    Environment,
    PodWatch,
    VirtualKubelet,
    cleanup_external,
    common_arguments,
    create_pods,
    delete_pods,
    gather_limited,
    latency_summary,
    loadavg,
    make_namespace,
    pod_manifest,
    print_settings,
    profiled,
    r,
    run_benchmark,
    running_vk,
    say,
    table,
    wait_node_ready,
)

from vk_operator.domain.model import ContainerPhase, ContainerStatus, PodPhase, ProviderPodStatus
from vk_operator.domain.pod_status import pod_status


async def wait_events_posted(vk: VirtualKubelet, timeout: float) -> float:
    """When the VK's queue of Events to post is empty (they trail the status writes)."""
    deadline = time.time() + timeout
    while (await vk.metrics()).get("vk_events_pending", 0) > 0:
        vk.check_alive()
        if time.time() > deadline:
            raise RuntimeError(f"Events still waiting to be posted after {timeout:.0f}s")
        await asyncio.sleep(0.2)  # each scrape costs the VK CPU: Events take a while at --event-qps
    return time.time()


async def vk_phase(args: argparse.Namespace, env: Environment, api: Api, namespace: str) -> dict[str, Any]:
    n = args.pods
    vk = VirtualKubelet(env, args)
    env.settings["vk_command"] = vk.command()
    env.settings["vk_pod_workers"] = args.pod_workers
    env.settings["bench_concurrency"] = args.concurrency
    env.settings["ceiling_concurrency"] = args.ceiling_concurrency
    env.settings["pod_spec"] = (
        f"1 container ({json.dumps(pod_manifest('x', 'n')['spec']['containers'][0])}), "
        f"automountServiceAccountToken={args.token}, enableServiceLinks={args.service_links}"
    )
    print_settings(env.settings)
    with running_vk(vk):
        await wait_node_ready(api, env.node, vk)
        say(f"\nvirtual node {env.node} Ready (pid {vk.pid}); creating {n} pods ...")
        watch = PodWatch(api, namespace, env.node)
        await watch.start()
        names = [f"p-{i:05d}" for i in range(n)]
        manifests = [
            pod_manifest(name, env.node, service_links=args.service_links, token=args.token) for name in names
        ]
        metrics_before = await vk.metrics()
        cpu_before = vk.cpu_seconds()
        timeout = max(60.0, n / 20)
        with profiled(vk, args.py_spy):
            first_create, last_create = await create_pods(api, namespace, manifests, watch, args.concurrency)
            say(f"created in {last_create - first_create:.2f}s; waiting for Running ...")
            if not await watch.wait(lambda: watch.running >= n, timeout, vk.check_alive):
                raise RuntimeError(f"only {watch.running}/{n} pods Running after {timeout:.0f}s")
            all_running = watch.last_running
            events_posted = await wait_events_posted(vk, timeout)
            latencies = latency_summary(watch, names)
            say(f"all Running {all_running - last_create:.2f}s after the last create; deleting ...")
            first_delete, last_delete = await delete_pods(api, namespace, names, watch, args.concurrency)
            if not await watch.wait(lambda: watch.deleted >= n, timeout, vk.check_alive):
                raise RuntimeError(f"only {watch.deleted}/{n} pods gone after {timeout:.0f}s")
        all_gone = watch.last_deleted
        metrics_after = await vk.metrics()
        cpu = vk.cpu_seconds() - cpu_before
        rss = vk.rss_mb()
        await watch.stop()
    requests = metrics_after["vk_api_requests_total"] - metrics_before["vk_api_requests_total"]
    return {
        "create_s": last_create - first_create,
        "running_s": all_running - last_create,
        "running_from_first_create_s": all_running - first_create,
        "events_posted_s": events_posted - last_create,
        "deleted_s": all_gone - last_delete,
        "delete_calls_s": last_delete - first_delete,
        "deleted_from_first_delete_s": all_gone - first_delete,
        **latencies,
        "vk_cpu_s": cpu,
        "vk_rss_mb": rss,
        "vk_api_requests": requests,
    }


def running_status_body(pod: dict[str, Any]) -> bytes:
    """What the virtual kubelet writes for a freshly started pod (same domain function)."""
    now = datetime.datetime.now(datetime.UTC)
    containers = tuple(
        ContainerStatus(
            c["name"],
            c.get("image", ""),
            ContainerPhase.RUNNING,
            started_at=now,
            container_id=f"mock://{pod['metadata']['uid']}/{c['name']}",
        )
        for c in pod["spec"]["containers"]
    )
    reported = ProviderPodStatus(PodPhase.RUNNING, containers, pod_ip="10.244.0.2", start_time=now)
    status = pod_status(pod, reported, "127.0.0.1", now)
    body = {"metadata": {"uid": pod["metadata"]["uid"]}, "status": status}
    return json.dumps(body, separators=(",", ":")).encode()


def event_body(pod: dict[str, Any], node: str) -> bytes:
    """A ProviderCreateSuccess Event like the VK's EventRecorder posts."""
    meta = pod["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{meta['name']}.{meta['uid'][:16]}", "namespace": meta["namespace"]},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": meta["namespace"],
            "name": meta["name"],
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
        },
        "reason": "ProviderCreateSuccess",
        "message": "created the pod in the provider",
        "type": "Normal",
        "source": {"component": "virtual-kubelet", "host": node},
        "reportingComponent": "virtual-kubelet",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    return json.dumps(event, separators=(",", ":")).encode()


async def ceiling_phase(
    args: argparse.Namespace, env: Environment, api: Api, namespace: str
) -> dict[str, Any]:
    """The VK phase's work without the VK, measured the same way (the same watch, the same clock).

    The bench creates N pods bound to another node (``--concurrency`` in flight) and, as each
    create returns, hands the pod to a minimal client holding that node's kubelet identity, which
    PATCHes its status to Running (``--ceiling-concurrency`` in flight). The direct client needs
    no watch of its own to learn of a pod: the ceiling is never lower than a real kubelet's.
    """
    n = args.pods
    node = f"{env.node}-ceiling"
    await api.request("POST", "/api/v1/nodes", {"metadata": {"name": node}})
    direct = await Api.connect(env.identity_for(node), limit=args.ceiling_concurrency)
    watch = PodWatch(api, namespace, node)
    try:
        await watch.start()
        path = f"/api/v1/namespaces/{namespace}/pods"
        names = [f"c-{i:05d}" for i in range(n)]
        manifests = [
            pod_manifest(name, node, service_links=args.service_links, token=args.token) for name in names
        ]
        created: list[dict[str, Any]] = []
        to_patch: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def hand_over(pod: dict[str, Any]) -> None:
            created.append(pod)
            to_patch.put_nowait(pod)

        async def patcher() -> None:
            while (pod := await to_patch.get()) is not None:
                await direct.request(
                    "PATCH",
                    f"{path}/{pod['metadata']['name']}/status",
                    raw=running_status_body(pod),
                    content_type="application/strategic-merge-patch+json",
                )

        say(f"\nceiling: creating {n} pods bound to {node}; system:node:{node} PATCHes each to Running")
        patchers = [asyncio.create_task(patcher()) for _ in range(args.ceiling_concurrency)]
        try:
            first_create, last_create = await create_pods(
                api, namespace, manifests, watch, args.concurrency, created=hand_over
            )
            for _ in patchers:
                to_patch.put_nowait(None)
            await asyncio.gather(*patchers)
        finally:
            for task in patchers:
                task.cancel()
        if not await watch.wait(lambda: watch.running >= n, max(60.0, n / 20)):
            raise RuntimeError(f"ceiling: only {watch.running}/{n} pods Running")
        running_from_first_create_s = watch.last_running - first_create
        events = [event_body(pod, node) for pod in created]

        def post_event(i: int) -> Any:
            async def run() -> None:
                await direct.request("POST", f"/api/v1/namespaces/{namespace}/events", raw=events[i])

            return run

        say(f"ceiling: POSTing {n} Events (what the VK also writes per created pod) ...")
        started = time.time()
        await gather_limited(args.ceiling_concurrency, [post_event(i) for i in range(n)])
        event_s = time.time() - started
        grace0 = json.dumps({"gracePeriodSeconds": 0}).encode()

        def delete(i: int) -> Any:
            async def run() -> None:
                await direct.request("DELETE", f"{path}/{names[i]}", raw=grace0, ok_missing=True)

            return run

        started = time.time()
        await gather_limited(args.ceiling_concurrency, [delete(i) for i in range(n)])
        delete_s = time.time() - started
    finally:
        await watch.stop()
        await direct.close()
        await api.request("DELETE", f"/api/v1/nodes/{node}", ok_missing=True)
    return {
        "create_s": last_create - first_create,
        "running_from_first_create_s": running_from_first_create_s,
        "event_s": event_s,
        "delete_s": delete_s,
    }


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    api = await Api.connect(env.admin_kubeconfig, limit=args.concurrency)
    namespace = None
    try:
        namespace = await make_namespace(api)
        vk = await vk_phase(args, env, api, namespace)
        ceiling = None if args.no_ceiling else await ceiling_phase(args, env, api, namespace)
    finally:
        await cleanup_external(api, env, namespace)
        await api.close()
    n = args.pods
    vk_rate = n / vk["running_from_first_create_s"]
    figures: dict[str, Any] = {
        "pods": n,
        "running_s": r(vk["running_s"]),
        "events_posted_s": r(vk["events_posted_s"]),
        "deleted_s": r(vk["deleted_s"]),
        "p50_s": vk["p50_s"],
        "p95_s": vk["p95_s"],
        "p99_s": vk["p99_s"],
        "p50_from_creation_ts_s": vk["p50_from_creation_ts_s"],
        "p99_from_creation_ts_s": vk["p99_from_creation_ts_s"],
        "create_s": r(vk["create_s"]),
        "running_pods_per_s": r(vk_rate, 1),
        "deleted_pods_per_s": r(n / vk["deleted_from_first_delete_s"], 1),
        "deleted_from_first_delete_s": r(vk["deleted_from_first_delete_s"]),
        "vk_cpu_s": r(vk["vk_cpu_s"], 2),
        "vk_rss_mb": r(vk["vk_rss_mb"], 1),
        "vk_api_requests_per_pod": r(vk["vk_api_requests"] / n, 2),
        "pod_workers": args.pod_workers,
        "concurrency": args.concurrency,
    }
    rows = [
        ("pods", n),
        (
            "create (bench client, first->last return)",
            f"{vk['create_s']:.2f} s  ({n / vk['create_s']:.0f}/s)",
        ),
        ("last create -> all Running", f"{vk['running_s']:.2f} s"),
        ("last create -> all their Events posted", f"{vk['events_posted_s']:.2f} s"),
        ("first create -> all Running", f"{vk['running_from_first_create_s']:.2f} s  ({vk_rate:.0f} pods/s)"),
        (
            "bind->Running p50 / p95 / p99 / max",
            f"{vk['p50_s']} / {vk['p95_s']} / {vk['p99_s']} / {vk['max_s']} s",
        ),
        (
            "  same from creationTimestamp p50 / p99",
            f"{vk['p50_from_creation_ts_s']} / {vk['p99_from_creation_ts_s']} s (1 s resolution)",
        ),
        ("delete calls (first->last return)", f"{vk['delete_calls_s']:.2f} s"),
        ("last delete -> all gone", f"{vk['deleted_s']:.2f} s"),
        (
            "first delete -> all gone",
            f"{vk['deleted_from_first_delete_s']:.2f} s  ({figures['deleted_pods_per_s']:.0f} pods/s)",
        ),
        ("VK CPU during the burst", f"{vk['vk_cpu_s']:.1f} s"),
        ("VK API requests per pod", f"{vk['vk_api_requests'] / n:.2f}"),
        ("VK RSS after the burst", f"{vk['vk_rss_mb']:.0f} MB"),
    ]
    if ceiling is not None:
        # Like for like: both from the first create to the last Running seen by the same watch.
        ceiling_rate = n / ceiling["running_from_first_create_s"]
        same_work_rate = n / (ceiling["running_from_first_create_s"] + ceiling["event_s"])
        figures.update(
            {
                "ceiling_create_s": r(ceiling["create_s"]),
                "ceiling_running_s": r(ceiling["running_from_first_create_s"]),
                "ceiling_pods_per_s": r(ceiling_rate, 1),
                "ratio_to_ceiling": r(vk_rate / ceiling_rate),
                "ceiling_event_s": r(ceiling["event_s"]),
                "ceiling_with_events_pods_per_s": r(same_work_rate, 1),
                "ratio_to_ceiling_with_events": r(vk_rate / same_work_rate),
                "ceiling_delete_grace0_per_s": r(n / ceiling["delete_s"], 1),
            }
        )
        rows += [
            ("ceiling: create (bench client, first->last return)", f"{ceiling['create_s']:.2f} s"),
            (
                "ceiling: first create -> all Running (direct client PATCHes)",
                f"{ceiling['running_from_first_create_s']:.2f} s  ({ceiling_rate:.0f} pods/s)",
            ),
            ("VK pods/s as a ratio of the ceiling", f"{vk_rate / ceiling_rate:.2f}"),
            ("ceiling: then POST N Events (direct client)", f"{ceiling['event_s']:.2f} s"),
            ("ceiling: create + status + Event, pods/s", f"{same_work_rate:.0f}"),
            ("VK pods/s as a ratio of that", f"{vk_rate / same_work_rate:.2f}"),
            ("ceiling: DELETE grace 0 (direct client)", f"{ceiling['delete_s']:.2f} s"),
        ]
    figures["load_end"] = loadavg()
    rows.append(("load average (start -> end)", f"{env.settings['load_at_start']} -> {figures['load_end']}"))
    table(rows, "burst")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--ceiling-concurrency", type=int, default=64)
    parser.add_argument("--no-ceiling", action="store_true", help="skip the direct-client ceiling")
    parser.add_argument("--service-links", action="store_true", help="pods with enableServiceLinks=true")
    parser.add_argument("--token", action="store_true", help="pods with automountServiceAccountToken=true")
    common_arguments(parser, workers=64)
    args = parser.parse_args()
    return run_benchmark(args, run)


if __name__ == "__main__":
    sys.exit(main())
