"""Start-up: time from process start to Ready with N existing pods (default 10,000) adopted.

    .venv/bin/python bench/startup.py                      # --pods 10000

1. The virtual kubelet runs on the mock provider with a ``state_file`` (the "cloud" outlives the
   process; writes coalesced over ``--state-save-interval`` seconds); N pods are created and
   become Running; the VK is stopped (SIGTERM; the mock writes its state on close).
2. The VK is started again with the same state file. Timed from the process start:
   - node Ready: the Node Ready and its Lease renewed by the new process;
   - adopted: the VK logs "start-up: N pods reconciled" (the pod controller's ``adopted`` event:
     its first resync found the pods and each has been reconciled once); its metrics, read once
     then (a scrape costs the VK a decode of every cached pod), must show N pods in the provider
     and N Running;
   - probe: a pod created at that moment is Running (the watch is live).
   Afterwards the mock's state file must show one create call per pod (adopted, not re-created).
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


async def wait_adopted(vk: VirtualKubelet, n: int, timeout: float) -> float:
    """Seconds since the process start until it logs that every pod was reconciled once."""
    deadline = time.monotonic() + timeout
    offset = 0
    while time.monotonic() < deadline:
        vk.check_alive()
        with vk.log_path.open("rb") as log:
            log.seek(offset)
            chunk = log.read()
        if b"start-up: " in chunk and b" pods reconciled" in chunk:
            adopted = time.time() - vk.started_at
            metrics = await vk.metrics()
            if metrics.get("vk_provider_pods", 0) < n or metrics.get('vk_pods{phase="Running"}', 0) < n:
                raise RuntimeError(f"start-up logged, but not all {n} pods are adopted: {metrics}")
            return adopted
        offset += chunk.rfind(b"\n") + 1
        await asyncio.sleep(0.02)
    raise RuntimeError(f"pods not adopted within {timeout:.0f}s")


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    n = args.pods
    state_file = env.workdir / "mock-state.json"
    config = {"state_file": str(state_file), "state_save_interval_seconds": args.state_save_interval}
    api = await Api.connect(env.admin_kubeconfig, limit=args.concurrency)
    first = VirtualKubelet(env, args, provider_config=config, tag="vk-first")
    env.settings["vk_command"] = first.command()
    env.settings["vk_pod_workers"] = args.pod_workers
    env.settings["mock_state"] = f"{state_file}, writes coalesced over {args.state_save_interval}s"
    print_settings(env.settings)
    figures: dict[str, Any] = {"pods": n}
    namespace = None
    try:
        namespace = await make_namespace(api)
        watch = PodWatch(api, namespace, env.node)
        with running_vk(first):
            await wait_node_ready(api, env.node, first)
            await watch.start()
            say(f"creating {n} pods ...")
            started = time.time()
            await create_pods(
                api, namespace, [pod_manifest(f"p-{i:05d}", env.node) for i in range(n)], watch, 64
            )
            if not await watch.wait(lambda: watch.running >= n, max(120.0, n / 20), first.check_alive):
                raise RuntimeError(f"only {watch.running}/{n} pods Running")
            figures["setup_running_s"] = r(time.time() - started, 1)
            say(f"{n} pods Running after {figures['setup_running_s']}s; stopping the VK ...")
        saved = json.loads(state_file.read_text())
        if len(saved["pods"]) != n:
            raise RuntimeError(f"the mock's state file holds {len(saved['pods'])} pods, not {n}")

        second = VirtualKubelet(env, args, provider_config=config, tag="vk-second")
        with running_vk(second), profiled(second, args.py_spy):
            await wait_node_ready(api, env.node, second, timeout=args.timeout)
            node_ready_s = time.time() - second.started_at
            adopted_s = await wait_adopted(second, n, args.timeout)
            cpu = second.cpu_seconds()
            rss = second.rss_mb()
            say(f"restarted: node Ready {node_ready_s:.2f}s, {n} pods adopted {adopted_s:.2f}s after start")
            probe = "probe"
            probe_started = time.time()
            await create_pods(api, namespace, [pod_manifest(probe, env.node)], watch, 1)
            if not await watch.wait(lambda: watch.times[probe].running > 0, 60, second.check_alive):
                raise RuntimeError("the probe pod did not become Running")
            probe_s = watch.times[probe].running - probe_started
            await watch.stop()
            await settle(second, 15.0)
            rss_settled = second.rss_mb()
        created = json.loads(state_file.read_text())["calls"].get("created", {})
        recreated = sum(1 for count in created.values() if count > 1)
        figures.update(
            {
                "startup_s": r(adopted_s, 2),
                "node_ready_s": r(node_ready_s, 2),
                "probe_running_s": r(probe_s, 3),
                "recreated": recreated,
                "startup_cpu_s": r(cpu, 2),
                "rss_after_startup_mb": r(rss, 1),
                "rss_settled_mb": r(rss_settled, 1),
            }
        )
        rows = [
            ("pods", n),
            ("set-up: create -> all Running (state file on)", f"{figures['setup_running_s']} s"),
            ("restart -> node Ready (lease renewed)", f"{node_ready_s:.2f} s"),
            ("restart -> all pods adopted (Ready)", f"{adopted_s:.2f} s"),
            ("probe pod created after Ready -> Running", f"{probe_s:.3f} s"),
            ("pods created twice in the provider", recreated),
            ("VK CPU for the start-up", f"{cpu:.1f} s"),
            ("VK RSS after start-up", f"{rss:.0f} MB"),
            ("VK RSS 15 s later (work queue empty)", f"{rss_settled:.0f} MB"),
        ]
    finally:
        await cleanup_external(api, env, namespace)
        await api.close()
    figures["load_end"] = loadavg()
    rows.append(("load average (start -> end)", f"{env.settings['load_at_start']} -> {figures['load_end']}"))
    table(rows, "start-up")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after (default 300 s)")
    parser.add_argument(
        "--state-save-interval", type=float, default=1.0, help="mock state-file write coalescing (s)"
    )
    common_arguments(parser, workers=64)
    args = parser.parse_args()
    return run_benchmark(args, run)


if __name__ == "__main__":
    sys.exit(main())
