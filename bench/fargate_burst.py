"""Fargate burst: N pods on a `fargate` node whose AWS is moto's server.

    .venv/bin/python bench/fargate_burst.py --pods 1000

One control plane, one run:
1. ``python -m tests.fargate.motoserver`` (moto's own server, tasks kept RUNNING until stopped, see
   its docstring) as a process, an ECS cluster and the default VPC's subnet in it, and
   ``virtual-kubelet --provider fargate`` pointed at it (``endpoint_url``) under the node's kubelet
   identity, with fake static credentials in the environment (the SDK's standard chain);
2. N pods of one template bound to the node (``spec.nodeName``); a watch timestamps each pod's first
   Running. Reported: first create -> all Running, the pods that ended Failed, the task definitions
   registered (one for all N), and the AWS calls by operation during the burst;
3. steady state with every pod Running: after ``--settle`` seconds, the server's call counters
   (``/_driver/calls``, not AWS calls themselves) are read at the start and end of a ``--window``
   (60 s); their difference is the AWS calls/min at N pods, by operation. Nothing but the virtual
   kubelet talks to the server meanwhile.

moto is a Python process serving every call on one machine: its own speed, not AWS's, bounds the
burst (RunTask and DescribeTasks scan all its tasks). The RunTask rate (``run_task_rate``) is the
provider's default (10/s, burst 50) unless ``--provider-config-json`` says otherwise.

The last line is a JSON object of the figures (as every bench script). ``--keep`` keeps the work
directory: the control plane's, the VK's and moto's logs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Any

import aiohttp
from common import (
    REPO,
    Api,
    Environment,
    ListeningServer,
    PodWatch,
    VirtualKubelet,
    call_deltas,
    cleanup_external,
    common_arguments,
    create_pods,
    latency_summary,
    loadavg,
    make_namespace,
    pod_manifest,
    print_settings,
    r,
    run_benchmark,
    running_vk,
    say,
    table,
    wait_node_ready,
)

sys.path.insert(0, str(REPO))
from tests.fargate.moto_fixtures import CLIENT_CONFIG, CREDENTIALS, prepare_account, session


class Moto(ListeningServer):
    """moto's server (with the tests' driver) as a process, its log in the work directory."""

    def __init__(self, env: Environment) -> None:
        argv = [sys.executable, "-m", "tests.fargate.motoserver", "--port", "0"]
        super().__init__("moto", argv, env.workdir / "moto.log")

    async def calls(self) -> dict[str, int]:
        async with aiohttp.ClientSession() as session, session.get(f"{self.url}/_driver/calls") as resp:
            resp.raise_for_status()
            return await resp.json(content_type=None)  # type: ignore[no-any-return]

    def stop(self) -> int | None:
        return self.stop_process()


class FargateVirtualKubelet(VirtualKubelet):
    def __init__(self, env: Environment, args: argparse.Namespace, config: dict[str, Any]) -> None:
        super().__init__(env, args, tag="vk-fargate")
        self.config_file = env.workdir / "vk-fargate.json"
        full = {**config, "pods": str(max(5000, args.pods * 2)), **json.loads(args.provider_config_json)}
        full["max_attempts"] = 3  # as on AWS: botocore retries throttles and 5xx
        self.config_file.write_text(json.dumps(full, indent=1))
        self.argv[self.argv.index("--provider") + 1] = "fargate"
        self.argv[self.argv.index("--provider-config") + 1] = str(self.config_file)


async def tasks_per_pod(url: str, cluster: str) -> dict[str, int]:
    """RUNNING tasks by startedBy (the pod UID), read from moto's ECS: none may run twice."""
    counts: dict[str, int] = {}
    async with session().client("ecs", endpoint_url=url, config=CLIENT_CONFIG) as ecs:
        arns = (await ecs.list_tasks(cluster=cluster, desiredStatus="RUNNING"))["taskArns"]
        for start in range(0, len(arns), 100):
            described = await ecs.describe_tasks(cluster=cluster, tasks=arns[start : start + 100])
            for task in described["tasks"]:
                counts[task.get("startedBy", "")] = counts.get(task.get("startedBy", ""), 0) + 1
    return counts


def diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """AWS calls only (not the driver's own GETs and POSTs)."""
    return {
        k: v for k, v in call_deltas(before, after).items() if not k.startswith(("GET ", "POST /_driver"))
    }


async def phase(args: argparse.Namespace, env: Environment, api: Api, namespace: str) -> dict[str, Any]:
    n = args.pods
    os.environ.update(CREDENTIALS)
    moto = Moto(env)
    url = await moto.start()
    try:
        config = await prepare_account(url, "vk-bench")
        vk = FargateVirtualKubelet(env, args, config)
        env.settings["vk_command"] = vk.command()
        env.settings["provider_config"] = vk.config_file.read_text().replace("\n", "")
        print_settings(env.settings)
        with running_vk(vk):
            await wait_node_ready(api, env.node, vk)
            say(f"\nvirtual node {env.node} Ready (fargate provider, pid {vk.pid}); creating {n} pods ...")
            watch = PodWatch(api, namespace, env.node)
            await watch.start()
            names = [f"p-{i:05d}" for i in range(n)]
            manifests = [pod_manifest(name, env.node) for name in names]
            before = await moto.calls()
            first_create, last_create = await create_pods(api, namespace, manifests, watch, args.concurrency)
            say(f"created in {last_create - first_create:.2f}s; waiting for Running ...")
            progress_at = time.monotonic()

            def check() -> None:
                nonlocal progress_at
                vk.check_alive()
                if time.monotonic() - progress_at > 10:
                    progress_at = time.monotonic()
                    say(f"  {watch.running}/{n} Running after {time.time() - first_create:.0f}s")

            all_up = await watch.wait(lambda: watch.running >= n, args.timeout, check)
            all_running = watch.last_running
            at_running = await moto.calls()
            pods, _ = await api.list_all(
                f"/api/v1/namespaces/{namespace}/pods", fieldSelector=f"spec.nodeName={env.node}"
            )
            failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            if not all_up:
                raise RuntimeError(f"only {watch.running}/{n} pods Running after {args.timeout:.0f}s")
            latencies = latency_summary(watch, names)
            say(
                f"all Running {all_running - first_create:.1f}s after the first create; "
                f"settling {args.settle:.0f}s"
            )
            await asyncio.sleep(args.settle)
            vk.check_alive()
            window_start = await moto.calls()
            started = time.monotonic()
            say(f"measuring steady-state AWS calls over {args.window:.0f}s ...")
            await asyncio.sleep(args.window)
            window_end = await moto.calls()
            window = time.monotonic() - started
            vk.check_alive()
            await watch.stop()
            per_pod = await tasks_per_pod(url, config["cluster"])
    finally:
        code = moto.stop()
    burst = diff(before, at_running)
    steady = diff(window_start, window_end)
    return {
        "create_s": last_create - first_create,
        "running_from_first_create_s": all_running - first_create,
        "failed": len(failed),
        "burst_calls": burst,
        "task_definitions_registered": burst.get("ecs.RegisterTaskDefinition", 0),
        "steady_per_min": {k: round(v * 60 / window, 1) for k, v in steady.items()},
        "steady_total_per_min": round(sum(steady.values()) * 60 / window, 1),
        "moto_exit": code,
        "running_tasks": sum(per_pod.values()),
        "pods_with_several_tasks": sum(1 for v in per_pod.values() if v > 1),
        **latencies,
    }


async def run(args: argparse.Namespace, env: Environment) -> dict[str, Any]:
    api = await Api.connect(env.admin_kubeconfig, limit=args.concurrency)
    namespace = None
    try:
        namespace = await make_namespace(api)
        res = await phase(args, env, api, namespace)
    finally:
        await cleanup_external(api, env, namespace)
        await api.close()
    n = args.pods
    figures: dict[str, Any] = {
        "pods": n,
        "create_s": r(res["create_s"]),
        "running_from_first_create_s": r(res["running_from_first_create_s"]),
        "p50_s": res["p50_s"],
        "p99_s": res["p99_s"],
        "failed_pods": res["failed"],
        "task_definitions_registered": res["task_definitions_registered"],
        "burst_aws_calls": res["burst_calls"],
        "steady_aws_calls_per_min": res["steady_total_per_min"],
        "steady_aws_calls_per_min_by_op": res["steady_per_min"],
        "running_tasks": res["running_tasks"],
        "pods_with_several_tasks": res["pods_with_several_tasks"],
        "load_end": loadavg(),
    }
    table(
        [
            ("pods", n),
            ("create (bench client, first->last return)", f"{res['create_s']:.2f} s"),
            ("first create -> all Running", f"{res['running_from_first_create_s']:.1f} s"),
            (
                "bind->Running p50 / p95 / p99 / max",
                f"{res['p50_s']} / {res['p95_s']} / {res['p99_s']} / {res['max_s']} s",
            ),
            ("pods Failed", res["failed"]),
            ("task definitions registered", res["task_definitions_registered"]),
            (
                "RUNNING tasks / pods with more than one",
                f"{res['running_tasks']} / {res['pods_with_several_tasks']}",
            ),
            ("AWS calls during the burst", json.dumps(res["burst_calls"])),
            (f"steady AWS calls/min at {n} pods", res["steady_total_per_min"]),
            ("  by operation", json.dumps(res["steady_per_min"])),
            ("load average (start -> end)", f"{env.settings['load_at_start']} -> {figures['load_end']}"),
        ],
        "fargate burst",
    )
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds after all Running before the window"
    )
    parser.add_argument("--window", type=float, default=60.0, help="steady-state measuring window (seconds)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for all Running")
    parser.add_argument(
        "--provider-config-json",
        default="{}",
        help='extra Fargate provider config keys, e.g. \'{"run_task_rate": {"per_second": 20}}\'',
    )
    common_arguments(parser, workers=64)
    args = parser.parse_args()
    return run_benchmark(args, run)


if __name__ == "__main__":
    sys.exit(main())
