"""Azure Batch provider: N pods as tasks on the local Batch service, and what status costs at N.

    .venv/bin/python bench/azurebatch_status.py --pods 1000

No control plane: the provider itself against ``python -m providers.azurebatch.localbatch`` (a
separate process, spec validation and shared-key verification on, throttling off unless
``--requests-per-second``), as the core would call it:

1. N ``create_pod`` calls, ``--concurrency`` in flight: creates per second;
2. ``get_pod_statuses`` polled until every pod is Running: seconds from the first create;
3. at N steady pods: ``get_pod_statuses`` and ``list_pods`` latency (median of ``--repeat``), and the
   ``list_tasks`` pages (calls) one bulk poll takes (the service answers 1,000 tasks a page);
4. N ``delete_pod`` calls: deletes per second (each is a GET, a terminate and a delete).

The service must report no validation failure (exit code 0). The last line is a JSON object of the
figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

REPO = pathlib.Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from providers.azurebatch import AzureBatchConfig, AzureBatchProvider  # noqa: E402
from providers.azurebatch.localbatch import DEFAULT_ACCOUNT, DEFAULT_KEY  # noqa: E402
from vk_operator.provider import PodPhase  # noqa: E402
from vk_operator.provider.testing import minimal_pod  # noqa: E402

POOL = "bench-pool"


async def bounded(concurrency: int, calls: list[Any]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Any) -> None:
        async with gate:
            await call

    await asyncio.gather(*(one(c) for c in calls))


def start_service(server_args: list[str], log: pathlib.Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "providers.azurebatch.localbatch", "--port", "0", *server_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    log = pathlib.Path(tempfile.mkstemp(prefix="localbatch-", suffix=".log")[1])
    nodes = args.pods  # one task slot per node, and pods that run until deleted: a node for each
    server_args = [
        "--pool",
        f"{POOL}:standard_d4s_v3:{nodes}:0",
        "--schedule-seconds",
        "0",
        "--prepare-seconds",
        "0",
    ]
    if args.requests_per_second:
        server_args += ["--requests-per-second", str(args.requests_per_second), "--burst", str(args.burst)]
    else:
        server_args.append("--no-throttling")
    proc = start_service(server_args, log)
    try:
        base_url = ""
        deadline = time.monotonic() + 30
        while not base_url:
            found = re.search(r"listening on (http://\S+)", log.read_text())
            base_url = found.group(1) if found else ""
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"localbatch did not start:\n{log.read_text()}")
            await asyncio.sleep(0.05)
        os.environ["BENCH_BATCH_KEY"] = DEFAULT_KEY
        config = AzureBatchConfig.model_validate(
            {
                "account_endpoint": base_url,
                "pool_id": POOL,
                "credential": "shared_key",
                "account_name": DEFAULT_ACCOUNT,
                "shared_key_env": "BENCH_BATCH_KEY",
                "status_poll": {"calls_per_minute": 6000},
            }
        )
        provider = AzureBatchProvider(config, "vk-bench")
        await provider.start()
        pods = [minimal_pod("vk-bench") for _ in range(args.pods)]
        first = time.monotonic()
        await bounded(args.concurrency, [provider.create_pod(p) for p in pods])
        created = time.monotonic() - first
        polls = 0
        give_up = time.monotonic() + 600
        while time.monotonic() < give_up:
            statuses = await provider.get_pod_statuses()
            polls += 1
            if len(statuses) == args.pods and all(s.phase == PodPhase.RUNNING for s in statuses.values()):
                break
            await asyncio.sleep(0.2)
        else:
            raise SystemExit("not every pod Running within 600 s")
        all_running = time.monotonic() - first
        bulk, listing = [], []
        for _ in range(args.repeat):
            t0 = time.monotonic()
            await provider.get_pod_statuses()
            bulk.append(time.monotonic() - t0)
            t0 = time.monotonic()
            await provider.list_pods()
            listing.append(time.monotonic() - t0)
        first_delete = time.monotonic()
        await bounded(args.concurrency, [provider.delete_pod(p.ref) for p in pods])
        deleted = time.monotonic() - first_delete
        await provider.close()
        return {
            "pods": args.pods,
            "creates_per_second": round(args.pods / created, 1),
            "all_running_seconds": round(all_running, 2),
            "bulk_status_seconds_median": round(statistics.median(bulk), 3),
            "list_pods_seconds_median": round(statistics.median(listing), 3),
            "list_pages_per_poll": -(-args.pods // 1000),
            "deletes_per_second": round(args.pods / deleted, 1),
        }
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
        if code != 0:
            print(log.read_text()[-5000:], file=sys.stderr)
            raise SystemExit(f"localbatch exited {code}: validation failures")
        log.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--requests-per-second", type=float, default=0.0)
    parser.add_argument("--burst", type=int, default=500)
    figures = asyncio.run(run(parser.parse_args()))
    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
