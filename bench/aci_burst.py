"""ACI burst: N pods on an `aci` node whose ARM is the local server with ARM-like throttling.

    .venv/bin/python bench/aci_burst.py --pods 1000

One control plane, one run:
1. ``python -m providers.aci.localarm`` as a process with ARM's per-subscription limits (writes
   ``--writes-per-second`` 10 / ``--writes-burst`` 200, reads 25/s / 250; quota raised so it is not
   the limit), and ``virtual-kubelet --provider aci`` pointed at it (``base_url``), under the node's
   kubelet identity;
2. N pods bound to the node (``spec.nodeName``, 64 creates in flight); a watch timestamps each
   pod's first Running. Every create is one ARM write (PUT), so the write bucket sets a floor: the
   first ``burst`` PUTs pass at once, the rest at ``rate``/s: (N - burst) / rate seconds
   (1,000 pods: 80 s) from the first PUT. Reported: first create -> all Running against that
   floor, the pods that ended Failed (throttling must fail none), and the 429s the server answered;
3. steady state with every pod Running: after ``--settle`` seconds (transitions polled out), the
   server's call counters (``/_localarm/stats``, which are not ARM calls themselves) are read at
   the start and end of a ``--window`` (60 s) and their difference is the ARM calls/min at N pods,
   per operation. Nothing but the virtual kubelet talks to the server meanwhile. The provider keeps
   every status read (its lists and GETs, and the core's resync ``list_pods``, which answers from
   a fresh list) within ``status_poll.calls_per_minute`` (60): half for lists, half for GETs;
4. ``--jobs`` run-to-completion pods (``sleep --job-seconds``) among the N steady ones: the seconds
   from each container's end (its ``finishedAt``, 1 s resolution) to the pod seen Succeeded. The
   core polls a steady node every ``--status-poll-slow`` (30 s): pass
   ``--vk-arg=--status-poll-slow=5`` to see what a faster core poll gives (the provider's budget
   does not change with it).

The last line is a JSON object of the figures (as every bench script). ``--keep`` keeps the work
directory: the control plane's, the VK's and the server's logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import sys
import time
from typing import Any

import aiohttp
from common import (
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

SUBSCRIPTION = "00000000-0000-0000-0000-00000000b0b0"
RESOURCE_GROUP = "vk-bench"
REGION = "westeurope"


class LocalArm(ListeningServer):
    """The local ARM server as a process (its log in the work directory)."""

    def __init__(self, env: Environment, args: argparse.Namespace) -> None:
        argv = [
            sys.executable,
            "-m",
            "providers.aci.localarm",
            "--port",
            "0",
            "--writes-per-second",
            str(args.writes_per_second),
            "--writes-burst",
            str(args.writes_burst),
            "--reads-per-second",
            str(args.reads_per_second),
            "--reads-burst",
            str(args.reads_burst),
            "--quota-cores",
            str(max(1000, args.pods * 8)),
            "--quota-container-groups",
            str(max(5000, args.pods * 2)),
            "--pull-seconds",
            str(args.pull_seconds),
        ]
        super().__init__("localarm", argv, env.workdir / "localarm.log")
        self.session: aiohttp.ClientSession | None = None

    async def start(self, timeout: float = 30) -> str:
        url = await super().start(timeout)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return url

    async def admin(self, path: str) -> Any:
        assert self.session is not None
        async with self.session.get(f"{self.url}/_localarm/{path}") as resp:
            resp.raise_for_status()
            return await resp.json()

    async def stats(self) -> dict[str, Any]:
        return await self.admin("stats")  # type: ignore[no-any-return]

    async def validation_failures(self) -> list[str]:
        return (await self.admin("validation-failures"))["failures"]  # type: ignore[no-any-return]

    async def stop(self) -> int | None:
        if self.session is not None:
            await self.session.close()
        return self.stop_process()


class AciVirtualKubelet(VirtualKubelet):
    """common.VirtualKubelet with ``--provider aci`` and an ACI config pointing at the local server."""

    def __init__(self, env: Environment, args: argparse.Namespace, base_url: str) -> None:
        super().__init__(env, args, tag="vk-aci")
        self.config_file = env.workdir / "vk-aci.json"
        config = {
            "subscription_id": SUBSCRIPTION,
            "resource_group": RESOURCE_GROUP,
            "region": REGION,
            "base_url": base_url,
            "pods": str(max(5000, args.pods * 2)),
            **json.loads(args.provider_config_json),
        }
        self.config_file.write_text(json.dumps(config, indent=1))
        self.argv[self.argv.index("--provider") + 1] = "aci"
        self.argv[self.argv.index("--provider-config") + 1] = str(self.config_file)


async def sample_calls(arm: LocalArm, watch: PodWatch, since: float, every: float) -> None:
    """``--timeline``: every ``every`` s, the ARM calls of the interval by kind and pods Running."""
    if every <= 0:
        return
    previous = (await arm.stats())["calls"]
    while True:
        await asyncio.sleep(every)
        stats = await arm.stats()
        delta = call_deltas(previous, stats["calls"])
        previous = stats["calls"]
        short = {
            "put": sum(v for k, v in delta.items() if k.startswith("ContainerGroups_CreateOrUpdate")),
            "get": sum(v for k, v in delta.items() if k.startswith("ContainerGroups_Get ")),
            "list": sum(v for k, v in delta.items() if k.startswith("ContainerGroups_ListByResourceGroup")),
            "other": sum(v for k, v in delta.items() if not k.startswith("ContainerGroups_")),
        }
        say(
            f"  t={time.time() - since:6.1f}s running={watch.running:5d} "
            f"calls {short} 429s {stats['throttled']}"
        )


async def phase(args: argparse.Namespace, env: Environment, api: Api, namespace: str) -> dict[str, Any]:
    n = args.pods
    arm = LocalArm(env, args)
    base_url = await arm.start()
    vk = AciVirtualKubelet(env, args, base_url)
    env.settings["localarm_command"] = " ".join(arm.argv[1:])
    env.settings["vk_command"] = vk.command()
    env.settings["provider_config"] = vk.config_file.read_text().replace("\n", "")
    env.settings["write_floor"] = f"({n} - {args.writes_burst}) / {args.writes_per_second}/s"
    print_settings(env.settings)
    try:
        with running_vk(vk):
            await wait_node_ready(api, env.node, vk)
            say(f"\nvirtual node {env.node} Ready on the aci provider (pid {vk.pid}); creating {n} pods ...")
            watch = PodWatch(api, namespace, env.node)
            await watch.start()
            names = [f"p-{i:05d}" for i in range(n)]
            manifests = [pod_manifest(name, env.node) for name in names]
            stats_before = await arm.stats()
            timeout = args.timeout or max(300.0, 3 * n / args.writes_per_second)
            first_create, last_create = await create_pods(api, namespace, manifests, watch, args.concurrency)
            say(f"created in {last_create - first_create:.2f}s; waiting for Running ...")
            progress_at = time.monotonic()

            def check() -> None:
                nonlocal progress_at
                vk.check_alive()
                if time.monotonic() - progress_at > 10:
                    progress_at = time.monotonic()
                    say(f"  {watch.running}/{n} Running after {time.time() - first_create:.0f}s")

            sampler = asyncio.create_task(sample_calls(arm, watch, first_create, args.timeline))
            try:
                all_up = await watch.wait(lambda: watch.running >= n, timeout, check)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            all_running = watch.last_running
            stats_running = await arm.stats()
            pods, _ = await api.list_all(
                f"/api/v1/namespaces/{namespace}/pods", fieldSelector=f"spec.nodeName={env.node}"
            )
            failed = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            if not all_up:
                phases: dict[str, int] = {}
                for p in pods:
                    phase_name = (p.get("status") or {}).get("phase", "?")
                    phases[phase_name] = phases.get(phase_name, 0) + 1
                raise RuntimeError(
                    f"only {watch.running}/{n} pods Running after {timeout:.0f}s; phases {phases}; "
                    f"failed e.g. {[(p['metadata']['name'], p['status'].get('message')) for p in failed[:3]]}"
                )
            latencies = latency_summary(watch, names)
            say(
                f"all Running {all_running - first_create:.1f}s after the first create; "
                f"settling {args.settle:.0f}s"
            )
            await asyncio.sleep(args.settle)
            vk.check_alive()
            window_start = await arm.stats()
            started = time.monotonic()
            say(f"measuring steady-state ARM calls over {args.window:.0f}s ...")
            await asyncio.sleep(args.window)
            window_end = await arm.stats()
            window = time.monotonic() - started
            vk.check_alive()
            pods, _ = await api.list_all(
                f"/api/v1/namespaces/{namespace}/pods", fieldSelector=f"spec.nodeName={env.node}"
            )
            failed_end = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
            not_running_end = [p for p in pods if (p.get("status") or {}).get("phase") != "Running"]
            jobs: list[float | None] = await job_latencies(args, env, api, namespace) if args.jobs else []
            await watch.stop()
            failures = await arm.validation_failures()
    finally:
        code = await arm.stop()
    burst_calls = call_deltas(stats_before["calls"], stats_running["calls"])
    steady_calls = call_deltas(window_start["calls"], window_end["calls"])
    per_minute = {k: round(v * 60 / window, 1) for k, v in steady_calls.items()}
    throttled_burst = {
        k: stats_running["throttled"].get(k, 0) - stats_before["throttled"].get(k, 0)
        for k in ("read", "write")
    }
    throttled_steady = {
        k: window_end["throttled"].get(k, 0) - window_start["throttled"].get(k, 0) for k in ("read", "write")
    }
    puts = sum(v for k, v in burst_calls.items() if k.startswith("ContainerGroups_CreateOrUpdate 20"))
    return {
        "first_create": first_create,
        "create_s": last_create - first_create,
        "running_from_first_create_s": all_running - first_create,
        "running_s": all_running - last_create,
        "floor_s": max(0.0, (n - args.writes_burst) / args.writes_per_second),
        "failed": len(failed),
        "failed_after_window": len(failed_end),
        "not_running_after_window": len(not_running_end),
        "throttled_during_burst": throttled_burst,
        "throttled_in_window": throttled_steady,
        "burst_calls": burst_calls,
        "group_puts_accepted": puts,
        "steady_calls_per_min": per_minute,
        "steady_total_per_min": round(sum(steady_calls.values()) * 60 / window, 1),
        "window_s": window,
        "validation_failures": len(failures),
        "localarm_exit": code,
        "job_latencies_s": jobs,
        **latencies,
    }


async def job_latencies(
    args: argparse.Namespace, env: Environment, api: Api, namespace: str
) -> list[float | None]:
    """With the N pods steady: ``--jobs`` run-to-completion pods (``sleep --job-seconds``), and for
    each the seconds from its container's end (ACI's finishTime, as the pod's finishedAt: 1 s
    resolution) to the pod seen Succeeded in the API (polled every 0.25 s); None: not seen."""
    names = [f"job-{i}" for i in range(args.jobs)]
    for name in names:
        manifest = pod_manifest(name, env.node)
        manifest["spec"]["restartPolicy"] = "Never"
        manifest["spec"]["containers"] = [
            {"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", f"sleep {args.job_seconds}"]}
        ]
        await api.request("POST", f"/api/v1/namespaces/{namespace}/pods", manifest)
    say(f"{args.jobs} job pods ({args.job_seconds:.0f} s each) created; timing their completion ...")
    seen: dict[str, float] = {}
    deadline = time.monotonic() + args.job_seconds + 180
    while len(seen) < len(names) and time.monotonic() < deadline:
        for name in names:
            if name in seen:
                continue
            pod = await api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            status = pod.get("status") or {}
            if status.get("phase") in ("Succeeded", "Failed"):
                state = (status.get("containerStatuses") or [{}])[0].get("state", {}).get("terminated") or {}
                finished = state.get("finishedAt")
                if finished:
                    end = datetime.datetime.fromisoformat(finished.replace("Z", "+00:00")).timestamp()
                    seen[name] = round(time.time() - end, 1)
        await asyncio.sleep(0.25)
    unfinished = sorted(set(names) - set(seen))
    if unfinished:
        say(f"job pods not seen finished within {args.job_seconds + 180:.0f}s: {unfinished}")
    return [*sorted(seen.values()), *[None] * len(unfinished)]


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
        "writes_per_s": args.writes_per_second,
        "writes_burst": args.writes_burst,
        "reads_per_s": args.reads_per_second,
        "reads_burst": args.reads_burst,
        "create_s": r(res["create_s"]),
        "running_from_first_create_s": r(res["running_from_first_create_s"]),
        "write_floor_s": r(res["floor_s"]),
        "over_floor": r(res["running_from_first_create_s"] / res["floor_s"]) if res["floor_s"] else None,
        "p50_s": res["p50_s"],
        "p99_s": res["p99_s"],
        "failed_pods": res["failed"],
        "failed_pods_after_window": res["failed_after_window"],
        "throttled_429_burst": res["throttled_during_burst"],
        "throttled_429_steady": res["throttled_in_window"],
        "group_puts_accepted": res["group_puts_accepted"],
        "steady_arm_calls_per_min": res["steady_total_per_min"],
        "steady_arm_calls_per_min_by_op": res["steady_calls_per_min"],
        "validation_failures": res["validation_failures"],
        "job_end_to_succeeded_s": res["job_latencies_s"],
    }
    rows = [
        ("pods", n),
        (
            "ARM limits (writes, reads)",
            f"{args.writes_per_second}/s burst {args.writes_burst}, "
            f"{args.reads_per_second}/s burst {args.reads_burst}",
        ),
        ("create (bench client, first->last return)", f"{res['create_s']:.2f} s"),
        ("first create -> all Running", f"{res['running_from_first_create_s']:.1f} s"),
        ("floor set by the write limit", f"{res['floor_s']:.1f} s"),
        ("last create -> all Running", f"{res['running_s']:.1f} s"),
        (
            "bind->Running p50 / p95 / p99 / max",
            f"{res['p50_s']} / {res['p95_s']} / {res['p99_s']} / {res['max_s']} s",
        ),
        (
            "pods Failed (at all Running / after the window)",
            f"{res['failed']} / {res['failed_after_window']}",
        ),
        (
            "429s during the burst (read / write)",
            f"{res['throttled_during_burst']['read']} / {res['throttled_during_burst']['write']}",
        ),
        ("group PUTs accepted (201/200) during the burst", res["group_puts_accepted"]),
        ("ARM calls during the burst", json.dumps(res["burst_calls"])),
        (f"steady ARM calls/min at {n} pods", f"{res['steady_total_per_min']}"),
        ("  by operation", json.dumps(res["steady_calls_per_min"])),
        (
            "429s in the window (read / write)",
            f"{res['throttled_in_window']['read']} / {res['throttled_in_window']['write']}",
        ),
        ("pods not Running after the window", res["not_running_after_window"]),
        ("spec validation failures", res["validation_failures"]),
        ("job container end -> pod Succeeded (each)", f"{res['job_latencies_s']} s"),
    ]
    figures["load_end"] = loadavg()
    rows.append(("load average (start -> end)", f"{env.settings['load_at_start']} -> {figures['load_end']}"))
    table(rows, "aci burst")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument("--writes-per-second", type=float, default=10.0)
    parser.add_argument("--writes-burst", type=int, default=200)
    parser.add_argument("--reads-per-second", type=float, default=25.0)
    parser.add_argument("--reads-burst", type=int, default=250)
    parser.add_argument("--pull-seconds", type=float, default=0.5, help="the server's simulated image pull")
    parser.add_argument(
        "--settle", type=float, default=30.0, help="seconds after all Running before the window"
    )
    parser.add_argument("--window", type=float, default=60.0, help="steady-state measuring window (seconds)")
    parser.add_argument(
        "--timeline", type=float, default=0, help="print the ARM calls every so many seconds of the burst"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=0,
        help="seconds to wait for all Running (default: 3x the floor, >= 300)",
    )
    parser.add_argument("--jobs", type=int, default=5, help="job pods timed after the window (0: none)")
    parser.add_argument("--job-seconds", type=float, default=5.0, help="how long each job pod runs")
    parser.add_argument(
        "--provider-config-json",
        default="{}",
        help='extra ACI provider config keys, e.g. \'{"status_poll": {"calls_per_minute": 120}}\'',
    )
    common_arguments(parser, workers=64)
    args = parser.parse_args()
    return run_benchmark(args, run)


if __name__ == "__main__":
    sys.exit(main())
