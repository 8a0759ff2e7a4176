"""Steady rate: offer R pods/s bound to the virtual node for D seconds; bind->Running latency.

    .venv/bin/python bench/steady.py --rate 100 --duration 60      # also 50, 200

Creates are paced open-loop (pod i is sent at start + i/R, whether or not earlier ones returned;
at most ``--concurrency`` in flight). Pods stay (the population grows to R*D) unless
``--lifetime S`` deletes each S seconds after it is Running. Latency per pod is the watch's
Running time minus the create's return (sub-millisecond clock; creationTimestamp-based figures,
1 s resolution, beside it). The VK keeps up when the achieved create rate is the offered one
(within 5 %) and every pod is Running within ``--drain`` seconds of the last create.
"""

from __future__ import annotations

import argparse
import asyncio
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
    latency_summary,
    loadavg,
    make_namespace,
    percentile,
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


async def offer(
    api: Api, namespace: str, node: str, watch: PodWatch, rate: float, duration: float, limit: int
) -> tuple[list[str], float, float, list[tuple[float, int]]]:
    """Create pods at ``rate``/s for ``duration`` s; returns names, first/last create, backlog samples."""
    total = int(rate * duration)
    names = [f"s-{i:06d}" for i in range(total)]
    path = f"/api/v1/namespaces/{namespace}/pods"
    in_flight = asyncio.Semaphore(limit)
    tasks: list[asyncio.Task[None]] = []
    backlog: list[tuple[float, int]] = []

    async def create(name: str) -> None:
        async with in_flight:
            times = watch.pod(name)
            times.sent = time.time()
            await api.request("POST", path, raw=json.dumps(pod_manifest(name, node)).encode())
            times.created = time.time()

    start = time.monotonic()
    next_sample = 1.0
    for i, name in enumerate(names):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        watch.pod(name)  # registered before its create runs
        tasks.append(asyncio.create_task(create(name)))
        elapsed = time.monotonic() - start
        if elapsed >= next_sample:
            created = sum(1 for n in names[: i + 1] if watch.times[n].created)
            backlog.append((round(elapsed), created - watch.running))
            next_sample += 1.0
    await asyncio.gather(*tasks)
    first = min(watch.times[n].sent for n in names)
    last = max(watch.times[n].created for n in names)
    return names, first, last, backlog


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    api = await Api.connect(env.admin_kubeconfig, limit=args.concurrency)
    vk = VirtualKubelet(env, args)
    env.settings["vk_command"] = vk.command()
    env.settings["vk_pod_workers"] = args.pod_workers
    env.settings["bench_concurrency"] = args.concurrency
    print_settings(env.settings)
    namespace = None
    try:
        namespace = await make_namespace(api)
        with running_vk(vk):
            await wait_node_ready(api, env.node, vk)
            watch = PodWatch(api, namespace, env.node)
            await watch.start()
            deleter: asyncio.Task[None] | None = None
            if args.lifetime:
                deleter = asyncio.create_task(delete_after(api, namespace, watch, args.lifetime))
            say(f"offering {args.rate:g} pods/s for {args.duration:g}s ...")
            cpu_before = vk.cpu_seconds()
            with profiled(vk, args.py_spy):
                names, first, last, backlog = await offer(
                    api, namespace, env.node, watch, args.rate, args.duration, args.concurrency
                )
                done = await watch.wait(
                    lambda: all(watch.times[n].running for n in names), args.drain + 60, vk.check_alive
                )
            cpu = vk.cpu_seconds() - cpu_before
            if deleter:
                deleter.cancel()
            await watch.stop()
    finally:
        await cleanup_external(api, env, namespace)
        await api.close()
    running = [watch.times[n].running for n in names if watch.times[n].running]
    drain = (max(running) - last) if done else None
    achieved = len(names) / (last - first)
    keeps_up = bool(done and drain is not None and drain <= args.drain and achieved >= 0.95 * args.rate)
    latencies = latency_summary(watch, names)
    third = len(names) // 3
    early = [watch.times[n].running - watch.times[n].created for n in names[:third] if watch.times[n].running]
    late = [watch.times[n].running - watch.times[n].created for n in names[-third:] if watch.times[n].running]
    figures: dict[str, Any] = {
        "rate": args.rate,
        "duration_s": args.duration,
        "pods": len(names),
        "achieved_rate": r(achieved, 1),
        **latencies,
        "p99_first_third_s": r(percentile(early, 99)),
        "p99_last_third_s": r(percentile(late, 99)),
        "max_backlog": max((b for _, b in backlog), default=0),
        "drain_s": r(drain),
        "keeps_up": keeps_up,
        "vk_cpu_s_per_s": r(cpu / (time.time() - first), 3),
        "pod_workers": args.pod_workers,
        "load_end": loadavg(),
    }
    rows = [
        (
            "offered / achieved create rate",
            f"{args.rate:g} / {achieved:.1f} pods/s over {last - first:.1f} s",
        ),
        (
            "bind->Running p50 / p95 / p99 / max",
            f"{latencies['p50_s']} / {latencies['p95_s']} / {latencies['p99_s']} / {latencies['max_s']} s",
        ),
        (
            "  same from creationTimestamp p50 / p99",
            f"{latencies['p50_from_creation_ts_s']} / {latencies['p99_from_creation_ts_s']} s (1 s res.)",
        ),
        ("p99 first third / last third", f"{figures['p99_first_third_s']} / {figures['p99_last_third_s']} s"),
        ("backlog (created, not Running) max", figures["max_backlog"]),
        ("last create -> all Running", f"{drain:.2f} s" if drain is not None else "not all Running"),
        ("keeps up", keeps_up),
        ("VK CPU", f"{cpu / (time.time() - first):.2f} s/s"),
        ("load average (start -> end)", f"{env.settings['load_at_start']} -> {figures['load_end']}"),
    ]
    table(rows, "steady")
    say("backlog per second: " + " ".join(str(b) for _, b in backlog))
    return figures


async def delete_after(api: Api, namespace: str, watch: PodWatch, lifetime: float) -> None:
    """Delete each pod ``lifetime`` seconds after it was seen Running (a churning population)."""
    deleted: set[str] = set()
    pending: set[asyncio.Task[Any]] = set()
    while True:
        now = time.time()
        due = [
            n
            for n, t in list(watch.times.items())
            if t.running and now - t.running >= lifetime and n not in deleted
        ]
        for name in due:
            deleted.add(name)
            task = asyncio.create_task(
                api.request("DELETE", f"/api/v1/namespaces/{namespace}/pods/{name}", ok_missing=True)
            )
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=100.0, help="pods/s offered (default 100)")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--lifetime", type=float, default=0.0, help="delete pods this long after Running")
    parser.add_argument(
        "--drain", type=float, default=2.0, help="keeps up: all Running this soon after the end"
    )
    common_arguments(parser, workers=64)
    args = parser.parse_args()
    return run_benchmark(args, run)


if __name__ == "__main__":
    sys.exit(main())
