"""Footprint: RSS of the virtual kubelet idle with 0, 1,000 and 10,000 pods Running; idle CPU and
API requests per minute at 10,000 pods.

    .venv/bin/python bench/footprint.py                    # --pods 1000,10000 --idle-seconds 120

RSS is VmRSS from /proc/PID/status after the pods are Running and ``--settle`` seconds passed;
CPU is utime+stime from /proc/PID/stat over the idle window; API requests are counted twice: by
the VK's own counter (``vk_api_requests_total`` on its metrics port: every request of its API
client, not kopf's watch) and, on the local control plane, by the apiserver's audit log filtered
to the VK's user (``system:node:NODE``, everything it sends, kopf's watch included).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from common import (
    Api,
    Environment,
    PodWatch,
    VirtualKubelet,
    audit_args,
    audited_requests,
    cleanup_external,
    common_arguments,
    create_pods,
    loadavg,
    make_namespace,
    pod_manifest,
    print_settings,
    profiled,
    r,
    run_benchmark,
    running_vk,
    say,
    settle,
    table,
    wait_node_ready,
)


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    steps = sorted(int(p) for p in args.pods.split(","))
    api = await Api.connect(env.admin_kubeconfig, limit=args.concurrency)
    vk = VirtualKubelet(env, args)
    env.settings["vk_command"] = vk.command()
    env.settings["vk_pod_workers"] = args.pod_workers
    env.settings["bench_concurrency"] = args.concurrency
    print_settings(env.settings)
    figures: dict[str, Any] = {}
    rows: list[tuple[str, Any]] = []
    namespace = None
    try:
        namespace = await make_namespace(api)
        with running_vk(vk):
            await wait_node_ready(api, env.node, vk)
            watch = PodWatch(api, namespace, env.node)
            await watch.start()
            await settle(vk, args.settle)
            figures["rss_idle_mb"] = r(vk.rss_mb(), 1)
            rows.append(("RSS, no pods", f"{figures['rss_idle_mb']} MB"))
            say(f"RSS with no pods: {figures['rss_idle_mb']} MB")
            created = 0
            for step in steps:
                names = [f"p-{i:05d}" for i in range(created, step)]
                manifests = [pod_manifest(name, env.node) for name in names]
                say(f"creating pods {created}..{step - 1} ...")
                await create_pods(api, namespace, manifests, watch, args.concurrency)
                timeout = max(120.0, len(names) / 20)

                def reached(target: int = step) -> bool:
                    return watch.running >= target

                if not await watch.wait(reached, timeout, vk.check_alive):
                    raise RuntimeError(f"only {watch.running}/{step} pods Running after {timeout:.0f}s")
                created = step
                await settle(vk, args.settle)
                rss, peak = vk.rss_mb(), vk.rss_mb("VmHWM")
                figures[f"rss_{step}_mb"] = r(rss, 1)
                figures[f"rss_peak_{step}_mb"] = r(peak, 1)
                rows.append((f"RSS, {step} pods Running (peak so far)", f"{rss:.1f} MB ({peak:.1f} MB)"))
                say(f"RSS with {step} pods Running: {rss:.1f} MB (peak so far {peak:.1f} MB)")
            await watch.stop()  # the bench's own watch is not the VK's cost
            say(f"idle for {args.idle_seconds:.0f}s with {created} pods ...")
            metrics_before = await vk.metrics()
            cpu_before = vk.cpu_seconds()
            since = time.time()
            with profiled(vk, args.py_spy):
                await asyncio.sleep(args.idle_seconds)
            until = time.time()
            cpu = vk.cpu_seconds() - cpu_before
            rss_after = vk.rss_mb()
            scrape_cpu = vk.cpu_seconds()
            metrics_after = await vk.metrics()
            scrape_cpu = vk.cpu_seconds() - scrape_cpu
            await asyncio.sleep(2)  # the audit log is written in batches
        per_minute = 60.0 / (until - since)
        own = (metrics_after["vk_api_requests_total"] - metrics_before["vk_api_requests_total"]) * per_minute
        figures.update(
            {
                "pods": created,
                "idle_cpu_s_per_min": r(cpu * per_minute),
                "idle_cpu_percent": r(cpu / (until - since) * 100, 2),
                "idle_requests_per_min": r(own, 1),
                "rss_after_idle_mb": r(rss_after, 1),
                "metrics_scrape_cpu_s": r(scrape_cpu, 2),
            }
        )
        rows += [
            (f"RSS after {args.idle_seconds:.0f}s idle", f"{rss_after:.1f} MB"),
            (
                f"idle CPU at {created} pods",
                f"{cpu * per_minute:.3f} s/min ({cpu / (until - since) * 100:.2f} %)",
            ),
            ("idle API requests/min (VK counter)", f"{own:.1f}"),
            (f"VK CPU for one /metrics scrape at {created} pods", f"{scrape_cpu:.2f} s (10 ms resolution)"),
        ]
        if env.cluster is not None:
            audited = audited_requests(env.workdir, since, until)
            total = sum(audited.values()) * per_minute
            figures["idle_requests_per_min_audit"] = r(total, 1)
            rows.append(("idle API requests/min (apiserver audit)", f"{total:.1f}"))
            for what, count in audited.items():
                rows.append((f"  {what}", f"{count * per_minute:.1f}/min"))
    finally:
        await cleanup_external(api, env, namespace)
        await api.close()
    figures["load_end"] = loadavg()
    rows.append(("load average (start -> end)", f"{env.settings['load_at_start']} -> {figures['load_end']}"))
    table(rows, "footprint")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", default="1000,10000", help="pod counts to measure at (default 1000,10000)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before reading RSS (default 15)")
    parser.add_argument("--idle-seconds", type=float, default=120.0, help="idle window (default 120)")
    common_arguments(parser, workers=16)
    args = parser.parse_args()
    return run_benchmark(args, run, prepare=audit_args)


if __name__ == "__main__":
    sys.exit(main())
